// Package ftp implements protocol.Session over FTP and FTPS (explicit and
// implicit TLS) with github.com/jlaffaye/ftp.
//
// One Session is one control connection with one login. Every connection,
// control and data, is opened by a single dial function that sets TCP
// keepalive, wraps data connections in TLS (resuming the control
// connection's TLS session, which vsftpd's require_ssl_reuse demands) and
// always connects data connections to the control connection's host: the
// address a server names in its PASV reply is never used, only its port.
// EPSV is tried first, with PASV as the fallback. Transfers are binary
// (TYPE I is sent by the login, before any RETR or STOR).
//
// Paths are sent as given, relative to the login directory unless they
// start with "/"; CR, LF and NUL are refused before anything is sent.
//
// Errors are *protocol.Error values classified by reply code (see the
// protocol package for the kinds). FTP cannot truncate a file, so Session
// does not implement protocol.Truncater, and a resumed STOR (REST n) does
// not shorten a remote file longer than n + the bytes written.
//
// The server is not trusted. A reply longer than 64 KiB or 512 lines ends
// the session with an error matching protocol.ErrProtocol (textproto would
// keep it all in memory), as does a size that is negative or no number, and
// a greeting in SSH. What errors and debug logs show of the server's words
// is cut to protocol.MaxServerText bytes, escaped, and rid of the password
// (see protocol.ServerText).
package ftp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/textproto"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jlaffaye/ftp"

	"github.com/openhaul/haul/protocol"
)

var (
	errBusy          = errors.New("ftp session busy: a reader or writer is still open")
	errClosed        = errors.New("ftp session closed")
	errOffsetPastEnd = errors.New("offset past the end of the remote file")
	errRangeAtZero   = errors.New("a range write at offset 0 would truncate the file (STOR)")
	errNegative      = errors.New("negative offset")
	errShortStream   = errors.New("data stream ended before the expected size")
	errLongStream    = errors.New("data stream longer than the size reported by SIZE")
	errAborted       = errors.New("transfer aborted")
	errBothTLS       = errors.New("both explicit and implicit TLS requested")
)

// Session is an FTP or FTPS connection implementing protocol.Session.
// Like every protocol.Session it performs one operation at a time; Close may
// be called from another goroutine to abort a blocked call.
type Session struct {
	opts   options
	addr   string
	tlsCfg *tls.Config // nil without TLS
	tap    *wiretap
	log    *slog.Logger
	c      *ftp.ServerConn

	mu       sync.Mutex
	ctrl     net.Conn // raw TCP control connection
	ctrlHost string   // IP of the control connection's peer
	data     net.Conn // raw TCP connection of the current transfer
	dialCtx  context.Context
	busy     bool
	stop     func() bool // afterCancel stop of the operation in progress
	writer   *writer
	home     string // login directory, fetched lazily
	hashes   hashSupport
	dead     chan struct{}
	deadErr  error
	closed   bool

	// restRefused is the server's permanent refusal of REST, once seen
	// (see rest.go). Used only inside an operation, like home.
	restRefused *restRefusal
}

var (
	_ protocol.Session  = (*Session)(nil)
	_ protocol.Checker  = (*Session)(nil)
	_ protocol.ModTimer = (*Session)(nil)
	_ protocol.Sizer    = (*Session)(nil)
)

