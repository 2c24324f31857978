package integration_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openhaul/haul/integration/testbed"
	"github.com/openhaul/haul/protocol"
	hsftp "github.com/openhaul/haul/protocol/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/cpu"
)

// psftpSize is the size of the big transfers: 64 MiB.
const psftpSize = 64 << 20

// psftpDial logs in to srv with the test bed's key (useKey) or password.
func psftpDial(t *testing.T, env *testbed.Env, srv testbed.Server, useKey bool, opts ...hsftp.Option) *hsftp.Session {
	t.Helper()
	base := []hsftp.Option{hsftp.WithUser(env.User), hsftp.WithKnownHostsFile(env.KnownHostsFile)}
	if useKey {
		base = append(base, hsftp.WithPrivateKeyFile(env.SSHKeyFile))
	} else {
		base = append(base, hsftp.WithPassword(env.Password))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := hsftp.Dial(ctx, srv.Addr(), append(base, opts...)...)
	if err != nil {
		t.Fatalf("Dial %s: %v", srv.Name, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// psftpName returns a remote file name unique to the test.
func psftpName(t *testing.T, srv testbed.Server, suffix string) string {
	name := fmt.Sprintf("psftp-%s-%d-%s", strings.ReplaceAll(t.Name(), "/", "_"), time.Now().UnixNano(), suffix)
	t.Cleanup(func() { _ = os.Remove(srv.LocalPath(name)) })
	return srv.RemotePath(name)
}

// psftpUpload writes src[from:] to remote at offset from and checks Acked.
func psftpUpload(t *testing.T, s *hsftp.Session, remote string, src []byte, from int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, err := s.OpenWriter(ctx, remote, from)
	if err != nil {
		t.Fatalf("OpenWriter(%s, %d): %v", remote, from, err)
	}
	if _, err := io.Copy(w, bytes.NewReader(src[from:])); err != nil {
		_ = w.Close()
		t.Fatalf("upload: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("writer Close: %v", err)
	}
	if got, want := w.Acked(), int64(len(src))-from; got != want {
		t.Fatalf("Acked = %d, want %d", got, want)
	}
}

// psftpDownload reads remote from offset with io.Copy (the WriterTo path).
func psftpDownload(t *testing.T, s *hsftp.Session, remote string, offset int64) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := s.OpenReader(ctx, remote, offset)
	if err != nil {
		t.Fatalf("OpenReader(%s, %d): %v", remote, offset, err)
	}
	defer r.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		t.Fatalf("download: %v", err)
	}
	return buf.Bytes()
}

func TestProtocolSFTPTransfers(t *testing.T) {
	env := testbed.Require(t)
	src, err := io.ReadAll(io.LimitReader(testbed.NewRandReader(psftpSize), psftpSize))
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(src)
	for _, srv := range env.SFTPServers() {
		for _, useKey := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/key=%v", srv.Name, useKey), func(t *testing.T) {
				// Short keepalives run during the transfers: a
				// server answering them late or not at all
				// would fail the test.
				s := psftpDial(t, env, srv, useKey, hsftp.WithKeepAlive(2*time.Second))
				remote := psftpName(t, srv, "big.bin")

				// A whole upload, then a first attempt cut short
				// with a stale tail, then a resume.
				psftpUpload(t, s, remote, src, 0)
				if got := testbed.SHA256File(t, srv.LocalPath(remote)); got != want {
					t.Fatal("uploaded file differs")
				}
				if err := s.Truncate(context.Background(), remote, 40<<20); err != nil {
					t.Fatalf("Truncate: %v", err)
				}
				f, err := os.OpenFile(srv.LocalPath(remote), os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = f.Write(bytes.Repeat([]byte("stale"), 1000))
				_ = f.Close()
				const resumeAt = 32<<20 + 12345
				psftpUpload(t, s, remote, src, resumeAt)
				if got := testbed.SHA256File(t, srv.LocalPath(remote)); got != want {
					t.Fatal("resumed upload differs")
				}
				fi, err := s.Stat(context.Background(), remote)
				if err != nil || fi.Size != psftpSize {
					t.Fatalf("Stat = %+v, %v", fi, err)
				}

				// Download at an offset.
				const off = 10<<20 + 77
				got := psftpDownload(t, s, remote, off)
				if sha256.Sum256(append(bytes.Clone(src[:off]), got...)) != want {
					t.Fatalf("download at %d differs (%d bytes)", off, len(got))
				}

				// Rename over an existing file, then remove.
				other := psftpName(t, srv, "other.bin")
				psftpUpload(t, s, other, src[:1000], 0)
				if err := s.Rename(context.Background(), other, remote); err != nil {
					t.Fatalf("Rename: %v", err)
				}
				if fi, err := s.Stat(context.Background(), remote); err != nil || fi.Size != 1000 {
					t.Fatalf("after Rename: %+v, %v", fi, err)
				}
				if err := s.Remove(context.Background(), remote); err != nil {
					t.Fatalf("Remove: %v", err)
				}
			})
		}
	}
}

func TestProtocolSFTPMissingFile(t *testing.T) {
	env := testbed.Require(t)
	for _, srv := range env.SFTPServers() {
		t.Run(srv.Name, func(t *testing.T) {
			s := psftpDial(t, env, srv, true)
			missing := srv.RemotePath("psftp-does-not-exist")
			if _, err := s.Stat(context.Background(), missing); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Stat = %v, want fs.ErrNotExist", err)
			}
			if _, err := s.OpenReader(context.Background(), missing, 0); !errors.Is(err, fs.ErrNotExist) || protocol.IsRetryable(err) {
				t.Errorf("OpenReader = %v, want fs.ErrNotExist", err)
			}
		})
	}
}

