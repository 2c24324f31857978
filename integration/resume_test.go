package integration_test

// The fault matrix of the resumable core: every fault kind, on every
// protocol, in both directions, against the real servers of the test bed,
// with faults injected between the real client and the real server.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openhaul/haul/integration/faultproxy"
	"github.com/openhaul/haul/integration/testbed"
	"github.com/openhaul/haul/protocol"
	"github.com/openhaul/haul/transfer"
)

const (
	matrixSize = 64 << 20
	// matrixFaultAt is where the first fault fires, in data bytes.
	matrixFaultAt = 16 << 20
	// matrixStall is the stall timeout used with blackholes.
	matrixStall = 3 * time.Second
)

// matrixTarget is one protocol on one server, reached through a fault proxy.
type matrixTarget struct {
	name   string
	scheme string
	srv    testbed.Server
}

func matrixTargets(env *testbed.Env) []matrixTarget {
	return []matrixTarget{
		{"ftp-vsftpd", "ftp", env.VsftpdPlain},
		{"ftps-vsftpd", "ftps", env.VsftpdFTPS},
		{"sftp-openssh", "sftp", env.SSHD},
	}
}

// matrixRig is a proxy in front of one server plus a haul configuration
// that goes through it.
type matrixRig struct {
	t     *testing.T
	env   *testbed.Env
	tg    matrixTarget
	proxy *faultproxy.Proxy
	cfg   transfer.Config
	data  []int  // the ports that carry file data (nil: all)
	local string // where downloads go
	mu    sync.Mutex
	fails []error
}

func newMatrixRig(t *testing.T, env *testbed.Env, tg matrixTarget) *matrixRig {
	t.Helper()
	ports := []int{tg.srv.Port}
	var data []int
	if tg.srv.PasvMin > 0 {
		data = faultproxy.PortRange(tg.srv.PasvMin, tg.srv.PasvMax)
		ports = append(ports, data...)
	}
	p, err := faultproxy.NewLoopback(tg.srv.Host, ports...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	r := &matrixRig{t: t, env: env, tg: tg, proxy: p, data: data, local: filepath.Join(t.TempDir(), "got.bin")}
	r.cfg = transfer.Config{
		Password:       env.Password,
		StallTimeout:   matrixStall,
		InitialBackoff: 50 * time.Millisecond,
		MaxBackoff:     500 * time.Millisecond,
		DialTimeout:    10 * time.Second,
		OnEvent: func(e transfer.Event) {
			if e.Kind != transfer.EventFailed {
				return
			}
			r.mu.Lock()
			r.fails = append(r.fails, e.Err)
			r.mu.Unlock()
			if errors.Is(e.Err, transfer.ErrStalled) {
				// The server's end of a blackholed session lives on until
				// its own timeout, and vsftpd (lock_upload_files) keeps the
				// upload's lock until then. Play that timeout now: the
				// client has already given up on the connection.
				r.proxy.Release()
			}
		},
	}
	switch tg.scheme {
	case "ftps":
		r.cfg.TLSConfig = matrixTLS(t, env)
	case "sftp":
		r.cfg.KnownHostsFile = matrixKnownHosts(t, env, p.Host(), tg.srv.Port)
	}
	return r
}

func (r *matrixRig) url(remote string) string {
	return fmt.Sprintf("%s://%s@%s/%s", r.tg.scheme, r.env.User, net.JoinHostPort(r.proxy.Host(), strconv.Itoa(r.tg.srv.Port)), remote)
}

func (r *matrixRig) failures() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.fails...)
}