// Dial connects to addr ("host:port"), negotiates TLS when asked, and logs
// in once. The login is never retried: a refused login is an error matching
// protocol.ErrAuth. A host name DNS does not know matches fs.ErrNotExist; a
// server that greets in SSH (an sftp port) matches protocol.ErrProtocol at
// once; a refused connection is protocol.ErrTransient. ctx bounds the
// connect, greeting, TLS handshake and login; it is not retained after Dial
// returns.
func Dial(ctx context.Context, addr string, opts ...Option) (*Session, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, &protocol.Error{Op: "dial", Err: err}
		}
	}
	if o.tlsSet > 1 {
		return nil, &protocol.Error{Op: "dial", Err: errBothTLS}
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, &protocol.Error{Op: "dial", Err: err}
	}
	s := &Session{
		opts: o,
		addr: addr,
		tap:  newWiretap(o.logger, o.password),
		log:  o.logger,
		dead: make(chan struct{}),
	}
	if o.tlsMode != tlsNone {
		cfg := &tls.Config{}
		if o.tlsConfig != nil {
			cfg = o.tlsConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		if cfg.ClientSessionCache == nil {
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
		}
		s.tlsCfg = cfg
	}
	fopts := []ftp.DialOption{
		ftp.DialWithDialFunc(s.dialConn),
		ftp.DialWithShutTimeout(o.shutTimeout),
		ftp.DialWithDisabledEPSV(o.disableEPSV),
		ftp.DialWithDebugOutput(s.tap),
	}
	switch o.tlsMode {
	case tlsExplicit:
		fopts = append(fopts, ftp.DialWithExplicitTLS(s.tlsCfg))
	case tlsImplicit:
		// jlaffaye does not wrap DialFunc connections; the option only
		// makes Login send PBSZ 0 / PROT P. dialConn does the TLS.
		fopts = append(fopts, ftp.DialWithTLS(s.tlsCfg))
	}

	f := failure{op: "dial"}
	if err := s.begin(ctx, f); err != nil {
		return nil, err
	}
	c, err := ftp.Dial(addr, fopts...)
	if err != nil {
		err = s.fail(ctx, s.verbOf(f), err)
		s.end()
		_ = s.Close()
		return nil, err
	}
	s.c = c
	f.op = "login"
	if err := c.Login(o.user, o.password); err != nil {
		var te *textproto.Error
		if verb, code := s.tap.last(); !errors.As(err, &te) && code >= 300 && ctx.Err() == nil {
			// jlaffaye reports an unexpected USER reply by its text
			// only; give it back its code.
			err = &textproto.Error{Code: code, Msg: err.Error()}
			f.verb = verb
		}
		err = s.fail(ctx, s.verbOf(f), err)
		s.end()
		_ = s.Close()
		return nil, err
	}
	s.hashes = parseHashFeatures(s.tap.features())
	s.end()
	s.clearDeadline()
	if s.log != nil {
		s.log.Debug("ftp session ready", "addr", addr, "tls", o.tlsMode != tlsNone)
	}
	return s, nil
}

// Dialer returns a protocol.Dialer that calls Dial(ctx, addr, opts...).
func Dialer(addr string, opts ...Option) protocol.Dialer {
	return func(ctx context.Context) (protocol.Session, error) {
		s, err := Dial(ctx, addr, opts...)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}

// Conns returns the raw TCP control connection and the raw TCP connection
// of the transfer in progress (nil when none), for diagnostics such as
// reading back socket options. Callers must not read, write or close them.
func (s *Session) Conns() (control, data net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ctrl, s.data
}

// dialConn is the one dial function used for the control connection (the
// first call) and every data connection.
func (s *Session) dialConn(network, address string) (net.Conn, error) {
	s.mu.Lock()
	ctx, first, dead, host := s.dialCtx, s.ctrl == nil, s.deadErr, s.ctrlHost
	var sent *atomic.Int64
	var accepted *atomic.Bool
	if s.writer != nil {
		sent, accepted = &s.writer.sent, &s.writer.accept
	}
	s.mu.Unlock()
	if dead != nil {
		return nil, dead
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if !first {
		// Whatever host the server named, connect to the control host.
		_, port, err := net.SplitHostPort(address)
		if err != nil {
			return nil, err
		}
		address = net.JoinHostPort(host, port)
	}
	d := net.Dialer{Timeout: s.opts.dialTimeout, KeepAliveConfig: s.opts.keepAlive, Control: controlSocket}
	if !s.opts.keepAlive.Enable {
		d.KeepAlive = -1
	}
	raw, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.deadErr != nil {
		s.mu.Unlock()
		_ = raw.Close()
		return nil, net.ErrClosed
	}
	if first {
		s.ctrl = raw
		if ta, ok := raw.RemoteAddr().(*net.TCPAddr); ok {
			s.ctrlHost = ta.IP.String()
		}
	} else {
		s.data = raw
	}
	s.mu.Unlock()

	if first {
		// Bound greeting, AUTH TLS and login; cleared after Login.
		_ = raw.SetDeadline(time.Now().Add(s.opts.dialTimeout))
		if s.opts.tlsMode == tlsImplicit {
			tc := tls.Client(raw, s.tlsCfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = raw.Close()
				return nil, s.notTLS(err)
			}
			return tc, nil
		}
		return raw, nil
	}
	var conn net.Conn = raw
	if s.tlsCfg != nil {
		// No handshake here: servers start TLS on a data connection
		// only after RETR/STOR, which is sent after this dial. The
		// first Read or Write (or StorFrom's Handshake for an empty
		// file) performs it, resuming the control session.
		conn = tls.Client(raw, s.tlsCfg)
	}
	return &dataConn{Conn: conn, raw: raw, sent: sent, accepted: accepted, linger: s.opts.shutTimeout}, nil
}

// notTLS turns a TLS handshake that failed because the server greeted in
// SSH into the error an FTP greeting in SSH gets; other errors are
// returned as they are.
func (s *Session) notTLS(err error) error {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) && bytes.HasPrefix(rh.RecordHeader[:], []byte("SSH-")) {
		return &replyError{msg: "the server speaks SSH, not FTP over TLS: use an sftp:// URL",
			first: string(rh.RecordHeader[:]) + "...", secret: s.opts.password}
	}
	return err
}

// begin marks the start of an operation bound to ctx: a cancelled ctx
// closes every connection, unblocking whatever is in progress.
func (s *Session) begin(ctx context.Context, f failure) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return f.wrap(errClosed)
	}
	if s.deadErr != nil {
		return s.shown(f.wrap(fmt.Errorf("ftp session unusable: %w", s.deadErr)))
	}
	if s.busy {
		return &protocol.Error{Op: f.op, Path: f.path, Err: errBusy}
	}
	if err := ctx.Err(); err != nil {
		return f.wrap(err)
	}
	s.busy = true
	s.dialCtx = ctx
	s.stop = afterCancel(ctx, func() { s.kill(context.Cause(ctx)) })
	return nil
}

