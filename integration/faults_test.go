package integration_test

// Wire-level proof that each fault of integration/faultproxy really happens
// between the raw client libraries (jlaffaye/ftp, pkg/sftp) and the real
// servers of the test bed. These tests exercise the harness, not haul.

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jlaffaye/ftp"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/openhaul/haul/integration/faultproxy"
	"github.com/openhaul/haul/integration/testbed"
)

const (
	faultFileSize = 64 << 20
	// faultIODeadline bounds every socket of these tests.
	faultIODeadline = 90 * time.Second
)

// faultServerFile puts a random file of size bytes into the server's root,
// readable by the test user, and returns its remote path and local path.
func faultServerFile(t *testing.T, srv testbed.Server, size int64) (remote, local string) {
	t.Helper()
	local, _ = testbed.RandomFile(t, srv.Root, size)
	t.Cleanup(func() { os.Remove(local) })
	if err := os.Chmod(local, 0o644); err != nil {
		t.Fatal(err)
	}
	return srv.RemotePath(filepath.Base(local)), local
}

// faultFTPProxy starts a proxy mirroring srv's control port and passive range
// on a fresh loopback address.
func faultFTPProxy(t *testing.T, srv testbed.Server) *faultproxy.Proxy {
	t.Helper()
	ports := append([]int{srv.Port}, faultproxy.PortRange(srv.PasvMin, srv.PasvMax)...)
	p, err := faultproxy.NewLoopback(srv.Host, ports...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// faultFTPLogin logs in through the proxy. Data connections use EPSV, so
// they go to the control host: the proxy.
func faultFTPLogin(t *testing.T, env *testbed.Env, p *faultproxy.Proxy, srv testbed.Server) *ftp.ServerConn {
	t.Helper()
	dial := func(network, addr string) (net.Conn, error) {
		c, err := net.DialTimeout(network, addr, 5*time.Second)
		if err == nil {
			err = c.SetDeadline(time.Now().Add(faultIODeadline))
		}
		return c, err
	}
	c, err := ftp.Dial(p.Addr(srv.Port), ftp.DialWithDialFunc(dial), ftp.DialWithShutTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Quit() })
	if err := c.Login(env.User, env.Password); err != nil {
		t.Fatal(err)
	}
	return c
}

// faultPrefixSum returns the SHA-256 of the first n bytes of the file.
func faultPrefixSum(t *testing.T, path string, n int64) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, n); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// faultRetr does a raw RETR through c and reads it to its end; it returns the
// byte count, the SHA-256 of those bytes, the read error and the error of
// the final reply.
func faultRetr(t *testing.T, c *ftp.ServerConn, remote string) (n int64, sum [32]byte, readErr, closeErr error) {
	t.Helper()
	r, err := c.Retr(remote)
	if err != nil {
		t.Fatalf("RETR: %v", err)
	}
	h := sha256.New()
	n, readErr = io.Copy(h, r)
	closeErr = r.Close()
	copy(sum[:], h.Sum(nil))
	return n, sum, readErr, closeErr
}

func TestFaultFTPCloseEndsRetrEarly(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	srv := env.VsftpdPlain
	remote, local := faultServerFile(t, srv, faultFileSize)
	p := faultFTPProxy(t, srv)
	c := faultFTPLogin(t, env, p, srv)
	const after = 8 << 20
	a := p.Inject(faultproxy.Fault{Kind: faultproxy.Close, Dir: faultproxy.Downstream,
		Ports: faultproxy.PortRange(srv.PasvMin, srv.PasvMax), After: after})
	n, sum, readErr, closeErr := faultRetr(t, c, remote)
	t.Logf("RETR through close-after-8MiB: %d bytes, read error %v, final reply %v", n, readErr, closeErr)
	if n != after || readErr != nil {
		t.Fatalf("read %d bytes, %v; want exactly %d then a clean end of stream", n, readErr, after)
	}
	if sum != faultPrefixSum(t, local, after) {
		t.Fatal("the bytes received are not the file's first 8 MiB")
	}
	if a.Count() != 1 {
		t.Fatalf("fault fired %d times", a.Count())
	}
	// The connection that ends early is the only symptom on the data
	// stream; the server notices its peer is gone and says so.
	var te *textproto.Error
	if !errors.As(closeErr, &te) || te.Code != ftp.StatusTransfertAborted {
		t.Fatalf("final reply %v; want vsftpd's 426 for a data connection cut under it", closeErr)
	}
	// One-shot: the control connection still works and a second RETR is
	// complete.
	n, sum, readErr, closeErr = faultRetr(t, c, remote)
	if n != faultFileSize || readErr != nil || closeErr != nil || sum != testbed.SHA256File(t, local) {
		t.Fatalf("second RETR: %d bytes, %v, %v", n, readErr, closeErr)
	}
}

