package integration_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jlaffaye/ftp"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/openhaul/haul/integration/testbed"
)

// tbSmokeSize is the size of the file every smoke test moves both ways.
const tbSmokeSize = 64 << 20

// tbConns dials and remembers every TCP connection of one FTP session
// (control and data), so a test can bound the session with a context (all
// connections are closed when it ends) and find the data connection's ports.
type tbConns struct {
	ctx    context.Context
	tls    *tls.Config // non-nil: explicit FTPS, data connections get TLS
	rcvbuf int         // >0: SO_RCVBUF for data connections (set before connect)

	mu    sync.Mutex
	conns []net.Conn  // raw TCP connections, control first
	tlsd  []*tls.Conn // TLS data connections
}

func (c *tbConns) dial(network, addr string) (net.Conn, error) {
	c.mu.Lock()
	first := len(c.conns) == 0
	c.mu.Unlock()
	d := net.Dialer{Timeout: 5 * time.Second}
	if !first && c.rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, c.rcvbuf)
			})
			return errors.Join(err, serr)
		}
	}
	conn, err := d.DialContext(c.ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.conns = append(c.conns, conn)
	c.mu.Unlock()
	if !first && c.tls != nil {
		// jlaffaye/ftp does not wrap DialFunc connections in TLS: the data
		// connections must be TLS clients sharing the control's config (and
		// session cache, for vsftpd's require_ssl_reuse).
		tc := tls.Client(conn, c.tls)
		c.mu.Lock()
		c.tlsd = append(c.tlsd, tc)
		c.mu.Unlock()
		return tbTLSData{tc}, nil
	}
	return conn, nil
}

// tbTLSData is a TLS data connection that ends cleanly. With TLS 1.3 the
// server sends session tickets after the handshake; an upload never reads
// them, and closing a socket with unread data makes the kernel send RST, so
// vsftpd answers "426 Failure reading network stream". Close therefore sends
// close_notify, then drains (bounded) until the server closes its side.
type tbTLSData struct{ *tls.Conn }

func (c tbTLSData) Close() error {
	if c.ConnectionState().HandshakeComplete {
		_ = c.CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.Copy(io.Discard, io.LimitReader(c.Conn, 1<<20))
	}
	return c.Conn.Close()
}

// last returns the most recent raw TCP connection (the current data
// connection once a transfer started).
func (c *tbConns) last() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conns[len(c.conns)-1]
}

func (c *tbConns) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		_ = conn.Close()
	}
}

// tbDialFTP logs in to an FTP server with jlaffaye/ftp. Every connection of
// the session is closed when ctx ends or the test finishes.
func tbDialFTP(ctx context.Context, t *testing.T, env *testbed.Env, srv testbed.Server, tlsCfg *tls.Config, rcvbuf int) (*ftp.ServerConn, *tbConns) {
	t.Helper()
	conns := &tbConns{ctx: ctx, tls: tlsCfg, rcvbuf: rcvbuf}
	stop := context.AfterFunc(ctx, conns.closeAll)
	t.Cleanup(func() { stop(); conns.closeAll() })
	opts := []ftp.DialOption{ftp.DialWithDialFunc(conns.dial), ftp.DialWithShutTimeout(30 * time.Second)}
	if tlsCfg != nil {
		opts = append(opts, ftp.DialWithExplicitTLS(tlsCfg))
	}
	c, err := ftp.Dial(srv.Addr(), opts...)
	if err != nil {
		t.Fatalf("%s: dial: %v", srv.Name, err)
	}
	t.Cleanup(func() { _ = c.Quit() })
	if err := c.Login(env.User, env.Password); err != nil {
		t.Fatalf("%s: login: %v", srv.Name, err)
	}
	return c, conns
}

