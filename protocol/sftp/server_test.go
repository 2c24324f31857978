package sftp_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
	// wrapSFTP, when set, wraps every SFTP channel before the SFTP server
	// reads it (a sniffer).
	wrapSFTP func(io.ReadWriteCloser) io.ReadWriteCloser
	// execEOFAfterClose: the first exec request after a channel of the
	// connection closed ends in EOF (the channel is closed without an
	// answer), as on a server seen to do that now and then.
	// execEOFFirst: the first exec request of every connection does.
	// execEOFs counts them.
	execEOFAfterClose bool
	execEOFFirst      bool
	execEOFs          atomic.Int32
	// cutUp and cutDown, when positive, close the next connection that
	// receives (cutUp) or sends (cutDown) more than that many bytes;
	// each once, and only connections accepted since the last armCut.
	cutUp, cutDown atomic.Int64
	cutGen         atomic.Int64
	cuts           atomic.Int32

	mu      sync.Mutex
	conns   []net.Conn
	cutDone []chan struct{} // closed when a cut connection's requests ended
	wg      sync.WaitGroup
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
	return newTestServerConfig(t, handlers, nil)
}

// newTestServerConfig is newTestServer with configure, when not nil,
// called on the server's SSH configuration before it serves.
func newTestServerConfig(t *testing.T, handlers *sftp.Handlers, configure func(*ssh.ServerConfig)) *testServer {
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
	if configure != nil {
		configure(cfg)
	}
	ts.wg.Add(1)
	go func() {
		defer ts.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cc := &cutConn{Conn: c, ts: ts, gen: ts.cutGen.Load(), done: make(chan struct{})}
			ts.mu.Lock()
			ts.conns = append(ts.conns, cc)
			// A connection that was cut ends its requests before a
			// later one is served, as a real server's session ends
			// with its connection: a write of the dead session never
			// lands after the next session opened the file.
			wait := append([]chan struct{}(nil), ts.cutDone...)
			ts.mu.Unlock()
			ts.wg.Add(1)
			go func() {
				defer ts.wg.Done()
				defer close(cc.done)
				for _, d := range wait {
					<-d
				}
				ts.serveConn(cc, cfg)
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
	// For execEOFAfterClose and execEOFFirst: channels closed (but those
	// closed for an EOF), and how many an exec has seen.
	var chanCloses, closesSeen, execsSeen atomic.Int32
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
		var eof atomic.Bool
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer ch.Close()
			defer close(closed)
			defer func() {
				if !eof.Load() {
					chanCloses.Add(1)
				}
			}()
			for req := range creqs {
				if req.Type == "exec" && (ts.execEOFAfterClose || ts.execEOFFirst) {
					first := execsSeen.Add(1) == 1
					// Let the closes that came before this request be
					// counted (they are handled on other goroutines).
					time.Sleep(30 * time.Millisecond)
					n := chanCloses.Load()
					if ts.execEOFFirst && first || ts.execEOFAfterClose && closesSeen.Swap(n) != n {
						ts.execEOFs.Add(1)
						eof.Store(true)
						_ = ch.Close() // no answer to the request, no exit status
						continue
					}
				}
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
	var rwc io.ReadWriteCloser = ch
	if ts.wrapSFTP != nil {
		rwc = ts.wrapSFTP(ch)
	}
	if ts.handlers != nil {
		srv := sftp.NewRequestServer(rwc, *ts.handlers)
		_ = srv.Serve()
		_ = srv.Close()
		return
	}
	srv, err := sftp.NewServer(rwc, sftp.WithServerWorkingDirectory(ts.dir))
	if err != nil {
		return
	}
	_ = srv.Serve()
	_ = srv.Close()
}

// cutConn is a server's connection, closed once when it passes the
// server's cutUp or cutDown.
type cutConn struct {
	net.Conn
	ts            *testServer
	gen           int64
	read, written atomic.Int64
	done          chan struct{} // closed when the connection was served
}

// armCut sets cutUp and cutDown for the connections accepted from now on.
func (ts *testServer) armCut(up, down int64) {
	ts.cutGen.Add(1)
	ts.cutUp.Store(up)
	ts.cutDown.Store(down)
}

func (c *cutConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.check(&c.ts.cutUp, c.read.Add(int64(n)))
	return n, err
}

func (c *cutConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.check(&c.ts.cutDown, c.written.Add(int64(n)))
	return n, err
}

func (c *cutConn) check(limit *atomic.Int64, n int64) {
	if l := limit.Load(); l > 0 && n > l && c.gen == c.ts.cutGen.Load() && limit.CompareAndSwap(l, 0) {
		c.ts.mu.Lock()
		c.ts.cutDone = append(c.ts.cutDone, c.done)
		c.ts.mu.Unlock()
		c.ts.cuts.Add(1)
		_ = c.Conn.Close()
	}
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

	// truncOnOpen: every open for writing truncates the file, whatever
	// its flags say. fromStart: every handle opened for writing takes
	// writes only in order from offset 0 (others fail with "Illegal
	// seek"), as rclone serve sftp without a VFS cache does.
	truncOnOpen bool
	fromStart   bool
	// wireOrder: a write that does not arrive on the wire where the
	// previous write on its handle ended fails with "Illegal seek", as
	// on a server that streams uploads into objects (the sniffer, set as
	// the test server's wrapSFTP, decides). seqOnly: a write that
	// starts while another write of its handle runs, or not where the
	// last one ended (for the first: where the file ended when it was
	// last opened or truncated), fails so; the first write of a handle
	// takes seqDelay.
	wireOrder bool
	seqOnly   bool
	seqDelay  time.Duration
	verdicts  map[int64][]bool             // by offset, in arrival order: in order?
	starts    map[string]int64             // by path: the size at the last open or truncation
	writeIDs  map[*sniffer]map[uint32]bool // write requests not answered yet
	inflight  int                          // write requests not answered yet
	// maxInflight is the most write requests seen unanswered at once;
	// outOfOrder counts writes the wire saw out of order, rejected
	// those refused (either mode), writes those received.
	maxInflight, outOfOrder, rejected, writes int
}

// sniff is the test server's wrapSFTP for wireOrder, and the counters.
func (f *faultFS) sniff(rwc io.ReadWriteCloser) io.ReadWriteCloser {
	return &sniffer{ReadWriteCloser: rwc, f: f}
}

// resetCounts zeroes maxInflight, outOfOrder, rejected and writes.
func (f *faultFS) resetCounts() {
	f.mu.Lock()
	f.maxInflight, f.outOfOrder, f.rejected, f.writes = 0, 0, 0, 0
	f.mu.Unlock()
}

func (f *faultFS) counts() (maxInflight, outOfOrder, rejected, writes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxInflight, f.outOfOrder, f.rejected, f.writes
}

// sniffer parses the SFTP packets of a channel as they pass.
type sniffer struct {
	io.ReadWriteCloser
	f       *faultFS
	in, out []byte           // partial packets
	expect  map[string]int64 // by handle: where the next write must be
}

func (s *sniffer) Read(p []byte) (int, error) {
	n, err := s.ReadWriteCloser.Read(p)
	s.in = packets(append(s.in, p[:n]...), s.request)
	return n, err
}

func (s *sniffer) Write(p []byte) (int, error) {
	s.out = packets(append(s.out, p...), s.reply) // the SFTP server writes from one goroutine at a time
	return s.ReadWriteCloser.Write(p)
}

// packets calls fn with the type and body of every whole packet in b and
// returns the rest.
func packets(b []byte, fn func(typ byte, body []byte)) []byte {
	for len(b) >= 5 {
		n := int(binary.BigEndian.Uint32(b))
		if len(b) < 4+n {
			break
		}
		fn(b[4], b[5:4+n])
		b = b[4+n:]
	}
	return append([]byte(nil), b...)
}

// request sees a request arrive.
func (s *sniffer) request(typ byte, body []byte) {
	if typ != 6 { // SSH_FXP_WRITE
		return
	}
	id := binary.BigEndian.Uint32(body)
	hl := binary.BigEndian.Uint32(body[4:])
	handle := string(body[8 : 8+hl])
	off := int64(binary.BigEndian.Uint64(body[8+hl:]))
	n := int64(binary.BigEndian.Uint32(body[16+hl:]))
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.writeIDs == nil {
		f.verdicts, f.writeIDs = map[int64][]bool{}, map[*sniffer]map[uint32]bool{}
	}
	if f.writeIDs[s] == nil {
		f.writeIDs[s], s.expect = map[uint32]bool{}, map[string]int64{}
	}
	f.writes++
	f.writeIDs[s][id] = true
	f.inflight++
	f.maxInflight = max(f.maxInflight, f.inflight)
	want, seen := s.expect[handle]
	ok := !seen || want == off
	if ok {
		s.expect[handle] = off + n
	} else {
		f.outOfOrder++
	}
	if f.wireOrder {
		f.verdicts[off] = append(f.verdicts[off], ok)
	}
}

// reply sees a reply leave.
func (s *sniffer) reply(typ byte, body []byte) {
	if typ != 101 { // SSH_FXP_STATUS
		return
	}
	id := binary.BigEndian.Uint32(body)
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.writeIDs[s][id] {
		delete(f.writeIDs[s], id)
		f.inflight--
	}
}

var errIllegalSeek = errors.New("Illegal seek")

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
	if p.f.truncOnOpen {
		r.Flags |= 0x10 // SSH_FXF_TRUNC
	}
	p.f.mu.Unlock()
	w, err := p.f.inner.FilePut.Filewrite(r)
	if err != nil {
		return nil, err
	}
	fw := &faultWriterAt{f: p.f, w: w, path: r.Filepath, end: -1}
	p.f.mu.Lock()
	if p.f.starts == nil {
		p.f.starts = map[string]int64{}
	}
	p.f.starts[r.Filepath] = fw.size()
	p.f.mu.Unlock()
	return fw, nil
}

type faultWriterAt struct {
	f    *faultFS
	w    io.WriterAt
	path string
	// For seqOnly, guarded by f.mu: a write runs; where the last one
	// ended (-1: none yet, the end of the file). For fromStart: where
	// the next write must start.
	busy bool
	end  int64
	next int64
}

// size is the size of the file written, when the handler tells.
func (w *faultWriterAt) size() int64 {
	if fi, ok := w.w.(interface{ Size() int64 }); ok {
		return fi.Size()
	}
	return 0
}

func (w *faultWriterAt) WriteAt(b []byte, off int64) (int, error) {
	f := w.f
	f.mu.Lock()
	if f.failAt >= 0 && off <= f.failAt && f.failAt < off+int64(len(b)) {
		err := f.failErr
		f.mu.Unlock()
		return 0, err
	}
	if f.wireOrder {
		v := f.verdicts[off]
		if len(v) > 0 {
			f.verdicts[off] = v[1:]
			if !v[0] {
				f.rejected++
				f.mu.Unlock()
				return 0, errIllegalSeek
			}
		}
	}
	if f.fromStart {
		if off != w.next {
			f.rejected++
			f.mu.Unlock()
			return 0, errIllegalSeek
		}
		w.next += int64(len(b))
	}
	first := false
	if f.seqOnly {
		// (Not the file's size now: a write of a connection that was
		// cut may land after the resume cut the file back.)
		if w.end < 0 && off != f.starts[w.path] || w.busy || w.end >= 0 && off != w.end {
			f.rejected++
			f.mu.Unlock()
			return 0, errIllegalSeek
		}
		w.busy, first = true, w.end < 0
	}
	f.mu.Unlock()
	if first {
		time.Sleep(f.seqDelay)
	}
	n, err := w.w.WriteAt(b, off)
	if f.seqOnly {
		f.mu.Lock()
		w.busy = false
		if err == nil {
			w.end = off + int64(n)
		}
		f.mu.Unlock()
	}
	return n, err
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

func (c faultCmd) Filecmd(r *sftp.Request) error {
	if r.Method == "Setstat" && r.AttrFlags().Size {
		c.f.mu.Lock()
		if c.f.starts != nil {
			c.f.starts[r.Filepath] = int64(r.Attributes().Size)
		}
		c.f.mu.Unlock()
	}
	return c.f.inner.FileCmd.Filecmd(r)
}

func (c faultCmd) PosixRename(r *sftp.Request) error {
	return c.f.inner.FileCmd.(sftp.PosixRenameFileCmder).PosixRename(r)
}

func (c faultCmd) StatVFS(r *sftp.Request) (*sftp.StatVFS, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	return &sftp.StatVFS{Bsize: 4096, Frsize: 4096, Blocks: 1 << 30, Bfree: c.f.freeBlocks, Bavail: c.f.freeBlocks}, nil
}
