package sftp_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

const (
	testUser     = "u"
	testPassword = "pw"
)

// testServer is an in-process SSH server with an SFTP subsystem, served
// either by sftp.NewServer on a temporary directory or by a request server
// with fault-injecting handlers.
type testServer struct {
	t         *testing.T
	ln        net.Listener
	addr      string
	dir       string
	hostKey   ssh.Signer
	clientKey ssh.Signer
	// clientKeyPriv is clientKey's private half.
	clientKeyPriv ed25519.PrivateKey
	knownHosts    string
	handlers      *sftp.Handlers

	authAttempts atomic.Int32
	ignoreGlobal atomic.Bool
	// execDir, when set, lets exec requests run "sh -c" there (a login
	// directory other than the SFTP working directory, dir).
	execDir string
	// execHandler, when set, serves exec requests instead of sh: it gets
	// the channel, the command and a channel closed once the client has
	// closed the channel (or the connection is gone), and must return by
	// then; the channel is closed after it returns.
	execHandler func(ch ssh.Channel, cmd string, closed <-chan struct{})
	execs       atomic.Int32
	// maxSFTP, when positive, refuses SFTP subsystems beyond that many per
	// connection; sftpChans counts those started.
	maxSFTP   int32
	sftpChans atomic.Int32

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newSigner(t *testing.T) ssh.Signer {
	s, _ := newKey(t)
	return s
}

func newKey(t *testing.T) (ssh.Signer, ed25519.PrivateKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, priv
}

// newTestServer starts a server; handlers nil means a real file system
// under a temporary directory.
func newTestServer(t *testing.T, handlers *sftp.Handlers) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{t: t, ln: ln, addr: ln.Addr().String(), dir: t.TempDir(),
		hostKey: newSigner(t), handlers: handlers}
	ts.clientKey, ts.clientKeyPriv = newKey(t)
	ts.knownHosts = ts.writeKnownHosts(ts.hostKey.PublicKey())
	cfg := &ssh.ServerConfig{
		PasswordCallback: func(c ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			ts.authAttempts.Add(1)
			if c.User() == testUser && string(pw) == testPassword {
				return nil, nil
			}
			return nil, errors.New("denied")
		},
		PublicKeyCallback: func(c ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			ts.authAttempts.Add(1)
			if c.User() == testUser && bytes.Equal(k.Marshal(), ts.clientKey.PublicKey().Marshal()) {
				return nil, nil
			}
			return nil, errors.New("denied")
		},
	}
	cfg.AddHostKey(ts.hostKey)
	ts.wg.Add(1)
	go func() {
		defer ts.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ts.mu.Lock()
			ts.conns = append(ts.conns, c)
			ts.mu.Unlock()
			ts.wg.Add(1)
			go func() {
				defer ts.wg.Done()
				ts.serveConn(c, cfg)
			}()
		}
	}()
	t.Cleanup(ts.close)
	return ts
}

func (ts *testServer) close() {
	_ = ts.ln.Close()
	ts.mu.Lock()
	for _, c := range ts.conns {
		_ = c.Close()
	}
	ts.mu.Unlock()
	ts.wg.Wait()
}

func (ts *testServer) writeKnownHosts(keys ...ssh.PublicKey) string {
	ts.t.Helper()
	var b bytes.Buffer
	for _, k := range keys {
		b.WriteString(knownhosts.Line([]string{knownhosts.Normalize(ts.addr)}, k) + "\n")
	}
	p := filepath.Join(ts.t.TempDir(), "known_hosts")
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		ts.t.Fatal(err)
	}
	return p
}

func (ts *testServer) serveConn(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for r := range reqs {
			if ts.ignoreGlobal.Load() {
				continue // a server that stopped answering
			}
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
		}
	}()
	var sftpChans atomic.Int32
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "no")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		closed := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer ch.Close()
			defer close(closed)
			for req := range creqs {
				if req.Type == "exec" && (ts.execDir != "" || ts.execHandler != nil) && len(req.Payload) > 4 {
					_ = req.Reply(true, nil)
					ts.execs.Add(1)
					wg.Add(1)
					go func() {
						defer wg.Done()
						if ts.execHandler != nil {
							defer ch.Close()
							ts.execHandler(ch, string(req.Payload[4:]), closed)
							return
						}
						ts.serveExec(ch, string(req.Payload[4:]))
					}()
					continue
				}
				ok := req.Type == "subsystem" && len(req.Payload) > 4 && string(req.Payload[4:]) == "sftp"
				if ok && ts.maxSFTP > 0 && sftpChans.Add(1) > ts.maxSFTP {
					ok = false
				}
				if ok {
					ts.sftpChans.Add(1)
				}
				_ = req.Reply(ok, nil)
				if !ok {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					ts.serveSFTP(ch)
				}()
			}
		}()
	}
}

// serveExec runs cmd with sh -c in ts.execDir, wired to the channel, and
// reports its exit status.
func (ts *testServer) serveExec(ch ssh.Channel, cmd string) {
	defer ch.Close()
	c := exec.Command("sh", "-c", cmd)
	c.Dir = ts.execDir
	c.Stdin, c.Stdout, c.Stderr = ch, ch, ch.Stderr()
	status := 0
	if err := c.Run(); err != nil {
		status = 127
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			status = ee.ExitCode()
		}
	}
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(&struct{ Status uint32 }{uint32(status)}))
}

