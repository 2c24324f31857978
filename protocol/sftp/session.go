// Package sftp implements protocol.Session over SFTP (SSH File Transfer
// Protocol version 3) with github.com/pkg/sftp and golang.org/x/crypto/ssh.
//
// A Session is one TCP connection, one SSH login and one SFTP subsystem.
// Host keys are checked against known_hosts by default; authentication uses
// keys, an SSH agent and/or a password, attempted once per Dial. Reads and
// writes keep several requests in flight (WithConcurrency), as large as the
// server states it serves (limits@openssh.com, see DefaultPacketSize);
// downloads run on a second SFTP channel with a pipeline of their own,
// which reads replies straight into fixed buffers (see OpenReader);
// uploads run on the same channel, their requests sent in offset order
// (servers that stream uploads into objects take no other), falling back
// to one request at a time on a server that refuses pipelined writes (see
// OpenWriter); writes always go to explicit offsets, never through
// SSH_FXF_APPEND, and the writer reports the contiguous acknowledged
// high-water mark so a failed upload can resume without holes; a server
// that truncates whatever it opens for writing is told apart, and a resume
// there fails with protocol.ErrResumeUnsupported. Host-key algorithms are
// offered modern first (ed25519, ECDSA, then RSA with SHA-2) in every
// mode. OpenRangeWriter writes a range without cutting the file, for
// several sessions filling one file at once. Hash asks the server for a
// digest: the check-file extension (proftpd's mod_sftp) on a second SFTP
// channel, or a hash command over SSH exec (OpenSSH; WithExecHash), probed
// in an order that keeps the result the same from run to run.
// keepalive@openssh.com requests detect a dead connection during long
// transfers.
//
// Every method honours its context by closing the SSH connection when the
// context ends; the Session is then unusable and must be closed.
//
// The server is not trusted: a command's output over exec is bounded, a
// file size of 2^63 or more and an FTP greeting match protocol.ErrProtocol,
// and what errors and logs show of the server's words (status messages,
// command output, its version) is cut to protocol.MaxServerText bytes,
// escaped, and rid of the password (see protocol.ServerText).
//
// Errors are *protocol.Error values classified by classify.go. One case
// cannot be told apart exactly: OpenSSH's sftp-server answers a full disk
// with the generic SSH_FX_FAILURE. A write failing that way is reported as
// protocol.ErrNoSpace when statvfs@openssh.com then shows less free space
// than WithNoSpaceMargin; a failure for another reason on a nearly full
// file system is therefore reported as "no space" too, and a full disk on a
// server without statvfs@openssh.com stays an error of unknown kind (not
// retried either way).
package sftp