// afterCancel is context.AfterFunc(ctx, f) whose stop also waits for f when
// ctx fired first, and gives every caller the same answer: false when f
// ran (ctx was done before the first stop), true when it never will.
// context.AfterFunc runs f in a goroutine of its own, so without the wait
// whoever calls stop after a cancellation would race that goroutine.
func afterCancel(ctx context.Context, f func()) (stop func() bool) {
	ran := make(chan struct{})
	stopAF := context.AfterFunc(ctx, func() {
		defer close(ran)
		f()
	})
	var once sync.Once
	var stopped bool
	return func() bool {
		once.Do(func() {
			stopped = stopAF()
			if !stopped {
				<-ran
			}
		})
		return stopped
	}
}

// beginTransfer checks a transfer's path and offset (f.path, f.offset),
// then begins it like begin.
func (s *Session) beginTransfer(ctx context.Context, f failure) error {
	if err := protocol.CheckPath(f.path); err != nil {
		return err
	}
	if f.offset < 0 {
		return &protocol.Error{Op: f.op, Path: f.path, Err: errNegative}
	}
	return s.begin(ctx, f)
}

// end marks the end of the operation started by begin. It reports whether
// the operation's ctx was cancelled before it ended; the session has then
// been killed (by the time end returns, not merely soon after).
func (s *Session) end() (cancelled bool) {
	s.mu.Lock()
	stop := s.stop
	s.busy, s.dialCtx, s.stop, s.writer = false, nil, nil, nil
	s.mu.Unlock()
	return stop != nil && !stop()
}

// abortIfCancelled kills the session at once when ctx is done and reports
// whether it did. The AfterFunc set by begin does the same, but in a
// goroutine that may not have run yet: a reader or writer that decides its
// verdict must not depend on it.
func (s *Session) abortIfCancelled(ctx context.Context) bool {
	if ctx.Err() == nil {
		return false
	}
	s.kill(context.Cause(ctx))
	return true
}

// kill makes the session unusable and closes its connections.
func (s *Session) kill(cause error) {
	s.mu.Lock()
	if s.deadErr == nil {
		s.deadErr = cause
		close(s.dead)
	}
	ctrl, data := s.ctrl, s.data
	s.mu.Unlock()
	if data != nil {
		_ = data.Close()
	}
	if ctrl != nil {
		_ = ctrl.Close()
	}
}

// clearDeadline removes the deadline jlaffaye (shut timeout) or Dial left
// on the control connection, and forgets the finished data connection.
func (s *Session) clearDeadline() {
	s.mu.Lock()
	ctrl := s.ctrl
	s.data = nil
	s.mu.Unlock()
	if ctrl != nil {
		_ = ctrl.SetDeadline(time.Time{})
	}
}