// tbDialSFTP opens an SFTP client over x/crypto/ssh, verifying the host key
// against the test bed's known_hosts. The connection is closed when ctx ends
// or the test finishes.
func tbDialSFTP(ctx context.Context, t *testing.T, env *testbed.Env, srv testbed.Server, useKey bool) (*sftp.Client, net.Conn) {
	t.Helper()
	cfg, err := env.SSHConfig(useKey)
	if err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", srv.Addr())
	if err != nil {
		t.Fatalf("%s: dial: %v", srv.Name, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	t.Cleanup(func() { stop(); _ = conn.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(conn, srv.Addr(), cfg)
	if err != nil {
		t.Fatalf("%s: ssh handshake: %v", srv.Name, err)
	}
	client, err := sftp.NewClient(ssh.NewClient(sc, chans, reqs))
	if err != nil {
		t.Fatalf("%s: sftp: %v", srv.Name, err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client, conn
}

func tbName(t *testing.T, prefix string) string {
	return fmt.Sprintf("%s-%d-%d.bin", prefix, os.Getpid(), time.Now().UnixNano())
}

func tbFTPRoundTrip(t *testing.T, env *testbed.Env, srv testbed.Server, tlsCfg *tls.Config) *tbConns {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src, sum := testbed.RandomFile(t, t.TempDir(), tbSmokeSize)
	c, conns := tbDialFTP(ctx, t, env, srv, tlsCfg, 0)
	name := tbName(t, "smoke-"+strings.ToLower(srv.Name))
	t.Cleanup(func() { _ = os.Remove(srv.LocalPath(name)) })

	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := c.Stor(name, f); err != nil {
		t.Fatalf("STOR: %v", err)
	}
	if got := testbed.SHA256File(t, srv.LocalPath(name)); got != sum {
		t.Fatalf("server-side file differs after STOR")
	}
	size, err := c.FileSize(name)
	if err != nil || size != tbSmokeSize {
		t.Fatalf("SIZE = %d, %v; want %d", size, err, tbSmokeSize)
	}
	r, err := c.Retr(name)
	if err != nil {
		t.Fatalf("RETR: %v", err)
	}
	h := sha256.New()
	n, err := io.Copy(h, r)
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	if err != nil || n != tbSmokeSize {
		t.Fatalf("RETR read %d bytes, %v", n, err)
	}
	if [32]byte(h.Sum(nil)) != sum {
		t.Fatal("downloaded SHA-256 differs")
	}
	return conns
}

func tbSFTPRoundTrip(t *testing.T, env *testbed.Env, srv testbed.Server, useKey bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src, sum := testbed.RandomFile(t, t.TempDir(), tbSmokeSize)
	c, _ := tbDialSFTP(ctx, t, env, srv, useKey)
	name := tbName(t, "smoke-"+strings.ToLower(srv.Name))
	t.Cleanup(func() { _ = os.Remove(srv.LocalPath(name)) })

	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	w, err := c.Create(name)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := w.ReadFrom(in); err != nil {
		t.Fatalf("upload: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got := testbed.SHA256File(t, srv.LocalPath(name)); got != sum {
		t.Fatal("server-side file differs after upload")
	}
	r, err := c.Open(name)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer r.Close()
	h := sha256.New()
	n, err := r.WriteTo(h)
	if err != nil || n != tbSmokeSize {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	if [32]byte(h.Sum(nil)) != sum {
		t.Fatal("downloaded SHA-256 differs")
	}
}

func TestSmokeVsftpdPlain(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	tbFTPRoundTrip(t, env, env.VsftpdPlain, nil)
}

func TestSmokeVsftpdFTPS(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	cfg, err := env.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	conns := tbFTPRoundTrip(t, env, env.VsftpdFTPS, cfg)
	conns.mu.Lock()
	defer conns.mu.Unlock()
	if len(conns.tlsd) == 0 {
		t.Fatal("no TLS data connection was made")
	}
	for i, tc := range conns.tlsd {
		st := tc.ConnectionState()
		t.Logf("data connection %d: TLS %s, resumed=%v", i, tls.VersionName(st.Version), st.DidResume)
		if !st.DidResume {
			t.Errorf("data connection %d did not resume the TLS session (require_ssl_reuse)", i)
		}
	}
}

func TestSmokeProftpd(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	tbFTPRoundTrip(t, env, env.Proftpd, nil)
}

func TestSmokePureftpd(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	tbFTPRoundTrip(t, env, env.Pureftpd, nil)
}

func TestSmokeSSHD(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	tbSFTPRoundTrip(t, env, env.SSHD, true)
}

func TestSmokeProftpdSFTP(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	tbSFTPRoundTrip(t, env, env.ProftpdSFTP, true)
}

// TestBedSFTPPasswordLogin checks password login on both SFTP servers (the
// smoke tests use the key).
func TestBedSFTPPasswordLogin(t *testing.T) {
	env := testbed.Require(t)
	for _, srv := range env.SFTPServers() {
		t.Run(srv.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, _ := tbDialSFTP(ctx, t, env, srv, false)
			wd, err := c.Getwd()
			if err != nil {
				t.Fatal(err)
			}
			if wd != srv.Home {
				t.Errorf("working directory %q, env says %q", wd, srv.Home)
			}
		})
	}
}

// tbRaw is a bare FTP control connection, for tests that must see replies
// jlaffaye/ftp hides (FEAT lines, an unsolicited 421 during a transfer).
type tbRaw struct {
	conn net.Conn
	tp   *textproto.Conn
}

func tbDialRaw(ctx context.Context, t *testing.T, srv testbed.Server) (*tbRaw, int, string, error) {
	t.Helper()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", srv.Addr())
	if err != nil {
		t.Fatalf("%s: dial: %v", srv.Name, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	t.Cleanup(func() { stop(); _ = conn.Close() })
	r := &tbRaw{conn: conn, tp: textproto.NewConn(conn)}
	code, msg, err := r.tp.ReadResponse(0)
	return r, code, msg, err
}

func (r *tbRaw) cmd(t *testing.T, expect int, format string, args ...any) (int, string) {
	t.Helper()
	if _, err := r.tp.Cmd(format, args...); err != nil {
		t.Fatalf("send %q: %v", format, err)
	}
	code, msg, err := r.tp.ReadResponse(expect)
	if err != nil {
		t.Fatalf("%s: %v", strings.Fields(format)[0], err)
	}
	return code, msg
}

func (r *tbRaw) login(t *testing.T, env *testbed.Env) {
	t.Helper()
	r.cmd(t, 331, "USER %s", env.User)
	r.cmd(t, 230, "PASS %s", env.Password)
	r.cmd(t, 200, "TYPE I")
}

var tbEPSV = regexp.MustCompile(`\(\|\|\|(\d+)\|\)`)

// epsv asks for a passive port and returns the data address.
func (r *tbRaw) epsv(t *testing.T, host string) string {
	t.Helper()
	_, msg := r.cmd(t, 229, "EPSV")
	m := tbEPSV.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("cannot parse EPSV reply %q", msg)
	}
	return net.JoinHostPort(host, m[1])
}

// TestBedProftpdDigest checks that proftpd runs with mod_digest: FEAT lists
// HASH and XSHA256, and XSHA256 over a byte range hashes exactly that range.
func TestBedProftpdDigest(t *testing.T) {
	env := testbed.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := env.Proftpd
	name := tbName(t, "digest")
	data := make([]byte, 1<<20)
	if _, err := io.ReadFull(testbed.NewRandReader(7), data); err != nil {
		t.Fatal(err)
	}
	local := srv.LocalPath(name)
	if err := os.WriteFile(local, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(local) })

	r, code, _, err := tbDialRaw(ctx, t, srv)
	if err != nil || code != 220 {
		t.Fatalf("greeting %d: %v", code, err)
	}
	r.login(t, env)
	_, feat := r.cmd(t, 211, "FEAT")
	for _, f := range []string{"HASH", "XSHA256", "RANG STREAM"} {
		if !strings.Contains(feat, f) {
			t.Errorf("FEAT lacks %s:\n%s", f, feat)
		}
	}
	_, msg := r.cmd(t, 250, "XSHA256 %s 0 4096", name)
	want := sha256.Sum256(data[:4096])
	if !strings.Contains(strings.ToLower(msg), fmt.Sprintf("%x", want)) {
		t.Errorf("XSHA256 of the first 4096 bytes: %q, want %x", msg, want)
	}
}

// tbFTPUpload uploads size deterministic bytes to name and returns STOR's
// error.
func tbFTPUpload(c *ftp.ServerConn, name string, size int64) error {
	return c.Stor(name, io.LimitReader(testbed.NewRandReader(uint64(size)), size))
}

// tbFillLocal fills the tmpfs mounted at dir (a server's FullLocal) to the
// last byte, directly on the server side, and removes the filler at cleanup.
func tbFillLocal(t *testing.T, dir string) {
	t.Helper()
	f, err := os.CreateTemp(dir, "filler-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(f.Name()) })
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := 0; i < 1<<16; i++ { // bounded: 64 GiB of 1 MiB writes
		if _, err = f.Write(buf); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling %s: %v, want ENOSPC", dir, err)
	}
}

// TestBedDiskFull shows what each server answers when its upload directory
// (a small tmpfs) fills up: a real ENOSPC on the server. "during" fills the
// tmpfs with the upload itself; "before" uploads into an already full tmpfs.
func TestBedDiskFull(t *testing.T) {
	env := testbed.Require(t)
	size := 2*env.FullSize + 1<<20
	if env.FullSize == 0 {
		size = 96 << 20
	}
	ftpCases := []struct {
		srv          testbed.Server
		during, full int // reply codes observed for each case
	}{
		// vsftpd: "451 Failure writing to local file." either way.
		{env.VsftpdPlain, 451, 451},
		// pure-ftpd: 451 "Error during write to file" when ENOSPC hits
		// mid-transfer; 552 "Disk full" when STOR finds no free space.
		{env.Pureftpd, 451, 552},
	}
	for _, tc := range ftpCases {
		for _, when := range []string{"during", "before"} {
			t.Run(tc.srv.Name+"/"+when, func(t *testing.T) {
				if tc.srv.FullDir == "" {
					t.Skipf("%s has no full directory", tc.srv.Name)
				}
				want, n := tc.during, size
				if when == "before" {
					want, n = tc.full, 1<<20
					tbFillLocal(t, tc.srv.FullLocal)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				c, _ := tbDialFTP(ctx, t, env, tc.srv, nil, 0)
				name := tc.srv.FullDir + "/" + tbName(t, "fill")
				t.Cleanup(func() { _ = os.Remove(tc.srv.LocalPath(name)) })
				err := tbFTPUpload(c, name, n)
				for i := 0; err == nil && when == "before" && i < 3; i++ {
					// A session of an earlier test may still have held a
					// deleted file's blocks while we filled the disk, and
					// freed them since: fill again.
					_ = os.Remove(tc.srv.LocalPath(name))
					tbFillLocal(t, tc.srv.FullLocal)
					err = tbFTPUpload(c, name, n)
				}
				var te *textproto.Error
				if !errors.As(err, &te) {
					t.Fatalf("upload of %d bytes into the full tmpfs: %v, want an FTP reply %d", n, err, want)
				}
				t.Logf("%s disk full (%s): %d %s", tc.srv.Name, when, te.Code, te.Msg)
				// pure-ftpd (-k 99) may already refuse with 552 once a
				// concurrent writer pushed the disk past 99%.
				if te.Code != want && !(tc.srv.Name == "PUREFTPD" && te.Code == 552) {
					t.Errorf("reply code %d, want %d", te.Code, want)
				}
			})
		}
	}
	for _, when := range []string{"during", "before"} {
		t.Run(env.SSHD.Name+"/"+when, func(t *testing.T) {
			srv := env.SSHD
			n := size
			if when == "before" {
				n = 1 << 20
				tbFillLocal(t, srv.FullLocal)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, _ := tbDialSFTP(ctx, t, env, srv, true)
			name := srv.FullDir + "/" + tbName(t, "fill")
			t.Cleanup(func() { _ = os.Remove(srv.LocalPath(name)) })
			f, err := c.Create(name)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.ReadFrom(io.LimitReader(testbed.NewRandReader(uint64(n)), n))
			err = errors.Join(err, f.Close())
			var se *sftp.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("upload into full tmpfs: %v, want an SFTP status", err)
			}
			t.Logf("sshd disk full (%s): status %d (%v)", when, se.FxCode(), se)
			if se.FxCode() != sftp.ErrSSHFxFailure {
				t.Errorf("status %v, want SSH_FX_FAILURE", se.FxCode())
			}
			// The only way to tell "no space" apart: the server's free space.
			vfs, err := c.StatVFS(srv.FullDir)
			if err != nil {
				t.Fatalf("statvfs@openssh.com: %v", err)
			}
			if free := vfs.FreeSpace(); free >= 1<<20 {
				t.Errorf("statvfs reports %d bytes free on a full tmpfs", free)
			}
		})
	}
}

// TestBedMaxPerIP: the limited vsftpd allows max_per_ip connections from one
// address; the next one is greeted with 421.
func TestBedMaxPerIP(t *testing.T) {
	env := testbed.Require(t)
	srv := env.VsftpdLimited
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	max := env.LimitedMaxPerIP
	if max == 0 {
		max = 3
	}
	for i := 0; i < max; i++ {
		_, code, msg, err := tbDialRaw(ctx, t, srv)
		if err != nil || code != 220 {
			t.Fatalf("connection %d: %d %s %v", i+1, code, msg, err)
		}
	}
	_, code, msg, err := tbDialRaw(ctx, t, srv)
	var te *textproto.Error
	if errors.As(err, &te) {
		code, msg = te.Code, te.Msg
	}
	if code != 421 {
		t.Fatalf("connection %d: got %d %q (%v), want 421", max+1, code, msg, err)
	}
	t.Logf("connection %d: %d %s", max+1, code, msg)
}

// tbServerFile puts size deterministic bytes straight into the server's root
// and returns the remote name and the local path.
func tbServerFile(t *testing.T, srv testbed.Server, size int64) (string, string) {
	t.Helper()
	name := tbName(t, "src")
	local := srv.LocalPath(name)
	f, err := os.OpenFile(local, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(local) })
	_, err = io.Copy(f, io.LimitReader(testbed.NewRandReader(uint64(size)), size))
	if err := errors.Join(err, f.Close()); err != nil {
		t.Fatal(err)
	}
	return name, local
}

var tbSSPid = regexp.MustCompile(`pid=(\d+)`)

// tbServerPids returns the pids of the processes that own the server end of
// the TCP connection whose client end is conn (as `ss -tnp` shows them).
func tbServerPids(t *testing.T, conn net.Conn) []int {
	t.Helper()
	la := conn.LocalAddr().(*net.TCPAddr)
	ra := conn.RemoteAddr().(*net.TCPAddr)
	out, err := exec.Command("ss", "-Htnp", "state", "established",
		"src", ra.String(), "dst", la.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	var pids []int
	for _, m := range tbSSPid.FindAllStringSubmatch(string(out), -1) {
		pid, _ := strconv.Atoi(m[1])
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		t.Fatalf("no process owns %v -> %v: %s", ra, la, out)
	}
	return pids
}

// TestBedKillSessionProcess: SIGKILL of the server's per-session process
// during a download. vsftpd: the RETR stream just ends short (no error on
// the data connection). sshd: the SFTP read fails.
func TestBedKillSessionProcess(t *testing.T) {
	env := testbed.Require(t)
	const size = 64 << 20
	const before = 1 << 20

	t.Run("vsftpd", func(t *testing.T) {
		srv := env.VsftpdPlain
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		name, _ := tbServerFile(t, srv, size)
		// A small receive buffer keeps most of the file on the server side
		// when the session dies.
		c, conns := tbDialFTP(ctx, t, env, srv, nil, 64<<10)
		r, err := c.Retr(name)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.CopyN(io.Discard, r, before)
		if err != nil {
			t.Fatalf("first %d bytes: %v", n, err)
		}
		for _, pid := range tbServerPids(t, conns.last()) {
			if pid == srv.PID {
				t.Fatalf("pid %d is the listener, not a session", pid)
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				t.Fatal(err)
			}
		}
		m, err := io.Copy(io.Discard, r)
		total := n + m
		t.Logf("RETR after SIGKILL of the session: %d of %d bytes, read error %v", total, size, err)
		if total >= size {
			t.Fatalf("the whole file arrived despite the kill")
		}
		if err != nil {
			t.Errorf("vsftpd: expected a short stream without error, got %v", err)
		}
		if err := r.Close(); err == nil {
			t.Errorf("control connection still answered after the session was killed")
		}
	})

	t.Run("sshd", func(t *testing.T) {
		srv := env.SSHD
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		name, _ := tbServerFile(t, srv, size)
		c, conn := tbDialSFTP(ctx, t, env, srv, true)
		f, err := c.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, before)
		if _, err := io.ReadFull(f, buf); err != nil {
			t.Fatal(err)
		}
		for _, pid := range tbServerPids(t, conn) {
			if pid == srv.PID {
				continue // the listener also shows up only if the socket leaked; never kill it
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				t.Fatal(err)
			}
		}
		m, err := io.Copy(io.Discard, f)
		t.Logf("SFTP read after SIGKILL of the session: %d more bytes, error %v", m, err)
		if err == nil {
			t.Fatal("read after the kill succeeded")
		}
		if before+m >= size {
			t.Fatalf("the whole file arrived despite the kill")
		}
	})
}

// TestBedSocketDestroyed: `ss -K` on the server end of a RETR data socket
// gives the client ECONNRESET (or ECONNABORTED).
func TestBedSocketDestroyed(t *testing.T) {
	env := testbed.Require(t)
	srv := env.VsftpdPlain
	const size = 64 << 20
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name, _ := tbServerFile(t, srv, size)
	c, conns := tbDialFTP(ctx, t, env, srv, nil, 64<<10)
	r, err := c.Retr(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, r, 1<<20); err != nil {
		t.Fatal(err)
	}
	data := conns.last()
	la := data.LocalAddr().(*net.TCPAddr)
	ra := data.RemoteAddr().(*net.TCPAddr)
	out, err := exec.Command("ss", "-K", "-tn", "src", ra.String(), "dst", la.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ss -K: %v: %s", err, out)
	}
	if !strings.Contains(string(out), strconv.Itoa(la.Port)) {
		t.Fatalf("ss -K destroyed nothing: %s", out)
	}
	m, err := io.Copy(io.Discard, r)
	t.Logf("RETR after ss -K: %d more bytes, error %v", m, err)
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.ECONNABORTED) {
		t.Fatalf("got %v, want ECONNRESET or ECONNABORTED", err)
	}
	err = r.Close()
	var te *textproto.Error
	if errors.As(err, &te) {
		t.Logf("control reply after the reset: %d %s", te.Code, te.Msg)
	} else {
		t.Logf("control after the reset: %v", err)
	}
}

// TestBedDataConnectionTimeout: a download whose client stops reading stalls;
// after data_connection_timeout the limited vsftpd sends 421 on the CONTROL
// connection (which a client blocked on the data socket never reads).
func TestBedDataConnectionTimeout(t *testing.T) {
	env := testbed.Require(t)
	srv := env.VsftpdLimited
	timeout := env.LimitedDataTimeout
	if timeout == 0 {
		timeout = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout+30*time.Second)
	defer cancel()
	name, _ := tbServerFile(t, srv, 64<<20)

	r, code, msg, err := tbDialRaw(ctx, t, srv)
	if err != nil || code != 220 {
		t.Fatalf("greeting %d %q: %v", code, msg, err)
	}
	r.login(t, env)
	addr := r.epsv(t, env.Host)
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10)
		})
		return errors.Join(err, serr)
	}}
	data, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	stop := context.AfterFunc(ctx, func() { _ = data.Close() })
	defer func() { stop(); _ = data.Close() }()
	r.cmd(t, 150, "RETR %s", name)
	// Read a little, then stop reading: the server's sends stall.
	if _, err := io.CopyN(io.Discard, data, 64<<10); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = r.conn.SetReadDeadline(time.Now().Add(timeout + 20*time.Second))
	code, msg, err = r.tp.ReadResponse(0)
	var te *textproto.Error
	if errors.As(err, &te) {
		code, msg, err = te.Code, te.Msg, nil
	}
	if err != nil {
		t.Fatalf("waiting for the server's reply: %v", err)
	}
	t.Logf("after %v without progress: %d %s", time.Since(start).Round(100*time.Millisecond), code, msg)
	if code != 421 {
		t.Fatalf("got %d %q, want 421", code, msg)
	}
	// The server then closes the control connection.
	if _, err := bufio.NewReader(r.conn).ReadByte(); err == nil {
		t.Errorf("control connection still open after 421")
	}
}

// TestBedIptablesDrop: an iptables DROP of the server-to-client packets of a
// RETR data connection (a NAT that forgot the connection) makes the stream
// go silent: once the bytes already received are read, reads neither return
// data nor fail.
func TestBedIptablesDrop(t *testing.T) {
	env := testbed.Require(t)
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("iptables not installed")
	}
	srv := env.VsftpdPlain
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name, _ := tbServerFile(t, srv, 64<<20)
	c, conns := tbDialFTP(ctx, t, env, srv, nil, 64<<10)
	r, err := c.Retr(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, r, 1<<20); err != nil {
		t.Fatal(err)
	}
	data := conns.last()
	la := data.LocalAddr().(*net.TCPAddr)
	ra := data.RemoteAddr().(*net.TCPAddr)
	rule := []string{"OUTPUT", "-p", "tcp", "-s", ra.IP.String(), "--sport", strconv.Itoa(ra.Port),
		"-d", la.IP.String(), "--dport", strconv.Itoa(la.Port), "-j", "DROP"}
	if out, err := exec.Command("iptables", append([]string{"-w", "5", "-I"}, rule...)...).CombinedOutput(); err != nil {
		t.Fatalf("iptables -I: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("iptables", append([]string{"-w", "5", "-D"}, rule...)...).CombinedOutput(); err != nil {
			t.Errorf("iptables -D: %v: %s", err, out)
		}
	})
	// Drain what was already delivered; then a read must block until its
	// deadline: no byte, no error.
	const quiet = 2 * time.Second
	buf := make([]byte, 64<<10)
	var drained int64
	for i := 0; ; i++ {
		if i > 10000 {
			t.Fatalf("data kept arriving through the DROP rule (%d bytes)", drained)
		}
		_ = data.SetReadDeadline(time.Now().Add(quiet))
		n, err := r.Read(buf)
		drained += int64(n)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("read after DROP failed instead of stalling: %v", err)
		}
	}
	t.Logf("after DROP: %d buffered bytes, then %v with no byte and no error", drained, quiet)
	if drained > 8<<20 {
		t.Errorf("%d bytes arrived after the DROP rule", drained)
	}
}

// TestBedLoginLog: vsftpd's protocol log lets tests count logins.
func TestBedLoginLog(t *testing.T) {
	env := testbed.Require(t)
	srv := env.VsftpdPlain
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before := env.CountInLog(t, srv.Log, "OK LOGIN")
	c, _ := tbDialFTP(ctx, t, env, srv, nil, 0)
	if err := c.NoOp(); err != nil {
		t.Fatal(err)
	}
	// Other packages' tests may log in concurrently: at least one more.
	if after := env.CountInLog(t, srv.Log, "OK LOGIN"); after < before+1 {
		t.Fatalf("OK LOGIN count %d -> %d", before, after)
	}
}