import (
	"bufio"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openhaul/haul/protocol"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// SFTP extensions used when the server advertises them.
const (
	extPosixRename = "posix-rename@openssh.com"
	extStatVFS     = "statvfs@openssh.com"
)

// errSessionClosed is returned by methods called after Close or after the
// connection was torn down (context cancelled, keepalive timed out).
var errSessionClosed = errors.New("sftp: session closed")

// Session is one SFTP connection. It implements protocol.Session,
// protocol.RangeWriter, protocol.Truncater, protocol.SpaceReporter and
// protocol.Hasher. Like every
// protocol.Session, it performs one operation at a time.
type Session struct {
	addr   string
	opts   options
	log    *slog.Logger
	conn   *countingConn
	ssh    *ssh.Client
	client *sftp.Client

	// hashMu serialises hashing and guards hash and shell.
	hashMu sync.Mutex
	hash   hashState
	// shell runs the hash commands; nil until the first, or after it
	// failed (see hashShell). noHashShell is set once one could not be
	// started: every hash then gets an exec of its own.
	shell       *hashShell
	noHashShell bool
	// quiet counts calls during which the server may send nothing for
	// long (it is hashing): the keepalive does not give up meanwhile.
	quiet atomic.Int32

	// rcMu guards the data channel, which readers and writers use: rc
	// (nil until first used or after it was dropped), rcBusy (a reader
	// or writer holds it) and rcRefused (the server refused a second
	// channel: read and write through pkg/sftp).
	rcMu      sync.Mutex
	rc        *fxpConn
	rcBusy    bool
	rcRefused bool

	// seqWrites: the server refused pipelined writes and accepted them
	// one at a time; writers send one request at a time.
	seqWrites atomic.Bool

	aborted   atomic.Bool
	closeOnce sync.Once
	closed    atomic.Bool
	done      chan struct{}
	wg        sync.WaitGroup
}

var (
	_ protocol.Session       = (*Session)(nil)
	_ protocol.Truncater     = (*Session)(nil)
	_ protocol.SpaceReporter = (*Session)(nil)
	_ protocol.RangeWriter   = (*Session)(nil)
)

// abort tears the connection down so that every blocked call returns. The
// Session is unusable afterwards.
func (s *Session) abort() {
	if s.aborted.CompareAndSwap(false, true) {
		_ = s.conn.Close()
	}
}

// keepAliveLoop sends keepalive@openssh.com every interval and closes the
// connection when, after a request, neither its reply nor any other byte
// has arrived from the server for two and a half intervals. Bytes count as liveness
// because a reply can queue behind a full window of file data on a busy
// download.
func (s *Session) keepAliveLoop(interval time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		reply := make(chan error, 1)
		seen := s.conn.received()
		go func() {
			_, _, err := s.ssh.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
		timer := time.NewTimer(2 * interval)
		confirming := false
	wait:
		for {
			select {
			case err := <-reply:
				timer.Stop()
				if err != nil {
					s.log.Debug("sftp: keepalive failed; connection gone", "err", err)
					return
				}
				break wait
			case <-timer.C:
				if n := s.conn.received(); n != seen || s.quiet.Load() > 0 {
					// Still receiving, or the server is busy
					// hashing: the reply is late, not lost.
					seen = n
					confirming = false
					timer.Reset(2 * interval)
					continue
				}
				if !confirming {
					// Confirm once: after this process was stalled
					// (GC, an overloaded machine) the timer can fire
					// before the reading goroutine has run.
					confirming = true
					timer.Reset(interval / 2)
					continue
				}
				s.log.Warn("sftp: nothing received from the server; closing connection", "waited", 2*interval+interval/2)
				s.abort()
				<-reply
				return
			case <-s.done:
				timer.Stop()
				<-reply // Close has closed the connection: SendRequest returns.
				return
			}
		}
	}
}

// countingConn counts the bytes read from the server, for the keepalive.
// When buffered, reads go through a buffer of readBufferSize bytes:
// x/crypto/ssh reads each packet in two or three small reads, a system
// call each.
type countingConn struct {
	net.Conn
	n   atomic.Int64
	buf *bufio.Reader
}

// readBufferSize is the read buffer of a connection: a few SSH packets.
const readBufferSize = 256 << 10

func (c *countingConn) Read(p []byte) (int, error) {
	if c.buf != nil {
		return c.buf.Read(p)
	}
	return c.read(p)
}

func (c *countingConn) read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// rawReader reads the connection without the buffer.
type rawReader struct{ c *countingConn }

func (r rawReader) Read(p []byte) (int, error) { return r.c.read(p) }

// received returns the bytes read so far.
func (c *countingConn) received() int64 { return c.n.Load() }

// Close ends the session: it closes the SFTP client, the SSH connection and
// the TCP connection and stops the keepalive goroutine. It is idempotent and
// safe to call after a cancelled context.
func (s *Session) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.done)
		// Close the SSH connection first: closing the SFTP client first
		// would wait for the server to close the channel, forever on a
		// blackholed connection.
		err = s.ssh.Close()
		s.aborted.Store(true)
		_ = s.client.Close()
		s.wg.Wait()
		if errors.Is(err, net.ErrClosed) {
			err = nil
		}
	})
	if err != nil {
		return classify("close", "", err, s.opts.password)
	}
	return nil
}

// begin checks that a call can start and ties the connection to ctx for the
// call's duration. The returned end function must be called once with the
// call's error; it returns the classified error.
func (s *Session) begin(ctx context.Context, op, path string) (end func(error) error, err error) {
	if err := protocol.CheckPath(path); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, &protocol.Error{Op: op, Path: path, Err: err}
	}
	if s.closed.Load() || s.aborted.Load() {
		return nil, &protocol.Error{Op: op, Path: path, Kind: protocol.ErrTransient, Err: errSessionClosed}
	}
	stop := context.AfterFunc(ctx, s.abort)
	return func(err error) error {
		if !stop() && err != nil {
			return &protocol.Error{Op: op, Path: path, Err: ctx.Err()}
		}
		return classify(op, path, err, s.opts.password)
	}, nil
}