func (ts *testServer) serveSFTP(ch ssh.Channel) {
	defer ch.Close()
	if ts.handlers != nil {
		srv := sftp.NewRequestServer(ch, *ts.handlers)
		_ = srv.Serve()
		_ = srv.Close()
		return
	}
	srv, err := sftp.NewServer(ch, sftp.WithServerWorkingDirectory(ts.dir))
	if err != nil {
		return
	}
	_ = srv.Serve()
	_ = srv.Close()
}

// faultFS wraps sftp.InMemHandler with fault injection and records the
// open flags of every write.
type faultFS struct {
	inner sftp.Handlers

	mu         sync.Mutex
	writeFlags []sftp.FileOpenFlags
	failAt     int64 // a write whose range holds this offset fails (-1: none)
	failErr    error
	readLimit  int64         // reads past this offset see EOF (-1: none)
	readMax    int           // reads return at most this many bytes (0: no limit)
	readGate   chan struct{} // reads past readBlock wait for it to close
	readBlock  int64
	freeBlocks uint64
	// statSize, when non-zero before handlers is called, is the size
	// every Stat and Fstat reports.
	statSize int64
}

func newFaultFS() *faultFS {
	return &faultFS{inner: sftp.InMemHandler(), failAt: -1, readLimit: -1, readBlock: -1, freeBlocks: 1 << 30}
}

func (f *faultFS) handlers() *sftp.Handlers {
	h := &sftp.Handlers{FileGet: faultGet{f}, FilePut: faultPut{f}, FileCmd: faultCmd{f}, FileList: f.inner.FileList}
	if f.statSize != 0 {
		h.FileList = sizeLister{f.inner.FileList, f.statSize}
	}
	return h
}

// sizeLister reports size for every file it stats.
type sizeLister struct {
	inner sftp.FileLister
	size  int64
}

func (l sizeLister) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	la, err := l.inner.Filelist(r)
	if err != nil || r.Method != "Stat" {
		return la, err
	}
	fis := make([]os.FileInfo, 1)
	if n, _ := la.ListAt(fis, 0); n != 1 {
		return la, nil
	}
	return listerAt{sizedInfo{fis[0], l.size}}, nil
}

type sizedInfo struct {
	os.FileInfo
	size int64
}

func (s sizedInfo) Size() int64 { return s.size }

type listerAt []os.FileInfo

func (l listerAt) ListAt(f []os.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(f, l[off:])
	if off+int64(n) >= int64(len(l)) {
		return n, io.EOF
	}
	return n, nil
}

func (f *faultFS) setFail(off int64, err error) {
	f.mu.Lock()
	f.failAt, f.failErr = off, err
	f.mu.Unlock()
}

type faultPut struct{ f *faultFS }

func (p faultPut) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	p.f.mu.Lock()
	p.f.writeFlags = append(p.f.writeFlags, r.Pflags())
	p.f.mu.Unlock()
	w, err := p.f.inner.FilePut.Filewrite(r)
	if err != nil {
		return nil, err
	}
	return faultWriterAt{p.f, w}, nil
}

type faultWriterAt struct {
	f *faultFS
	w io.WriterAt
}

func (w faultWriterAt) WriteAt(b []byte, off int64) (int, error) {
	w.f.mu.Lock()
	failAt, failErr := w.f.failAt, w.f.failErr
	w.f.mu.Unlock()
	if failAt >= 0 && off <= failAt && failAt < off+int64(len(b)) {
		return 0, failErr
	}
	return w.w.WriteAt(b, off)
}

type faultGet struct{ f *faultFS }

func (g faultGet) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	ra, err := g.f.inner.FileGet.Fileread(r)
	if err != nil {
		return nil, err
	}
	return faultReaderAt{g.f, ra}, nil
}

type faultReaderAt struct {
	f *faultFS
	r io.ReaderAt
}

func (r faultReaderAt) ReadAt(b []byte, off int64) (int, error) {
	r.f.mu.Lock()
	limit, gate, block, most := r.f.readLimit, r.f.readGate, r.f.readBlock, r.f.readMax
	r.f.mu.Unlock()
	if most > 0 && len(b) > most {
		b = b[:most]
	}
	if block >= 0 && off >= block && gate != nil {
		<-gate
		return 0, errors.New("gate closed")
	}
	if limit >= 0 {
		if off >= limit {
			return 0, io.EOF
		}
		if off+int64(len(b)) > limit {
			b = b[:limit-off]
			n, _ := r.r.ReadAt(b, off)
			return n, io.EOF
		}
	}
	return r.r.ReadAt(b, off)
}

type faultCmd struct{ f *faultFS }

func (c faultCmd) Filecmd(r *sftp.Request) error { return c.f.inner.FileCmd.Filecmd(r) }

func (c faultCmd) PosixRename(r *sftp.Request) error {
	return c.f.inner.FileCmd.(sftp.PosixRenameFileCmder).PosixRename(r)
}

func (c faultCmd) StatVFS(r *sftp.Request) (*sftp.StatVFS, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	return &sftp.StatVFS{Bsize: 4096, Frsize: 4096, Blocks: 1 << 30, Bfree: c.f.freeBlocks, Bavail: c.f.freeBlocks}, nil
}
