package sftp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/openhaul/haul/protocol"
	"golang.org/x/crypto/ssh"
)

// Hashing by SSH exec, for servers without check-file (OpenSSH): the
// command runs through the user's login shell on the server.

// Markers printed around the output that matters, so that whatever a
// shell startup file prints is skipped.
const (
	execProbeMarker = "haul-hash-probe"
	execDoneMarker  = "haul-hash-done"
	// execOutputLimit bounds the output, and the error output, of a
	// command: past it the command is stopped and fails.
	execOutputLimit = 16 << 10
	// execProbeTimeout bounds the probe (or half of WithDialTimeout,
	// which bounds HashAlgorithms' probes together, if shorter). It runs
	// "command -v" in the login shell: a round trip and the shell's start.
	// A probe that does not answer in time leaves the session without
	// hashing by exec, and usable.
	execProbeTimeout = 5 * time.Second
)

// execTools maps an algorithm to the command that hashes standard input.
var execTools = map[string]string{
	"sha256": "sha256sum",
	"sha512": "sha512sum",
	"sha1":   "sha1sum",
	"md5":    "md5sum",
}

// execProbeCommand lists which tools the server's shell finds. Its
// standard input is redirected like a hash command's, so a shell that
// cannot run those fails the probe too.
const execProbeCommand = "{ echo " + execProbeMarker + "; for c in sha256sum sha512sum sha1sum md5sum head tail; do command -v \"$c\"; done; } </dev/null"

// probeExec runs execProbeCommand and records the algorithms whose tool
// was found, with head and tail. A refused or failing exec (a server that
// forces internal-sftp runs the SFTP server instead, which prints
// nothing), or one that does not answer within execProbeTimeout, means no
// algorithm. A probe whose channel ended without an exit status (EOF) is
// run once more: some servers fail an exec now and then after another
// channel closed. It also records the SFTP working directory, against
// which relative paths are resolved. It returns why it found what it
// found; only a broken connection or a done ctx is an error.
func (s *Session) probeExec(ctx context.Context, hs *hashState) (string, error) {
	pctx, cancel := context.WithTimeout(ctx, min(execProbeTimeout, s.opts.dialTimeout/2))
	defer cancel()
	out, err := s.runRetry(pctx, execProbeCommand, "exec probe")
	if err != nil {
		if s.aborted.Load() || s.closed.Load() || ctx.Err() != nil {
			return "", err
		}
		s.log.Debug("sftp: exec refused, failed or did not answer; no hash by exec", "err", err)
		return fmt.Sprintf("exec refused, failed or did not answer (%v)", err), nil
	}
	algos := parseExecProbe(out)
	if len(algos) == 0 {
		return "exec ran but the login shell found no hash tool, or not head and tail", nil
	}
	cwd, err := s.client.Getwd()
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(cwd, "/") {
		s.log.Debug("sftp: working directory is not absolute; no hash by exec", "cwd", cwd)
		return "the SFTP working directory is not absolute", nil
	}
	hs.cwd, hs.exec = cwd, algos
	return "the login shell finds the hash tools over exec", nil
}

// execEOF reports whether a command failed because its channel ended
// without an exit status: closed before the exec request was answered
// (io.EOF) or after (*ssh.ExitMissingError).
func execEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.As(err, new(*ssh.ExitMissingError))
}

// runRetry is run, once more when the command's channel ended without an
// exit status while the session and ctx are still alive.
func (s *Session) runRetry(ctx context.Context, cmd, what string) ([]byte, error) {
	out, err := s.run(ctx, cmd)
	if err != nil && execEOF(err) && ctx.Err() == nil && !s.aborted.Load() && !s.closed.Load() {
		s.log.Debug("sftp: "+what+" ended without an exit status; running it once more", "err", err)
		out, err = s.run(ctx, cmd)
	}
	return out, err
}

// parseExecProbe returns the algorithms, best first, whose tool the probe
// output lists after the marker, or nil when the output lacks the marker,
// head or tail.
func parseExecProbe(out []byte) []string {
	lines := strings.Split(string(out), "\n")
	i := slicesIndex(lines, execProbeMarker)
	if i < 0 {
		return nil
	}
	found := map[string]bool{}
	for _, l := range lines[i+1:] {
		l = strings.TrimSpace(l)
		found[l[strings.LastIndexByte(l, '/')+1:]] = true
	}
	if !found["head"] || !found["tail"] {
		return nil
	}
	var algos []string
	for _, name := range protocol.KnownHashes() {
		if t, ok := execTools[name]; ok && found[t] {
			algos = append(algos, name)
		}
	}
	return algos
}

func slicesIndex(lines []string, want string) int {
	for i, l := range lines {
		if strings.TrimSpace(l) == want {
			return i
		}
	}
	return -1
}

