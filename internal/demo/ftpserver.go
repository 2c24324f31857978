package demo

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ftpServer is the demo's in-process FTP server: plain FTP, passive mode
// only, binary only, one user, files under one root directory.
//
// Why not a library: goftp.io/server/v2 (v2.0.3, the module proxy serves
// it) listens for passive data connections on every interface
// (net.JoinHostPort("", port) in its data_socket.go) on ports it picks
// itself, in unexported code no option or command override can replace:
// that breaks "loopback only", and a socket on 0.0.0.0:p keeps the fault
// proxy from listening on 127.0.0.x:p, which it must do to mirror the data
// ports. Its file driver also answers REST n + STOR by appending at the end
// (O_APPEND and a seek from the end) instead of writing at n, SIZE of a
// missing file gets 450 (a transient error to a client) instead of 550 and
// is logged through the standard log package whatever Logger is set, and
// Shutdown leaves its sessions running. (Tried with v2.0.3: after EPSV, ss
// shows the data listener on *:port; REST 4 + STOR "ab" onto "0123456789"
// gives "0123456789ab".) github.com/fclairamb/ftpserverlib
// is refused by the module proxy. The subset a resuming client needs is
// small, so it is written here, and every data path is under our control:
// listeners on 127.0.0.1 only, a fixed pool of passive ports known before
// the fault proxy starts, REST for RETR and STOR (written at the offset,
// never past the end), SIZE, MDTM and XSHA256 (with proftpd's byte range) so
// that haul verifies by the server's hash.
type ftpServer struct {
	root, user, password string
	events               *notifier
	ln                   net.Listener
	pasv                 []*pasvPort

	done chan struct{} // closed by Close

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	next   int // round robin over pasv
	wg     sync.WaitGroup
}

// pasvPort is one passive data port: a listener kept for the server's
// lifetime, lent to one session at a time.
type pasvPort struct {
	ln    net.Listener
	port  int
	conns chan net.Conn // the connection for owner, buffered 1
	// Guarded by ftpServer.mu: the session the port is lent to, its
	// client's address, and whether its one connection came.
	owner     *ftpSession
	peer      net.Addr
	delivered bool
}

// maxLine bounds a command line: a client cannot make the server buffer more.
const maxLine = 4096

// dataWait bounds the wait for a client's data connection after EPSV.
const dataWait = 20 * time.Second

// newFTPServer listens on 127.0.0.1 (a random control port and pasvCount
// random passive ports) and serves root.
func newFTPServer(root, user, password string, pasvCount int, events *notifier) (*ftpServer, error) {
	s := &ftpServer{root: root, user: user, password: password, events: events, conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.ln = ln
	for range pasvCount {
		pl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			s.Close()
			return nil, err
		}
		s.pasv = append(s.pasv, &pasvPort{ln: pl, port: pl.Addr().(*net.TCPAddr).Port, conns: make(chan net.Conn, 1)})
	}
	s.wg.Add(1 + len(s.pasv))
	go s.acceptControl()
	for _, p := range s.pasv {
		go s.acceptData(p)
	}
	return s, nil
}

// port returns the control port.
func (s *ftpServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// pasvPorts returns the passive data ports.
func (s *ftpServer) pasvPorts() []int {
	out := make([]int, len(s.pasv))
	for i, p := range s.pasv {
		out[i] = p.port
	}
	return out
}

// track registers c to be closed by Close; false when already closed.
func (s *ftpServer) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *ftpServer) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	_ = c.Close()
}

// Close stops the server: listeners, sessions, transfers; it waits for all
// of its goroutines.
func (s *ftpServer) Close() {
	s.mu.Lock()
	if !s.closed {
		close(s.done)
	}
	s.closed = true
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if s.ln != nil {
		_ = s.ln.Close()
	}
	for _, p := range s.pasv {
		_ = p.ln.Close()
	}
	for _, c := range conns {
		_ = c.Close()
	}
	s.wg.Wait()
}

func (s *ftpServer) acceptControl() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		if !s.track(c) {
			_ = c.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			sess := &ftpSession{s: s, c: c, r: bufio.NewReaderSize(c, maxLine), cwd: "/", rest: -1}
			sess.serve()
			s.release(sess)
		}()
	}
}