// Stat returns the size, modification time and type of path.
func (s *Session) Stat(ctx context.Context, path string) (protocol.FileInfo, error) {
	end, err := s.begin(ctx, "stat", path)
	if err != nil {
		return protocol.FileInfo{}, err
	}
	fi, err := s.client.Stat(path)
	if err == nil {
		err = checkSize(fi.Size())
	}
	if err = end(err); err != nil {
		return protocol.FileInfo{}, err
	}
	return protocol.FileInfo{Size: fi.Size(), ModTime: fi.ModTime(), IsDir: fi.IsDir()}, nil
}

// Rename renames from to to, replacing to. It uses posix-rename@openssh.com
// when the server offers it (an atomic replace); otherwise it removes to
// first (not atomic: there is a moment without to) and renames.
func (s *Session) Rename(ctx context.Context, from, to string) error {
	if err := protocol.CheckPath(to); err != nil {
		return err
	}
	end, err := s.begin(ctx, "rename", from)
	if err != nil {
		return err
	}
	if _, ok := s.client.HasExtension(extPosixRename); ok {
		return end(s.client.PosixRename(from, to))
	}
	if err := s.client.Remove(to); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return end(err)
	}
	return end(s.client.Rename(from, to))
}

// Remove deletes the file at path.
func (s *Session) Remove(ctx context.Context, path string) error {
	end, err := s.begin(ctx, "remove", path)
	if err != nil {
		return err
	}
	return end(s.client.Remove(path))
}

// Truncate sets the size of path (SSH_FXP_SETSTAT with a size).
func (s *Session) Truncate(ctx context.Context, path string, size int64) error {
	if size < 0 {
		return &protocol.Error{Op: "truncate", Path: path, Err: errors.New("negative size")}
	}
	end, err := s.begin(ctx, "truncate", path)
	if err != nil {
		return err
	}
	return end(s.client.Truncate(path, size))
}

// FreeSpace returns the bytes available to the user on the file system
// holding path (statvfs@openssh.com: f_bavail × f_frsize). It returns an
// error matching protocol.ErrUnsupported when the server lacks the
// extension.
func (s *Session) FreeSpace(ctx context.Context, path string) (int64, error) {
	end, err := s.begin(ctx, "statvfs", path)
	if err != nil {
		return 0, err
	}
	n, err := s.freeSpace(path)
	if err = end(err); err != nil {
		return 0, err
	}
	return n, nil
}

var errNoStatVFS = errors.New("server does not offer " + extStatVFS)

// freeSpace is FreeSpace without context handling.
func (s *Session) freeSpace(path string) (int64, error) {
	if _, ok := s.client.HasExtension(extStatVFS); !ok {
		return 0, &protocol.Error{Op: "statvfs", Path: path, Kind: protocol.ErrUnsupported, Err: errNoStatVFS}
	}
	st, err := s.client.StatVFS(path)
	if err != nil {
		return 0, err
	}
	if st.Frsize == 0 {
		st.Frsize = st.Bsize
	}
	if st.Frsize != 0 && st.Bavail > math.MaxInt64/st.Frsize {
		return math.MaxInt64, nil
	}
	return int64(st.Bavail * st.Frsize), nil
}

// noSpace decides whether a generic SSH_FX_FAILURE on a write into path
// means the file system is full: it asks statvfs@openssh.com and compares
// the free space with the margin. It returns false when it cannot tell.
func (s *Session) noSpace(path string, err error) bool {
	if !isFailure(err) {
		return false
	}
	free, ferr := s.freeSpace(path)
	if ferr != nil {
		s.log.Debug("sftp: cannot tell whether the disk is full", "path", path, "err", ferr)
		return false
	}
	s.log.Debug("sftp: write failed; free space", "path", path, "free", free, "margin", s.opts.noSpaceMargin)
	return free < s.opts.noSpaceMargin
}

// openFlags are the flags of files opened for writing: never O_APPEND.
func openFlags(offset int64) int {
	f := os.O_WRONLY | os.O_CREATE
	if offset == 0 {
		f |= os.O_TRUNC
	}
	return f
}

// rangeFlags are the flags of files opened by OpenRangeWriter: created if
// missing, never truncated, never appended to.
const rangeFlags = os.O_WRONLY | os.O_CREATE