// shellQuote quotes s for a POSIX shell: in single quotes, where each
// single quote in s ends the quoted part, is written escaped by a
// backslash, and starts a new quoted part.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// execHashCommand returns the command that prints the digest of bytes
// [start, end) of the absolute path abs, whose size is size, followed by
// execDoneMarker. The file is opened by the shell for the whole group, so
// a file that cannot be opened runs nothing and prints no marker.
func execHashCommand(tool, abs string, start, end, size int64) string {
	var pipe []string
	if start > 0 {
		pipe = append(pipe, "tail -c +"+strconv.FormatInt(start+1, 10))
	}
	if end < size {
		pipe = append(pipe, "head -c "+strconv.FormatInt(end-start, 10))
	}
	pipe = append(pipe, tool)
	return "{ " + strings.Join(pipe, " | ") + "; } <" + shellQuote(abs) + " && echo " + execDoneMarker
}

// parseExecHash returns the digest of size bytes that the line before
// execDoneMarker starts with ("<hex>  -").
func parseExecHash(out []byte, size int) ([]byte, error) {
	lines := strings.Split(string(out), "\n")
	i := slicesIndex(lines, execDoneMarker)
	if i < 1 {
		return nil, errors.New("no digest in the command's output")
	}
	hexSum, _, _ := strings.Cut(strings.TrimSpace(lines[i-1]), " ")
	sum, err := hex.DecodeString(hexSum)
	if err != nil || len(sum) != size {
		return nil, fmt.Errorf("no %d-byte digest in the command's output %q", size, lines[i-1])
	}
	return sum, nil
}

// execHash hashes [start, end) of path (a file of size bytes) with the
// tool for algo over SSH exec; ctx ends the command.
func (s *Session) execHash(ctx context.Context, hs *hashState, path, algo string, digestSize int, start, end, size int64) ([]byte, error) {
	abs := path
	if !strings.HasPrefix(abs, "/") {
		// The command runs in the login directory; SFTP resolves
		// relative paths against its own (sftp-server -d may differ).
		abs = strings.TrimSuffix(hs.cwd, "/") + "/" + path
	}
	out, err := s.runHash(ctx, execHashCommand(execTools[algo], abs, start, end, size))
	if err != nil {
		if s.aborted.Load() || s.closed.Load() || ctx.Err() != nil {
			return nil, err
		}
		return nil, shown(&protocol.Error{Op: "hash", Path: path, Kind: protocol.ErrUnsupported,
			Err: fmt.Errorf("hash command failed on the server: %w", err)}, s.opts.password)
	}
	sum, err := parseExecHash(out, digestSize)
	if err != nil {
		return nil, shown(&protocol.Error{Op: "hash", Path: path, Kind: protocol.ErrUnsupported, Err: err}, s.opts.password)
	}
	return sum, nil
}

var errOutputTooLong = fmt.Errorf("command output longer than %d bytes", execOutputLimit)

// run runs cmd over SSH exec with an empty standard input and returns its
// standard output. Output or error output longer than execOutputLimit
// stops the command and fails with errOutputTooLong. When ctx ends, the
// exec channel is closed, which tells the server to stop the command, and
// run returns ctx's error. A non-zero exit status is an *ssh.ExitError
// carrying the start of standard error (as protocol.ServerText shows it)
// in the returned error.
func (s *Session) run(ctx context.Context, cmd string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sess, err := s.ssh.NewSession()
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	stopCmd := func() { _ = sess.Close() }
	stdout := &cappedBuffer{max: execOutputLimit, full: stopCmd}
	stderr := &cappedBuffer{max: execOutputLimit, full: stopCmd}
	sess.Stdout, sess.Stderr = stdout, stderr
	stop := context.AfterFunc(ctx, stopCmd)
	err = sess.Run(cmd)
	stop()
	// Run has returned: the copies into stdout and stderr are done.
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("exec stopped: %w", context.Cause(ctx))
	case stdout.over || stderr.over:
		return nil, errOutputTooLong
	case err != nil:
		var ee *ssh.ExitError
		if errors.As(err, &ee) && len(stderr.buf) > 0 {
			return nil, fmt.Errorf("%w: %q", err,
				protocol.ServerText(string(bytes.TrimSpace(stderr.buf)), s.opts.password))
		}
		return nil, err
	}
	return stdout.buf, nil
}