// acceptData hands each connection to p's owner, when it comes from the
// owner's client address; others are closed.
func (s *ftpServer) acceptData(p *pasvPort) {
	defer s.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		ok := p.owner != nil && !p.delivered && sameIP(p.peer, c.RemoteAddr()) && !s.closed
		if ok {
			p.delivered = true // one connection per EPSV
			s.conns[c] = struct{}{}
			p.conns <- c // buffered 1, and empty: delivered was false
		}
		s.mu.Unlock()
		if !ok {
			_ = c.Close()
		}
	}
}

func sameIP(a, b net.Addr) bool {
	ta, ok1 := a.(*net.TCPAddr)
	tb, ok2 := b.(*net.TCPAddr)
	return ok1 && ok2 && ta.IP.Equal(tb.IP)
}

// reserve lends a free passive port to sess.
func (s *ftpServer) reserve(sess *ftpSession) *pasvPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range s.pasv {
		p := s.pasv[s.next%len(s.pasv)]
		s.next++
		if p.owner == nil {
			p.owner, p.peer, p.delivered = sess, sess.c.RemoteAddr(), false
			return p
		}
	}
	return nil
}

// release gives back the passive port sess holds, if any, closing a
// connection that came for it and was not taken.
func (s *ftpServer) release(sess *ftpSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := sess.pasv
	if p == nil {
		return
	}
	sess.pasv = nil
	if p.owner != sess {
		return
	}
	p.owner, p.peer = nil, nil
	select {
	case c := <-p.conns:
		delete(s.conns, c)
		_ = c.Close()
	default:
	}
}

// ftpSession is one control connection.
type ftpSession struct {
	s        *ftpServer
	c        net.Conn
	r        *bufio.Reader
	user     string
	loggedIn bool
	cwd      string    // absolute, slash-separated, under the root
	rest     int64     // the REST offset for the next transfer, -1 none
	pasv     *pasvPort // the port of the last EPSV/PASV
	renameFr string
}

func (f *ftpSession) reply(code int, msg string) error {
	_, err := fmt.Fprintf(f.c, "%d %s\r\n", code, msg)
	return err
}

func (f *ftpSession) serve() {
	if f.reply(220, "haul demo FTP server") != nil {
		return
	}
	for {
		line, err := f.r.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				_ = f.reply(500, "command line too long")
			}
			return
		}
		verb, arg, _ := strings.Cut(strings.TrimRight(string(line), "\r\n"), " ")
		verb = strings.ToUpper(verb)
		if verb != "REST" && verb != "RETR" && verb != "STOR" && verb != "APPE" {
			f.rest = -1
		}
		if !f.command(verb, arg) {
			return
		}
	}
}

// command handles one command; false ends the session.
func (f *ftpSession) command(verb, arg string) bool {
	var err error
	switch verb {
	case "USER":
		f.user, f.loggedIn = arg, false
		err = f.reply(331, "password please")
	case "PASS":
		ok := subtle.ConstantTimeCompare([]byte(f.user), []byte(f.s.user)) == 1
		ok = subtle.ConstantTimeCompare([]byte(arg), []byte(f.s.password)) == 1 && ok
		f.loggedIn = ok
		if ok {
			err = f.reply(230, "logged in")
		} else {
			err = f.reply(530, "login incorrect")
		}
	case "QUIT":
		_ = f.reply(221, "bye")
		return false
	case "NOOP":
		err = f.reply(200, "ok")
	case "SYST":
		err = f.reply(215, "UNIX Type: L8")
	case "FEAT":
		_, err = io.WriteString(f.c, "211-Features:\r\n EPSV\r\n PASV\r\n SIZE\r\n MDTM\r\n REST STREAM\r\n UTF8\r\n XSHA256\r\n211 End\r\n")
	default:
		if !f.loggedIn {
			err = f.reply(530, "not logged in")
			break
		}
		err = f.authed(verb, arg)
	}
	return err == nil
}