func TestFaultFTPResetAbortsRetr(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	srv := env.VsftpdPlain
	remote, local := faultServerFile(t, srv, faultFileSize)
	p := faultFTPProxy(t, srv)
	c := faultFTPLogin(t, env, p, srv)
	const after = 8 << 20
	p.Inject(faultproxy.Fault{Kind: faultproxy.Reset, Dir: faultproxy.Downstream,
		Ports: faultproxy.PortRange(srv.PasvMin, srv.PasvMax), After: after})
	n, sum, readErr, closeErr := faultRetr(t, c, remote)
	t.Logf("RETR through reset-after-8MiB: %d bytes, read error %v, final reply %v", n, readErr, closeErr)
	if !errors.Is(readErr, syscall.ECONNRESET) {
		t.Fatalf("read error %v; want ECONNRESET", readErr)
	}
	if n != after || sum != faultPrefixSum(t, local, after) {
		t.Fatalf("read %d bytes before the reset; want exactly the first %d", n, after)
	}
}

func TestFaultFTPBlackholeStallsRetr(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	srv := env.VsftpdPlain
	remote, _ := faultServerFile(t, srv, faultFileSize)
	p := faultFTPProxy(t, srv)
	c := faultFTPLogin(t, env, p, srv)
	const after, stall = 1 << 20, 5 * time.Second
	a := p.Inject(faultproxy.Fault{Kind: faultproxy.Blackhole, Dir: faultproxy.Downstream,
		Ports: faultproxy.PortRange(srv.PasvMin, srv.PasvMax), After: after})
	r, err := c.Retr(remote)
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(faultCounter{&got}, r)
		done <- err
	}()
	select {
	case <-a.Fired():
	case err := <-done:
		t.Fatalf("RETR ended before the blackhole (%d bytes, %v)", got.Load(), err)
	case <-time.After(30 * time.Second):
		t.Fatal("blackhole did not fire within 30 s")
	}
	// Nothing arrives and nothing fails for 5 s.
	select {
	case err := <-done:
		t.Fatalf("read ended during the blackhole after %d bytes: %v", got.Load(), err)
	case <-time.After(stall):
	}
	if n := got.Load(); n != after {
		t.Fatalf("received %d bytes; want exactly %d, then nothing", n, after)
	}
	if s := p.Stats(faultproxy.PortRange(srv.PasvMin, srv.PasvMax)...); s.Live != 1 {
		t.Fatalf("blackholed data connection not live: %+v", s)
	}
	p.Release()
	select {
	case err := <-done:
		t.Logf("after Release: %d bytes, read error %v", got.Load(), err)
	case <-time.After(10 * time.Second):
		t.Fatal("read still blocked 10 s after Release")
	}
	if got.Load() != after {
		t.Fatalf("received %d bytes after Release", got.Load())
	}
	if err := r.Close(); err == nil {
		t.Fatal("server reported success for a blackholed RETR")
	}
}

type faultCounter struct{ n *atomic.Int64 }

func (w faultCounter) Write(b []byte) (int, error) { w.n.Add(int64(len(b))); return len(b), nil }