// verbOf fills f.verb with the last command seen on the wire.
func (s *Session) verbOf(f failure) failure {
	if f.verb == "" {
		f.verb, _ = s.tap.last()
	}
	return f
}

// wrapErr classifies err; a done ctx wins over the error it caused. The
// server's text in it is shown as protocol.ServerText makes it.
func (s *Session) wrapErr(ctx context.Context, f failure, err error) error {
	if err == nil {
		return nil
	}
	if ctx != nil && ctx.Err() != nil {
		return f.wrap(context.Cause(ctx))
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return s.shown(f.wrap(fmt.Errorf("%w: %w", errClosed, err)))
	}
	return s.shown(f.wrap(err))
}

// shown returns err, a *protocol.Error, with the text of its cause (which
// quotes the server: replies, greetings, numbers it could not parse) cut,
// escaped and rid of the password by protocol.ServerText. errors.Is and
// errors.As still see the cause.
func (s *Session) shown(err error) error {
	pe, ok := err.(*protocol.Error)
	if !ok || pe.Err == nil {
		return err
	}
	if _, done := pe.Err.(*shownError); done {
		return err
	}
	raw := pe.Err.Error()
	text := protocol.ServerText(raw, s.opts.password)
	if text == raw {
		return err
	}
	cp := *pe
	cp.Err = &shownError{err: pe.Err, text: text}
	return &cp
}

// fail is wrapErr that also kills the session when err leaves the control
// connection in an unknown state (no complete reply was read).
func (s *Session) fail(ctx context.Context, f failure, err error) error {
	if err == nil {
		return nil
	}
	if desync(err) {
		s.kill(err)
	}
	return s.wrapErr(ctx, f, err)
}

// desync reports whether err leaves the control connection unusable: a
// transport error with no reply read, a malformed or unbounded reply, or
// 421.
func desync(err error) bool {
	var pe textproto.ProtocolError
	var re *replyError
	if errors.As(err, &pe) || errors.As(err, &re) {
		return true
	}
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code == 421
	}
	return protocol.Classify(err) == protocol.ErrTransient || errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded)
}