// authed handles the commands of a logged-in session.
func (f *ftpSession) authed(verb, arg string) error {
	switch verb {
	case "OPTS":
		if strings.EqualFold(arg, "UTF8 ON") {
			return f.reply(200, "always UTF-8")
		}
		return f.reply(501, "option not supported")
	case "TYPE":
		if strings.EqualFold(arg, "I") || strings.EqualFold(arg, "L 8") {
			return f.reply(200, "binary")
		}
		return f.reply(504, "binary (TYPE I) only")
	case "MODE":
		if strings.EqualFold(arg, "S") {
			return f.reply(200, "stream")
		}
		return f.reply(504, "stream mode only")
	case "STRU":
		if strings.EqualFold(arg, "F") {
			return f.reply(200, "file")
		}
		return f.reply(504, "file structure only")
	case "PWD", "XPWD":
		return f.reply(257, strconv.Quote(f.cwd)+" is the current directory")
	case "CWD", "XCWD", "CDUP":
		if verb == "CDUP" {
			arg = ".."
		}
		p := f.abs(arg)
		fi, err := os.Stat(f.local(p))
		if err != nil || !fi.IsDir() {
			return f.reply(550, "no such directory")
		}
		f.cwd = p
		return f.reply(250, "directory changed")
	case "EPSV", "PASV":
		f.s.release(f)
		if strings.EqualFold(arg, "ALL") {
			return f.reply(200, "EPSV ALL ok")
		}
		p := f.s.reserve(f)
		if p == nil {
			return f.reply(425, "no free passive port")
		}
		f.pasv = p
		if verb == "EPSV" {
			return f.reply(229, fmt.Sprintf("Entering Extended Passive Mode (|||%d|)", p.port))
		}
		return f.reply(227, fmt.Sprintf("Entering Passive Mode (127,0,0,1,%d,%d)", p.port>>8, p.port&0xff))
	case "REST":
		n, err := strconv.ParseInt(arg, 10, 64)
		if err != nil || n < 0 {
			return f.reply(501, "REST needs a byte offset")
		}
		f.rest = n
		return f.reply(350, fmt.Sprintf("restarting at %d", n))
	case "SIZE":
		fi, err := os.Lstat(f.local(f.abs(arg)))
		if err != nil || !fi.Mode().IsRegular() {
			return f.reply(550, "not a regular file")
		}
		return f.reply(213, strconv.FormatInt(fi.Size(), 10))
	case "MDTM":
		fi, err := os.Lstat(f.local(f.abs(arg)))
		if err != nil || !fi.Mode().IsRegular() {
			return f.reply(550, "not a regular file")
		}
		return f.reply(213, fi.ModTime().UTC().Format("20060102150405"))
	case "XSHA256":
		return f.hash(arg)
	case "RETR":
		return f.retr(arg)
	case "STOR", "APPE":
		return f.stor(arg, verb == "APPE")
	case "DELE":
		p := f.local(f.abs(arg))
		if fi, err := os.Lstat(p); err != nil || fi.IsDir() {
			return f.reply(550, "not a file")
		}
		if os.Remove(p) != nil {
			return f.reply(550, "cannot delete")
		}
		return f.reply(250, "deleted")
	case "MKD", "XMKD":
		p := f.abs(arg)
		if os.Mkdir(f.local(p), 0o755) != nil {
			return f.reply(550, "cannot create directory")
		}
		return f.reply(257, strconv.Quote(p)+" created")
	case "RMD", "XRMD":
		if os.Remove(f.local(f.abs(arg))) != nil {
			return f.reply(550, "cannot remove directory")
		}
		return f.reply(250, "removed")
	case "RNFR":
		p := f.abs(arg)
		if _, err := os.Lstat(f.local(p)); err != nil {
			return f.reply(550, "no such file")
		}
		f.renameFr = p
		return f.reply(350, "ready for RNTO")
	case "RNTO":
		from := f.renameFr
		f.renameFr = ""
		if from == "" {
			return f.reply(503, "RNFR first")
		}
		if os.Rename(f.local(from), f.local(f.abs(arg))) != nil {
			return f.reply(550, "cannot rename")
		}
		return f.reply(250, "renamed")
	case "ABOR":
		return f.reply(226, "nothing to abort")
	}
	return f.reply(502, "command not implemented")
}

// abs resolves a client path against the working directory; ".." never
// leaves the root.
func (f *ftpSession) abs(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = f.cwd + "/" + p
	}
	return path.Clean(p)
}

// local maps an absolute client path to the file system.
func (f *ftpSession) local(p string) string {
	return filepath.Join(f.s.root, filepath.FromSlash(p))
}

// dataConn waits for the client's connection to the port of the last EPSV.
func (f *ftpSession) dataConn() (net.Conn, error) {
	p := f.pasv
	if p == nil {
		return nil, errors.New("no EPSV or PASV")
	}
	defer f.s.release(f)
	t := time.NewTimer(dataWait)
	defer t.Stop()
	select {
	case c := <-p.conns:
		return c, nil
	case <-t.C:
		return nil, errors.New("no data connection")
	case <-f.s.done:
		return nil, errors.New("server closing")
	}
}