func TestProtocolSFTPHostKeyMismatch(t *testing.T) {
	env := testbed.Require(t)
	// A known_hosts naming another key for every test bed address.
	_, other, err := psftpGenKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range env.SFTPServers() {
		t.Run(srv.Name, func(t *testing.T) {
			kh := filepath.Join(t.TempDir(), "known_hosts")
			line := fmt.Sprintf("[%s]:%d %s", srv.Host, srv.Port, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(other))))
			if err := os.WriteFile(kh, []byte(line+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := hsftp.Dial(context.Background(), srv.Addr(), hsftp.WithUser(env.User),
				hsftp.WithPassword(env.Password), hsftp.WithKnownHostsFile(kh))
			if !errors.Is(err, protocol.ErrHostKey) {
				t.Fatalf("err = %v, want ErrHostKey", err)
			}
			var he *hsftp.HostKeyError
			if !errors.As(err, &he) || len(he.Expected) != 1 {
				t.Fatalf("err = %v, want a HostKeyError with one expected key", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, ssh.FingerprintSHA256(other)) || !strings.Contains(msg, he.Received) ||
				!strings.Contains(he.Received, "SHA256:") {
				t.Fatalf("message %q does not name both fingerprints", msg)
			}
			t.Logf("%s", msg)
		})
	}
}

func TestProtocolSFTPWrongPassword(t *testing.T) {
	env := testbed.Require(t)
	for _, srv := range env.SFTPServers() {
		t.Run(srv.Name, func(t *testing.T) {
			logBefore := psftpFailedLogins(t, env, srv)
			start := time.Now()
			_, err := hsftp.Dial(context.Background(), srv.Addr(), hsftp.WithUser(env.User),
				hsftp.WithPassword("not-the-password"), hsftp.WithKnownHostsFile(env.KnownHostsFile))
			if !errors.Is(err, protocol.ErrAuth) || protocol.IsRetryable(err) {
				t.Fatalf("err = %v, want ErrAuth", err)
			}
			if strings.Contains(err.Error(), "not-the-password") {
				t.Fatal("the error shows the password")
			}
			t.Logf("%v after %v", err, time.Since(start))
			// Give the server a moment to write its log line.
			if srv.Name == "SSHD" {
				deadline := time.Now().Add(3 * time.Second)
				for psftpFailedLogins(t, env, srv) == logBefore && time.Now().Before(deadline) {
					time.Sleep(50 * time.Millisecond)
				}
				if n := psftpFailedLogins(t, env, srv) - logBefore; n != 1 {
					t.Fatalf("sshd logged %d failed password attempts, want 1", n)
				}
			}
		})
	}
}

// psftpFailedLogins counts sshd's "Failed password" lines (0 for servers
// whose log format is not checked).
func psftpFailedLogins(t *testing.T, env *testbed.Env, srv testbed.Server) int {
	if srv.Name != "SSHD" {
		return 0
	}
	return env.CountInLog(t, srv.Log, "Failed password for")
}

func TestProtocolSFTPCancelDuringRead(t *testing.T) {
	env := testbed.Require(t)
	srv := env.SSHD
	s := psftpDial(t, env, srv, true, hsftp.WithConcurrency(4)) // slow enough to cancel mid-way
	remote := psftpName(t, srv, "cancel.bin")
	w, err := s.OpenWriter(context.Background(), remote, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, io.LimitReader(testbed.NewRandReader(2), 256<<20)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := s.OpenReader(ctx, remote, 0)
	if err != nil {
		t.Fatal(err)
	}
	pw := &psftpTrigger{at: 8 << 20, reached: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(pw, r)
		done <- err
	}()
	select {
	case <-pw.reached:
	case err := <-done:
		t.Fatalf("read ended before the cancel: %v", err)
	}
	cancel()
	start := time.Now()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		t.Logf("returned %v after cancel, %d bytes read", time.Since(start), pw.n)
	case <-time.After(time.Second):
		t.Fatal("read did not return within a second of cancel")
	}
	_ = r.Close()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// psftpTrigger discards what it is written and closes reached once at
// bytes have gone through.
type psftpTrigger struct {
	n, at   int64
	reached chan struct{}
}

func (p *psftpTrigger) Write(b []byte) (int, error) {
	before := p.n
	p.n += int64(len(b))
	if before < p.at && p.n >= p.at {
		close(p.reached)
	}
	return len(b), nil
}

func TestProtocolSFTPFreeSpaceAndFullDisk(t *testing.T) {
	env := testbed.Require(t)
	srv := env.SSHD
	s := psftpDial(t, env, srv, true)
	free, err := s.FreeSpace(context.Background(), srv.RemotePath("."))
	if err != nil || free <= 0 {
		t.Fatalf("FreeSpace = %d, %v", free, err)
	}
	t.Logf("free space in %s: %d bytes", srv.Home, free)
	if srv.FullDir == "" {
		t.Skip("no full tmpfs on this server")
	}
	full, err := s.FreeSpace(context.Background(), srv.FullDir)
	if err != nil {
		t.Fatal(err)
	}
	remote := srv.FullDir + fmt.Sprintf("/psftp-%d.bin", time.Now().UnixNano())
	t.Cleanup(func() { _ = os.Remove(filepath.Join(srv.FullLocal, filepath.Base(remote))) })
	size := full + 8<<20
	w, err := s.OpenWriter(context.Background(), remote, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, cerr := io.Copy(w, io.LimitReader(testbed.NewRandReader(1), size))
	err = w.Close()
	if err == nil {
		err = cerr
	}
	if !errors.Is(err, protocol.ErrNoSpace) || protocol.IsRetryable(err) {
		t.Fatalf("upload of %d bytes into %d free: err = %v, want ErrNoSpace", size, full, err)
	}
	t.Logf("%v; acked %d of %d free", err, w.Acked(), full)
	if w.Acked() > full {
		t.Fatalf("Acked %d exceeds the free space %d", w.Acked(), full)
	}
	fi, err := s.Stat(context.Background(), remote)
	if err != nil || fi.Size < w.Acked() {
		t.Fatalf("partial file: %+v, %v (acked %d)", fi, err, w.Acked())
	}
}

// psftpGenKey returns a fresh ed25519 key pair.
func psftpGenKey() (ssh.Signer, ssh.PublicKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, err
	}
	return s, s.PublicKey(), nil
}

// BenchmarkProtocolSFTP measures upload and download throughput of 256 MiB
// against the test bed's OpenSSH: go test -run x -bench ProtocolSFTP ./integration/
func BenchmarkProtocolSFTP(b *testing.B) {
	env := testbed.Require(b)
	srv := env.SSHD
	const size = 256 << 20
	s, err := hsftp.Dial(context.Background(), srv.Addr(), hsftp.WithUser(env.User),
		hsftp.WithPrivateKeyFile(env.SSHKeyFile), hsftp.WithKnownHostsFile(env.KnownHostsFile))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	remote := srv.RemotePath(fmt.Sprintf("psftp-bench-%d.bin", time.Now().UnixNano()))
	defer os.Remove(srv.LocalPath(remote))
	b.Run("put", func(b *testing.B) {
		b.SetBytes(size)
		for range b.N {
			w, err := s.OpenWriter(context.Background(), remote, 0)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(w, io.LimitReader(testbed.NewRandReader(3), size)); err != nil {
				b.Fatal(err)
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("get", func(b *testing.B) {
		b.SetBytes(size)
		for range b.N {
			r, err := s.OpenReader(context.Background(), remote, 0)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, r); err != nil {
				b.Fatal(err)
			}
			_ = r.Close()
		}
	})
}

// psftpRangeUpload writes data at offset through a range writer.
func psftpRangeUpload(s *hsftp.Session, remote string, offset int64, data []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, err := s.OpenRangeWriter(ctx, remote, offset)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
		_ = w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if got := w.Acked(); got != int64(len(data)) {
		return fmt.Errorf("Acked = %d, want %d", got, len(data))
	}
	return nil
}

func TestProtocolSFTPRangeWriters(t *testing.T) {
	env := testbed.Require(t)
	const size = 24<<20 + 4321
	src, err := io.ReadAll(io.LimitReader(testbed.NewRandReader(11), size))
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range env.SFTPServers() {
		t.Run(srv.Name, func(t *testing.T) {
			a := psftpDial(t, env, srv, true)
			b := psftpDial(t, env, srv, false)
			remote := psftpName(t, srv, "ranges.bin")
			// Two sessions fill the halves at once; the second starts
			// past the end of the (missing) file.
			half := int64(size / 3)
			errs := make(chan error, 2)
			go func() { errs <- psftpRangeUpload(a, remote, 0, src[:half]) }()
			go func() { errs <- psftpRangeUpload(b, remote, half, src[half:]) }()
			for range 2 {
				if err := <-errs; err != nil {
					t.Fatalf("range writer: %v", err)
				}
			}
			if got := testbed.SHA256File(t, srv.LocalPath(remote)); got != sha256.Sum256(src) {
				t.Fatal("file filled by two range writers differs")
			}
			// Rewriting the first 1000 bytes cuts nothing.
			patch := bytes.Repeat([]byte{0xA5}, 1000)
			if err := psftpRangeUpload(a, remote, 0, patch); err != nil {
				t.Fatal(err)
			}
			want := append(bytes.Clone(patch), src[len(patch):]...)
			if got := testbed.SHA256File(t, srv.LocalPath(remote)); got != sha256.Sum256(want) {
				t.Fatal("range rewrite at 0 changed more than its range")
			}
		})
	}
}

func TestProtocolSFTPHash(t *testing.T) {
	env := testbed.Require(t)
	const size = 8<<20 + 12345
	src, err := io.ReadAll(io.LimitReader(testbed.NewRandReader(21), size))
	if err != nil {
		t.Fatal(err)
	}
	sum := func(a, b int64) []byte { s := sha256.Sum256(src[a:b]); return s[:] }
	for _, srv := range env.SFTPServers() {
		t.Run(srv.Name, func(t *testing.T) {
			s := psftpDial(t, env, srv, true)
			remote := psftpName(t, srv, "hash.bin")
			psftpUpload(t, s, remote, src, 0)
			algos := s.HashAlgorithms()
			t.Logf("%s hashes with %v", srv.Name, algos)
			// check-file (proftpd) offers sha256 first; over exec (OpenSSH)
			// the fastest coreutils tool, sha1sum (with this side's SHA-1, the cheapest pair), comes first.
			want := "sha256"
			if srv.Name == "SSHD" {
				want = "sha1"
			}
			if len(algos) == 0 || algos[0] != want || !slices.Contains(algos, "sha256") {
				t.Fatalf("HashAlgorithms = %v, want %s first and sha256 offered", algos, want)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// The whole file, both ways, and the 64 KiB ranges the
			// engine asks for: the file's tail and its head (check-file
			// can do those), and one in the middle (exec only).
			cases := [][2]int64{{0, -1}, {0, size}, {size - 64<<10, size}, {0, 64 << 10}, {3 << 20, 3<<20 + 64<<10}}
			for _, r := range cases {
				end := r[1]
				if end < 0 {
					end = size
				}
				got, err := s.Hash(ctx, remote, "sha256", r[0], r[1])
				if srv.Name == "PROFTPD_SFTP" && r[0] != 0 && end != size {
					if !errors.Is(err, protocol.ErrUnsupported) {
						t.Fatalf("check-file of a middle range %v: %x, %v; want ErrUnsupported", r, got, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("Hash %v: %v", r, err)
				}
				if !bytes.Equal(got, sum(r[0], end)) {
					t.Fatalf("Hash %v = %x, want %x", r, got, sum(r[0], end))
				}
			}
			// The other algorithms agree with local ones too.
			for _, a := range algos[1:] {
				if _, err := s.Hash(ctx, remote, a, 0, -1); err != nil {
					t.Errorf("Hash %s: %v", a, err)
				}
			}
			if _, err := s.Hash(ctx, remote+"-missing", "sha256", 0, -1); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Hash(missing) = %v, want fs.ErrNotExist", err)
			}
			// A relative path resolves as SFTP resolves it.
			if srv.Home != "/" {
				rel := strings.TrimPrefix(strings.TrimPrefix(remote, srv.Home), "/")
				if got, err := s.Hash(ctx, rel, "sha256", 0, -1); err != nil || !bytes.Equal(got, sum(0, size)) {
					t.Fatalf("Hash(%q) = %x, %v", rel, got, err)
				}
			}
			// The session still transfers after hashing.
			if got := psftpDownload(t, s, remote, size-100); !bytes.Equal(got, src[size-100:]) {
				t.Fatal("download after hashing differs")
			}
		})
	}
	t.Run("SSHD/exec-off", func(t *testing.T) {
		s := psftpDial(t, env, env.SSHD, true, hsftp.WithExecHash(false))
		if a := s.HashAlgorithms(); len(a) != 0 {
			t.Fatalf("HashAlgorithms = %v, want none", a)
		}
		if _, err := s.Hash(context.Background(), env.SSHD.RemotePath("x"), "sha256", 0, -1); !errors.Is(err, protocol.ErrUnsupported) {
			t.Fatalf("Hash = %v, want ErrUnsupported", err)
		}
	})
}

func TestProtocolSFTPPacketSizeFromLimits(t *testing.T) {
	env := testbed.Require(t)
	// OpenSSH states its limits (limits@openssh.com): 255 KiB requests,
	// 16 in flight. proftpd does not: the 32 KiB default stays. AES-GCM
	// is preferred on this CPU (AES-NI).
	for _, c := range []struct {
		srv  testbed.Server
		want string
	}{{env.SSHD, "packet=261120 requests=16"}, {env.ProftpdSFTP, "packet=32768 requests=64"}} {
		var logs bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		s := psftpDial(t, env, c.srv, true, hsftp.WithLogger(log))
		want := []string{c.want}
		if cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ {
			want = append(want, "cipher=aes128-gcm@openssh.com")
		}
		for _, w := range want {
			if !strings.Contains(logs.String(), w) {
				t.Fatalf("%s: log lacks %q:\n%s", c.srv.Name, w, logs.String())
			}
		}
		// A transfer with those sizes, not a multiple of either.
		src, err := io.ReadAll(io.LimitReader(testbed.NewRandReader(31), 9<<20+555))
		if err != nil {
			t.Fatal(err)
		}
		remote := psftpName(t, c.srv, "pkt.bin")
		psftpUpload(t, s, remote, src, 0)
		if got := psftpDownload(t, s, remote, 0); !bytes.Equal(got, src) {
			t.Fatalf("%s: round trip differs", c.srv.Name)
		}
	}
}