// cappedBuffer keeps what is written to it up to max bytes; the Write that
// would pass max fails with errOutputTooLong, and so does every later one,
// and full is called once. It is an io.Writer and nothing more, on
// purpose: x/crypto/ssh copies a command's output with io.Copy, which
// prefers the destination's ReadFrom to its Write (a type that embedded
// bytes.Buffer was read 1 GiB of output into through ReadFrom, past its
// capped Write).
type cappedBuffer struct {
	buf  []byte
	max  int
	over bool
	full func()
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if b.over {
		return 0, errOutputTooLong
	}
	if room := b.max - len(b.buf); len(p) > room {
		b.buf = append(b.buf, p[:room]...)
		b.over = true
		if b.full != nil {
			b.full()
		}
		return room, errOutputTooLong
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// hashShell is a shell the session keeps running on the server, over one
// exec channel, to run its hash commands one after the other: an exec
// channel per command cost the server 4.6 ms of CPU each (sshd forks a
// process for it, the login shell starts), a command in a running shell
// 1.1 ms (300 of each, OpenSSH on the test machine), about a second for a
// batch of 300 files. It reads a command per line, evaluates it and prints
// execEndMarker after it, whatever it did.
type hashShell struct {
	sess *ssh.Session
	in   io.WriteCloser
	out  *bufio.Reader
	errs *errBudget
}

// errBudget discards a hash shell's error output, and closes the shell
// once a command wrote more than execOutputLimit bytes of it.
type errBudget struct {
	mu    sync.Mutex
	n     int
	close func()
}

func (e *errBudget) Write(p []byte) (int, error) {
	e.mu.Lock()
	e.n += len(p)
	over := e.n > execOutputLimit
	e.mu.Unlock()
	if over {
		e.close()
		return 0, errOutputTooLong
	}
	return len(p), nil
}

func (e *errBudget) reset() {
	e.mu.Lock()
	e.n = 0
	e.mu.Unlock()
}

// execShellScript is the loop the hash shell runs.
const execShellScript = "while IFS= read -r c; do eval \"$c\"; echo " + execEndMarker + "; done"

// execEndMarker ends the output of each command of the hash shell.
const execEndMarker = "haul-hash-end"

// runHash runs a hash command in the session's hash shell, started when
// there is none. A shell that cannot be started, or fails otherwise than
// by ctx, is dropped and the command is run by an exec channel of its own
// (runRetry), as servers whose shell cannot loop still allow. s.hashMu
// must be held.
func (s *Session) runHash(ctx context.Context, cmd string) ([]byte, error) {
	if s.shell == nil && !s.noHashShell {
		sh, err := s.startHashShell()
		if err != nil {
			s.log.Debug("sftp: no hash shell; one exec per hash", "err", err)
			s.noHashShell = true
		}
		s.shell = sh
	}
	if s.shell != nil {
		out, err := s.shell.run(ctx, cmd)
		if err == nil {
			return out, nil
		}
		_ = s.shell.sess.Close()
		s.shell = nil
		if ctx.Err() != nil || s.aborted.Load() || s.closed.Load() {
			return nil, err
		}
		s.log.Debug("sftp: the hash shell failed; running the command by an exec of its own", "err", err)
	}
	return s.runRetry(ctx, cmd, "hash command")
}

func (s *Session) startHashShell() (*hashShell, error) {
	sess, err := s.ssh.NewSession()
	if err != nil {
		return nil, err
	}
	in, err := sess.StdinPipe()
	if err != nil {
		sess.Close()
		return nil, err
	}
	out, err := sess.StdoutPipe()
	if err != nil {
		sess.Close()
		return nil, err
	}
	errs := &errBudget{close: func() { _ = sess.Close() }}
	sess.Stderr = errs
	if err := sess.Start(execShellScript); err != nil {
		sess.Close()
		return nil, err
	}
	return &hashShell{sess: sess, in: in, out: bufio.NewReaderSize(out, 4096), errs: errs}, nil
}

// run sends cmd (one line) and returns what it printed before the end
// marker, at most execOutputLimit bytes. When ctx ends, the shell's
// channel is closed (the server stops the command).
func (sh *hashShell) run(ctx context.Context, cmd string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = sh.sess.Close() })
	defer stop()
	fail := func(err error) ([]byte, error) {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("exec stopped: %w", context.Cause(ctx))
		}
		return nil, err
	}
	if strings.ContainsAny(cmd, "\r\n") {
		return nil, errors.New("hash command of more than one line")
	}
	sh.errs.reset()
	if _, err := io.WriteString(sh.in, cmd+"\n"); err != nil {
		return fail(err)
	}
	var out []byte
	for {
		line, err := sh.out.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			return fail(errOutputTooLong)
		case err != nil:
			return fail(err)
		}
		if strings.TrimSpace(string(line)) == execEndMarker {
			return out, nil
		}
		if out = append(out, line...); len(out) > execOutputLimit {
			return fail(errOutputTooLong)
		}
	}
}