func (f *ftpSession) retr(arg string) error {
	off := max(f.rest, 0)
	f.rest = -1
	file, err := openRegular(f.local(f.abs(arg)), os.O_RDONLY)
	if err != nil {
		f.s.release(f)
		return f.reply(550, "not a regular file")
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil || off > fi.Size() {
		f.s.release(f)
		return f.reply(554, "restart offset past the end of the file")
	}
	if _, err := file.Seek(off, io.SeekStart); err != nil {
		f.s.release(f)
		return f.reply(451, "seek failed")
	}
	c, err := f.dataConn()
	if err != nil {
		return f.reply(425, err.Error())
	}
	defer f.s.untrack(c)
	if err := f.reply(150, fmt.Sprintf("sending %d bytes", fi.Size()-off)); err != nil {
		return err
	}
	if off > 0 {
		f.s.events.notify(serverEvent{proto: "FTP", offset: off, how: fmt.Sprintf("REST %d + RETR", off)})
	}
	if _, err := io.Copy(c, file); err != nil {
		return f.reply(426, "data connection lost")
	}
	_ = c.Close()
	return f.reply(226, "transfer complete")
}

func (f *ftpSession) stor(arg string, appe bool) error {
	off := f.rest
	f.rest = -1
	p := f.local(f.abs(arg))
	flags := os.O_WRONLY | os.O_CREATE
	if off < 0 && !appe {
		flags |= os.O_TRUNC
	}
	file, err := openRegular(p, flags)
	if err != nil {
		f.s.release(f)
		return f.reply(553, "cannot write there")
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		f.s.release(f)
		return f.reply(451, "stat failed")
	}
	switch {
	case appe:
		off = fi.Size()
	case off > fi.Size():
		// Never leave a hole of zeros (vsftpd does).
		f.s.release(f)
		return f.reply(554, fmt.Sprintf("restart offset %d past the end of the file (%d)", off, fi.Size()))
	case off < 0:
		off = 0
	}
	c, err := f.dataConn()
	if err != nil {
		return f.reply(425, err.Error())
	}
	defer f.s.untrack(c)
	if err := f.reply(150, fmt.Sprintf("receiving at %d", off)); err != nil {
		return err
	}
	if off > 0 {
		how := fmt.Sprintf("REST %d + STOR", off)
		if appe {
			how = fmt.Sprintf("APPE at %d", off)
		}
		f.s.events.notify(serverEvent{proto: "FTP", upload: true, offset: off, how: how})
	}
	// Written at the offset (io.NewOffsetWriter), never appended: a
	// resumed upload replaces what follows the offset.
	_, err = io.Copy(io.NewOffsetWriter(file, off), c)
	if err != nil && !isNetErr(err) {
		return f.reply(451, "write failed")
	}
	if err != nil {
		return f.reply(426, "data connection lost")
	}
	return f.reply(226, "transfer complete")
}

// isNetErr reports an error of the data connection (not of the file).
func isNetErr(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || errors.As(err, &ne)
}

// hash answers XSHA256 path [start end] with the SHA-256 of the bytes
// [start, end) of the file, as proftpd's mod_digest does.
func (f *ftpSession) hash(arg string) error {
	name, start, end := arg, int64(0), int64(-1)
	if fs := strings.Fields(arg); len(fs) >= 3 {
		s, err1 := strconv.ParseInt(fs[len(fs)-2], 10, 64)
		e, err2 := strconv.ParseInt(fs[len(fs)-1], 10, 64)
		if err1 == nil && err2 == nil {
			name = strings.Join(fs[:len(fs)-2], " ")
			start, end = s, e
		}
	}
	name = strings.Trim(name, `"`)
	file, err := openRegular(f.local(f.abs(name)), os.O_RDONLY)
	if err != nil {
		return f.reply(550, "not a regular file")
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return f.reply(451, "stat failed")
	}
	if end < 0 {
		end = fi.Size()
	}
	if start < 0 || end < start || end > fi.Size() {
		return f.reply(501, "invalid byte range")
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(file, start, end-start)); err != nil {
		return f.reply(451, "read failed")
	}
	return f.reply(250, hex.EncodeToString(h.Sum(nil)))
}

// openRegular opens name with flags, refusing anything but a regular file
// (a symbolic link planted in the root is not followed).
func openRegular(name string, flags int) (*os.File, error) {
	if fi, err := os.Lstat(name); err == nil && !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("not a regular file")}
	}
	return os.OpenFile(name, flags|noFollow, 0o644)
}
