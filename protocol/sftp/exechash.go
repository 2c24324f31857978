package sftp

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

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
	// execOutputLimit bounds the output kept from a command.
	execOutputLimit = 16 << 10
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

// probeExec runs execProbeCommand once and records the algorithms whose
// tool was found, with head and tail. A refused or failing exec (a server
// that forces internal-sftp runs the SFTP server instead, which prints
// nothing) means no algorithm. It also records the SFTP working
// directory, against which relative paths are resolved. Only a broken
// connection is an error.
func (s *Session) probeExec(hs *hashState) error {
	out, err := s.run(execProbeCommand)
	if err != nil {
		if s.aborted.Load() || s.closed.Load() {
			return err
		}
		s.log.Debug("sftp: exec refused or failed; no hash by exec", "err", err)
		return nil
	}
	algos := parseExecProbe(out)
	if len(algos) == 0 {
		return nil
	}
	cwd, err := s.client.Getwd()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(cwd, "/") {
		s.log.Debug("sftp: working directory is not absolute; no hash by exec", "cwd", cwd)
		return nil
	}
	hs.cwd, hs.exec = cwd, algos
	return nil
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
// tool for algo over SSH exec.
func (s *Session) execHash(hs *hashState, path, algo string, digestSize int, start, end, size int64) ([]byte, error) {
	abs := path
	if !strings.HasPrefix(abs, "/") {
		// The command runs in the login directory; SFTP resolves
		// relative paths against its own (sftp-server -d may differ).
		abs = strings.TrimSuffix(hs.cwd, "/") + "/" + path
	}
	out, err := s.run(execHashCommand(execTools[algo], abs, start, end, size))
	if err != nil {
		if s.aborted.Load() || s.closed.Load() {
			return nil, err
		}
		return nil, &protocol.Error{Op: "hash", Path: path, Kind: protocol.ErrUnsupported,
			Err: fmt.Errorf("hash command failed on the server: %w", err)}
	}
	sum, err := parseExecHash(out, digestSize)
	if err != nil {
		return nil, &protocol.Error{Op: "hash", Path: path, Kind: protocol.ErrUnsupported, Err: err}
	}
	return sum, nil
}

// run runs cmd over SSH exec with an empty standard input and returns its
// standard output (at most execOutputLimit bytes). A non-zero exit status
// is an *ssh.ExitError carrying the start of standard error in the
// returned error.
func (s *Session) run(cmd string) ([]byte, error) {
	sess, err := s.ssh.NewSession()
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	stdout := &limitedBuffer{max: execOutputLimit}
	stderr := &limitedBuffer{max: 512}
	sess.Stdout, sess.Stderr = stdout, stderr
	if err := sess.Run(cmd); err != nil {
		var ee *ssh.ExitError
		if errors.As(err, &ee) && stderr.Len() > 0 {
			return nil, fmt.Errorf("%w: %q", err, bytes.TrimSpace(stderr.Bytes()))
		}
		return nil, err
	}
	return stdout.Bytes(), nil
}

// limitedBuffer keeps the first max bytes written to it and discards the
// rest.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