func replyCode(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

func unsupported(err error) bool {
	switch replyCode(err) {
	case 500, 502, 504:
		return true
	}
	return false
}

// Stat returns the size (SIZE, in binary mode), the modification time (MDTM,
// when the server offers it) and whether path is a directory (MLST, or a
// CWD probe on servers without MLST). A missing path matches fs.ErrNotExist;
// a size that is negative or no number matches protocol.ErrProtocol.
func (s *Session) Stat(ctx context.Context, path string) (protocol.FileInfo, error) {
	f := failure{op: "stat", path: path}
	if err := protocol.CheckPath(path); err != nil {
		return protocol.FileInfo{}, err
	}
	if err := s.begin(ctx, f); err != nil {
		return protocol.FileInfo{}, err
	}
	defer s.end()
	var fi protocol.FileInfo
	size, err := s.fileSize(path)
	if err != nil {
		code := replyCode(err)
		if code != 550 && !unsupported(err) {
			return fi, s.fail(ctx, s.verbOf(f), err)
		}
		return s.statFallback(ctx, f, path, err)
	}
	fi.Size = size
	if s.c.IsGetTimeSupported() {
		t, err := s.c.GetTime(path)
		switch {
		case err == nil:
			fi.ModTime = t
		case desync(err):
			return fi, s.fail(ctx, s.verbOf(f), err)
		}
	}
	return fi, nil
}

// Size returns path's size by SIZE alone (binary mode). A missing path,
// or a directory (vsftpd answers both 550), matches fs.ErrNotExist; a
// size that is negative or no number, protocol.ErrProtocol.
func (s *Session) Size(ctx context.Context, path string) (int64, error) {
	f := failure{op: "stat", path: path, verb: "SIZE"}
	if err := protocol.CheckPath(path); err != nil {
		return 0, err
	}
	if err := s.begin(ctx, f); err != nil {
		return 0, err
	}
	defer s.end()
	size, err := s.fileSize(path)
	return size, s.fail(ctx, f, err)
}

// ModTime returns path's modification time by MDTM alone. A missing path
// (550) matches fs.ErrNotExist; a server without MDTM, or one that does not
// answer it for path, protocol.ErrUnsupported.
func (s *Session) ModTime(ctx context.Context, path string) (time.Time, error) {
	f := failure{op: "stat", path: path, verb: "MDTM"}
	if err := protocol.CheckPath(path); err != nil {
		return time.Time{}, err
	}
	if !s.c.IsGetTimeSupported() {
		return time.Time{}, &protocol.Error{Op: "stat", Path: path, Kind: protocol.ErrUnsupported,
			Err: errors.New("the server offers no MDTM")}
	}
	if err := s.begin(ctx, f); err != nil {
		return time.Time{}, err
	}
	defer s.end()
	t, err := s.c.GetTime(path)
	return t, s.fail(ctx, f, err)
}

// statFallback handles a SIZE refusal: MLST where offered, else a CWD probe
// to tell a directory from a missing file.
func (s *Session) statFallback(ctx context.Context, f failure, path string, sizeErr error) (protocol.FileInfo, error) {
	var fi protocol.FileInfo
	e, err := s.c.GetEntry(path)
	switch {
	case err == nil && e.Size > math.MaxInt64:
		return fi, s.wrapErr(ctx, failure{op: f.op, path: path, verb: "MLST"},
			&sizeError{verb: "MLST", reply: strconv.FormatUint(e.Size, 10)})
	case err == nil:
		fi.Size = int64(e.Size)
		fi.ModTime = e.Time
		fi.IsDir = e.Type == ftp.EntryTypeFolder
		return fi, nil
	case replyCode(err) == 550:
		return fi, s.wrapErr(ctx, failure{op: f.op, path: path, verb: "MLST"}, err)
	case !unsupported(err):
		return fi, s.fail(ctx, s.verbOf(f), err)
	}
	// No MLST.
	if unsupported(sizeErr) {
		return fi, s.wrapErr(ctx, failure{op: f.op, path: path, verb: "SIZE"}, sizeErr)
	}
	if s.home == "" {
		home, err := s.c.CurrentDir()
		if err != nil {
			return fi, s.fail(ctx, s.verbOf(f), err)
		}
		s.home = home
	}
	if err := s.c.ChangeDir(path); err != nil {
		if desync(err) {
			return fi, s.fail(ctx, s.verbOf(f), err)
		}
		// Not a directory either: report the SIZE refusal (550).
		return fi, s.wrapErr(ctx, failure{op: f.op, path: path, verb: "SIZE"}, sizeErr)
	}
	if err := s.c.ChangeDir(s.home); err != nil {
		// The working directory is now wrong: later relative paths
		// would be too.
		s.kill(err)
		return fi, s.wrapErr(ctx, s.verbOf(f), err)
	}
	fi.IsDir = true
	return fi, nil
}

// sizeError reports a size no server may send: negative, too large or not
// a number. It matches protocol.ErrProtocol.
type sizeError struct {
	verb  string // "SIZE", "MLST"
	reply string // the size as the server wrote it
}

func (e *sizeError) Error() string {
	return fmt.Sprintf("%s answered %q, which is not a file size", e.verb, e.reply)
}

// Is makes a sizeError match protocol.ErrProtocol.
func (e *sizeError) Is(target error) bool { return target == protocol.ErrProtocol }

// fileSize sends SIZE. A reply that is not a size (a negative number, or
// no decimal number at all) is a *sizeError.
func (s *Session) fileSize(path string) (int64, error) {
	size, err := s.c.FileSize(path)
	var ne *strconv.NumError
	switch {
	case errors.As(err, &ne):
		return 0, &sizeError{verb: "SIZE", reply: ne.Num}
	case err == nil && size < 0:
		return 0, &sizeError{verb: "SIZE", reply: strconv.FormatInt(size, 10)}
	}
	return size, err
}

// Check sends NOOP: nil means the control connection still answers in
// step, so the session can carry the next transfer.
func (s *Session) Check(ctx context.Context) error {
	f := failure{op: "check"}
	if err := s.begin(ctx, f); err != nil {
		return err
	}
	defer s.end()
	if err := s.c.NoOp(); err != nil {
		return s.fail(ctx, s.verbOf(f), err)
	}
	return nil
}

// Rename renames from to to with RNFR/RNTO. Whether an existing to is
// replaced depends on the server (vsftpd, proftpd and pure-ftpd replace it).
func (s *Session) Rename(ctx context.Context, from, to string) error {
	f := failure{op: "rename", path: from}
	if err := protocol.CheckPath(from); err != nil {
		return err
	}
	if err := protocol.CheckPath(to); err != nil {
		return err
	}
	if err := s.begin(ctx, f); err != nil {
		return err
	}
	defer s.end()
	err := s.c.Rename(from, to)
	return s.fail(ctx, s.verbOf(f), err)
}

// Remove deletes the file at path with DELE.
func (s *Session) Remove(ctx context.Context, path string) error {
	f := failure{op: "remove", path: path}
	if err := protocol.CheckPath(path); err != nil {
		return err
	}
	if err := s.begin(ctx, f); err != nil {
		return err
	}
	defer s.end()
	err := s.c.Delete(path)
	return s.fail(ctx, s.verbOf(f), err)
}

// Close sends QUIT (best effort, bounded by a short deadline, and only when
// no transfer is in progress), then closes every connection. It waits for
// an open writer's goroutine to finish. Close is idempotent and safe to
// call from another goroutine to abort a blocked operation.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	quit := s.deadErr == nil && !s.busy && s.c != nil
	ctrl, w, stop := s.ctrl, s.writer, s.stop
	s.mu.Unlock()
	if quit && ctrl != nil {
		_ = ctrl.SetDeadline(time.Now().Add(quitTimeout))
		_ = s.c.Quit()
	}
	s.kill(errClosed)
	if w != nil {
		<-w.done
	}
	if stop != nil {
		stop()
	}
	return nil
}