func TestFaultFTPThrottleLatencyAndTap(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	srv := env.VsftpdPlain
	const size, rate = 8 << 20, 4 << 20
	remote, local := faultServerFile(t, srv, size)
	p := faultFTPProxy(t, srv)
	tap := p.Tap(srv.Port, faultproxy.Upstream)
	c := faultFTPLogin(t, env, p, srv)

	p.SetRate(rate)
	start := time.Now()
	n, sum, readErr, closeErr := faultRetr(t, c, remote)
	el := time.Since(start)
	p.SetRate(0)
	if n != size || readErr != nil || closeErr != nil || sum != testbed.SHA256File(t, local) {
		t.Fatalf("throttled RETR: %d bytes, %v, %v", n, readErr, closeErr)
	}
	bps := float64(size) / el.Seconds()
	t.Logf("throttled RETR: %.2f MiB/s at a limit of %d MiB/s", bps/(1<<20), rate>>20)
	if bps > 1.5*rate || bps < rate/4 {
		t.Fatalf("throttled throughput %.0f B/s; want about %d B/s", bps, rate)
	}

	const lat = 50 * time.Millisecond
	p.SetLatency(lat)
	start = time.Now()
	if err := c.NoOp(); err != nil {
		t.Fatal(err)
	}
	rtt := time.Since(start)
	p.SetLatency(0)
	if rtt < 2*lat {
		t.Fatalf("NOOP round trip %v with %v latency each way", rtt, lat)
	}

	// The control tap shows the commands as the server received them;
	// Login's TYPE I precedes the RETR.
	ctl := tap.String()
	typeAt, retrAt := strings.Index(ctl, "TYPE I\r\n"), strings.Index(ctl, "RETR "+remote+"\r\n")
	if typeAt < 0 || retrAt < 0 || typeAt > retrAt {
		t.Fatalf("control stream lacks TYPE I before RETR:\n%s", faultRedact(ctl, env.Password))
	}
	if !strings.Contains(ctl, "EPSV\r\n") {
		t.Fatalf("control stream has no EPSV (data would bypass the proxy):\n%s", faultRedact(ctl, env.Password))
	}
}

func faultRedact(s, secret string) string { return strings.ReplaceAll(s, secret, "****") }

func TestFaultSFTPCloseBreaksSession(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	srv := env.SSHD
	remote, local := faultServerFile(t, srv, faultFileSize)
	p, err := faultproxy.NewLoopback(srv.Host, srv.Port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })

	cfg, err := env.SSHConfig(true)
	if err != nil {
		t.Fatal(err)
	}
	// known_hosts names the real server: check the key as the target's.
	hk, target := cfg.HostKeyCallback, srv.Addr()
	targetAddr, err := net.ResolveTCPAddr("tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	cfg.HostKeyCallback = func(_ string, _ net.Addr, key ssh.PublicKey) error {
		return hk(target, targetAddr, key)
	}
	raw, err := net.DialTimeout("tcp", p.Addr(srv.Port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.SetDeadline(time.Now().Add(faultIODeadline)); err != nil {
		t.Fatal(err)
	}
	sc, chans, reqs, err := ssh.NewClientConn(raw, p.Addr(srv.Port), cfg)
	if err != nil {
		t.Fatal(err)
	}
	sshc := ssh.NewClient(sc, chans, reqs)
	defer sshc.Close()
	client, err := sftp.NewClient(sshc)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Stat(remote); err != nil {
		t.Fatal(err)
	}

	const after = 4 << 20
	a := p.Inject(faultproxy.Fault{Kind: faultproxy.Close, Dir: faultproxy.Downstream, After: after})
	f, err := client.Open(remote)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	n, err := io.Copy(&got, f)
	f.Close()
	t.Logf("SFTP read through close-after-4MiB: %d bytes, %v", n, err)
	if err == nil {
		t.Fatalf("read of a cut SFTP session succeeded (%d bytes)", n)
	}
	if n >= after {
		t.Fatalf("read %d bytes, more than the %d forwarded", n, after)
	}
	if sha256.Sum256(got.Bytes()) != faultPrefixSum(t, local, n) {
		t.Fatal("the bytes received are not a prefix of the file")
	}
	select {
	case <-a.Fired():
	default:
		t.Fatal("fault did not fire")
	}
	if _, err := client.Stat(remote); err == nil {
		t.Fatal("session still works after the connection was closed")
	}
	// sshc.Wait returns once the transport is gone.
	waitDone := make(chan error, 1)
	go func() { waitDone <- sshc.Wait() }()
	select {
	case <-waitDone:
	case <-time.After(10 * time.Second):
		t.Fatal("ssh client still running 10 s after the close")
	}
}