// transfer runs op ("upload" or "download") of src as remote through the
// rig (the file is staged on the server first for a download) and returns
// the result and the path of the file that must equal src.
func (r *matrixRig) transfer(t *testing.T, op, remote, src string) (transfer.Result, string, error) {
	t.Helper()
	_ = os.Remove(filepath.Join(r.tg.srv.Root, remote))
	_ = os.Remove(filepath.Join(r.tg.srv.Root, remote+".part"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if op == "upload" {
		res, err := transfer.Put(ctx, src, r.url(remote), r.cfg)
		return res, filepath.Join(r.tg.srv.Root, remote), err
	}
	matrixStage(t, r.tg.srv, remote, src)
	res, err := transfer.Get(ctx, r.url(remote), r.local, r.cfg)
	return res, r.local, err
}

// matrixDir is the direction in which op moves file data.
func matrixDir(op string) faultproxy.Dir {
	if op == "download" {
		return faultproxy.Downstream
	}
	return faultproxy.Upstream
}

// matrixTLS trusts the test bed's CA and names the certificate's host.
func matrixTLS(t *testing.T, env *testbed.Env) *tls.Config {
	t.Helper()
	tc, err := env.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// matrixKnownHosts writes a known_hosts file that vouches for the server's
// real host key under the proxy's address.
func matrixKnownHosts(t *testing.T, env *testbed.Env, host string, port int) string {
	t.Helper()
	b, err := os.ReadFile(env.KnownHostsFile)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("[%s]:%d", env.Host, port)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == want {
			out = append(out, fmt.Sprintf("[%s]:%d %s %s", host, port, f[1], f[2]))
		}
	}
	if len(out) == 0 {
		t.Fatalf("no host key for %s in %s", want, env.KnownHostsFile)
	}
	path := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(path, []byte(strings.Join(out, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// killSessions SIGKILLs the server processes that serve the proxy's
// sessions on the server's control (or SSH) port, found by their sockets
// (ss -tnp): only this test's sessions, never the listener or another
// test's.
func killSessions(t *testing.T, p *faultproxy.Proxy, port int) {
	t.Helper()
	killed := 0
	for _, addr := range p.UpstreamAddrs(port) {
		_, peerPort, err := net.SplitHostPort(addr)
		if err != nil {
			continue
		}
		out, err := exec.Command("ss", "-tnpH", "state", "established",
			fmt.Sprintf("( sport = :%d and dport = :%s )", port, peerPort)).Output()
		if err != nil {
			t.Errorf("ss: %v", err)
			continue
		}
		for _, m := range ssPID.FindAllStringSubmatch(string(out), -1) {
			if pid, err := strconv.Atoi(m[1]); err == nil && syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed++
			}
		}
	}
	if killed == 0 {
		t.Errorf("no session process found to kill")
	}
}

var ssPID = regexp.MustCompile(`pid=(\d+)`)

// matrixFault injects one kind of fault into a transfer in direction dir.
type matrixFault struct {
	name string
	// arm prepares the fault; it may set cfg.Progress to fire on an event.
	arm func(r *matrixRig, dir faultproxy.Dir, cfg *transfer.Config)
	// faults is how many faults the case injects.
	faults int
}

func proxyFault(kind faultproxy.Kind, repeat int) func(*matrixRig, faultproxy.Dir, *transfer.Config) {
	return func(r *matrixRig, dir faultproxy.Dir, _ *transfer.Config) {
		r.proxy.Inject(faultproxy.Fault{Kind: kind, Dir: dir, Ports: r.data, After: matrixFaultAt, Repeat: repeat})
	}
}

var matrixFaults = []matrixFault{
	{name: "close", arm: proxyFault(faultproxy.Close, 0), faults: 1},
	{name: "reset", arm: proxyFault(faultproxy.Reset, 0), faults: 1},
	{name: "blackhole", arm: proxyFault(faultproxy.Blackhole, 0), faults: 1},
	{name: "several", arm: func(r *matrixRig, dir faultproxy.Dir, cfg *transfer.Config) {
		proxyFault(faultproxy.Close, 0)(r, dir, cfg)
		r.proxy.Inject(faultproxy.Fault{Kind: faultproxy.Reset, Dir: dir, Ports: r.data, After: matrixFaultAt + 12<<20})
		r.proxy.Inject(faultproxy.Fault{Kind: faultproxy.Blackhole, Dir: dir, Ports: r.data, After: matrixFaultAt + 24<<20})
	}, faults: 3},
	{name: "killed", arm: func(r *matrixRig, _ faultproxy.Dir, cfg *transfer.Config) {
		var once atomic.Bool
		cfg.Progress = func(done, total int64) {
			if done >= matrixFaultAt && once.CompareAndSwap(false, true) {
				killSessions(r.t, r.proxy, r.tg.srv.Port)
			}
		}
	}, faults: 1},
}

func TestFaultMatrix(t *testing.T) {
	env := testbed.Require(t)
	src, sum := testbed.RandomFile(t, t.TempDir(), matrixSize)
	for _, tg := range matrixTargets(env) {
		for _, f := range matrixFaults {
			for _, op := range []string{"upload", "download"} {
				t.Run(tg.name+"/"+f.name+"/"+op, func(t *testing.T) {
					r := newMatrixRig(t, env, tg)
					remote := fmt.Sprintf("matrix-%s-%s-%s.bin", tg.name, f.name, op)
					cfg := r.cfg
					onEvent := cfg.OnEvent
					cfg.OnEvent = func(e transfer.Event) {
						if e.Kind == transfer.EventRestart {
							t.Logf("restart: %s", e.Reason)
						}
						onEvent(e)
					}
					f.arm(r, matrixDir(op), &cfg)
					r.cfg = cfg
					res, local, err := r.transfer(t, op, remote, src)
					if err != nil {
						t.Fatalf("%s failed: %v (failures: %v)", op, err, r.failures())
					}
					if got := testbed.SHA256File(t, local); got != sum {
						t.Fatal("SHA-256 differs")
					}
					if res.Resumes < 1 {
						t.Errorf("no resume: %+v (failures %v)", res, r.failures())
					}
					// Downloads resume at the local size: nothing is re-sent but
					// what the proxy had forwarded. Uploads resume at the remote
					// size and re-send what the kernels held in flight when the
					// connection died: the client's send buffer, the proxy's two
					// sockets and the server's receive buffer, each autotuned up
					// to several MiB on loopback.
					bound := int64(f.faults) * (1 << 20)
					if op == "upload" {
						bound = int64(f.faults) * (1<<20 + 15<<20)
					}
					if res.ResentBytes > bound {
						t.Errorf("re-sent %d bytes, bound %d", res.ResentBytes, bound)
					}
					t.Logf("attempts=%d resumes=%d resent=%d duration=%v failures=%v", res.Attempts, res.Resumes, res.ResentBytes, res.Duration, r.failures())
				})
			}
		}
	}
}

// matrixStage puts src on the server directly (through its root dir).
func matrixStage(t *testing.T, srv testbed.Server, remote, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(srv.Root, remote)
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// The server runs as the test user; let it read and replace the file.
	_ = exec.Command("chown", "haultest", dst).Run()
}

// Wrong errors must not be retried: a 421 on reconnect is.
func matrixIs421(err error) bool {
	var pe *protocol.Error
	return errors.As(err, &pe) && pe.Code == 421
}

// matrixFillSlots opens raw connections to srv until n of them hold a
// session (greeting 220), so that the next connection from this address is
// refused with 421 by max_per_ip. Bounded: gives up after 100 tries.
func matrixFillSlots(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	var held []net.Conn
	for i := 0; i < 100 && len(held) < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 3)
		if _, err := c.Read(buf); err == nil && string(buf) == "220" {
			held = append(held, c)
			continue
		}
		c.Close()
		time.Sleep(20 * time.Millisecond) // the server has not yet reaped a closed session
	}
	return held
}

// A reconnection refused with 421 (vsftpd max_per_ip) is retried until a
// slot frees up, in both directions.
func TestResume421OnReconnect(t *testing.T) {
	env := testbed.Require(t)
	src, sum := testbed.RandomFile(t, t.TempDir(), matrixSize)
	tg := matrixTarget{"ftp-vsftpd-limited", "ftp", env.VsftpdLimited}
	for _, op := range []string{"upload", "download"} {
		t.Run(op, func(t *testing.T) {
			r := newMatrixRig(t, env, tg)
			remote := "limited-421-" + op + ".bin"
			dir := matrixDir(op)
			// Kill the session (control connection included), so that the
			// client must log in again and meet the full slots.
			_ = dir
			var killed atomic.Bool
			r.cfg.Progress = func(done, total int64) {
				if done >= matrixFaultAt && killed.CompareAndSwap(false, true) {
					killSessions(t, r.proxy, tg.srv.Port)
				}
			}
			var mu sync.Mutex
			var held []net.Conn
			var saw421 atomic.Bool
			release := func() {
				mu.Lock()
				defer mu.Unlock()
				for _, c := range held {
					c.Close()
				}
				held = nil
			}
			defer release()
			first := true
			r.cfg.OnEvent = func(e transfer.Event) {
				if e.Kind != transfer.EventFailed {
					return
				}
				if first {
					first = false
					mu.Lock()
					held = matrixFillSlots(t, tg.srv.Addr(), env.LimitedMaxPerIP)
					mu.Unlock()
					return
				}
				if matrixIs421(e.Err) {
					saw421.Store(true)
					release()
				}
			}
			res, local, err := r.transfer(t, op, remote, src)
			if err != nil {
				t.Fatal(err)
			}
			if !saw421.Load() {
				t.Error("the reconnection was never refused with 421")
			}
			if testbed.SHA256File(t, local) != sum {
				t.Fatal("SHA-256 differs")
			}
			t.Logf("attempts=%d resumes=%d resent=%d", res.Attempts, res.Resumes, res.ResentBytes)
		})
	}
}

// vsftpd's data_connection_timeout ends a data connection that a NAT
// blackholed with 421 on the control connection, which a client blocked on
// the data socket never reads: the stall watchdog recovers.
func TestResumeVsftpdDataTimeout(t *testing.T) {
	env := testbed.Require(t)
	src, sum := testbed.RandomFile(t, t.TempDir(), matrixSize)
	tg := matrixTarget{"ftp-vsftpd-limited", "ftp", env.VsftpdLimited}
	for _, op := range []string{"upload", "download"} {
		t.Run(op, func(t *testing.T) {
			r := newMatrixRig(t, env, tg)
			// Longer than the server's data timeout, so the server acts first.
			r.cfg.StallTimeout = env.LimitedDataTimeout + 2*time.Second
			remote := "limited-timeout-" + op + ".bin"
			dir := matrixDir(op)
			r.proxy.Inject(faultproxy.Fault{Kind: faultproxy.Blackhole, Dir: dir, Ports: r.data, After: matrixFaultAt})
			res, local, err := r.transfer(t, op, remote, src)
			if err != nil {
				t.Fatal(err)
			}
			if testbed.SHA256File(t, local) != sum || res.Resumes < 1 {
				t.Fatalf("SHA-256 differs or no resume: %+v", res)
			}
			t.Logf("attempts=%d resumes=%d resent=%d failures=%v", res.Attempts, res.Resumes, res.ResentBytes, r.failures())
		})
	}
}