// dataConn is a data connection as handed to jlaffaye: it counts the bytes
// written (the writer's Acked), keeps the kernel's copy path for files, and
// exposes the TLS handshake jlaffaye calls for empty uploads.
type dataConn struct {
	net.Conn               // *net.TCPConn or *tls.Conn
	raw      net.Conn      // the TCP connection under Conn
	sent     *atomic.Int64 // nil for downloads
	accepted *atomic.Bool  // the server accepted the upload (150); nil for downloads
	linger   time.Duration // bound of the drain in Close; 0: none
}

// Close ends an upload gracefully: close_notify (TLS), then a TCP half
// close, then it reads whatever the server still sends until it closes its
// side. Closing a socket that holds unread data (TLS 1.3 session tickets the
// server sent on the data connection) makes the kernel send a reset instead
// of a FIN, and the server then discards the tail of the upload it had not
// read yet and answers 426 (reported against vsftpd and proftpd with TLS 1.3;
// observed here with vsftpd: a 512 MiB upload lost its last 3.6 MiB).
// A download, or an upload the server refused (it would never close its
// side), is simply closed: that also aborts an unfinished transfer.
func (c *dataConn) Close() error {
	if c.accepted != nil && c.accepted.Load() {
		if tc, ok := c.Conn.(*tls.Conn); ok {
			_ = tc.CloseWrite()
		}
		if hc, ok := c.raw.(interface{ CloseWrite() error }); ok && hc.CloseWrite() == nil {
			if c.linger > 0 {
				_ = c.raw.SetReadDeadline(time.Now().Add(c.linger))
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(c.raw, maxDrain))
		}
	}
	return c.Conn.Close()
}

// maxDrain bounds what Close reads from an upload's data connection.
const maxDrain = 1 << 20

func (c *dataConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.sent != nil {
		c.sent.Add(int64(n))
	}
	return n, err
}

// ReadFrom hands files to the socket's own ReadFrom (sendfile/splice);
// anything else is copied through Write so progress is counted as it goes.
func (c *dataConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok && kernelCopyable(r) {
		n, err := rf.ReadFrom(r)
		if c.sent != nil {
			c.sent.Add(n)
		}
		return n, err
	}
	return io.Copy(writerOnly{c}, r)
}

// Handshake performs the TLS handshake of a TLS data connection (nothing
// for a clear one).
func (c *dataConn) Handshake() error {
	if h, ok := c.Conn.(interface{ Handshake() error }); ok {
		return h.Handshake()
	}
	return nil
}

type writerOnly struct{ io.Writer }

func kernelCopyable(r io.Reader) bool {
	switch r := r.(type) {
	case *os.File:
		return true
	case *io.LimitedReader:
		_, ok := r.R.(*os.File)
		return ok
	}
	return false
}
