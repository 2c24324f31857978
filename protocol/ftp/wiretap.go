package ftp

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/openhaul/haul/protocol"
)

// wiretap receives every byte written to and read from the control
// connection (jlaffaye's debug output, which sees the plain text even after
// AUTH TLS). It remembers the verb of the last command sent and the code of
// the last complete reply, so errors that jlaffaye reports without a code
// can still be classified, and it logs the dialogue at debug level with
// passwords masked.
//
// It is also where a reply's size is bounded. jlaffaye reads replies with
// net/textproto, which keeps a multi-line reply, or a line without an end,
// in memory until it is complete: a server that never ends one grows the
// process without limit. jlaffaye hands every byte it reads to the debug
// output through io.TeeReader, which reports the writer's error as a read
// error; so when a reply passes maxReplyBytes or maxReplyLines, or the
// greeting is not FTP at all, Write returns a *replyError (also to every
// later call) and the reply being read fails with it before textproto has
// kept more than the limit. A wrapper of the TCP connection could not do
// this: after AUTH TLS it would count ciphertext, not lines.
//
// jlaffaye writes both directions to the same io.Writer. FTP is strictly
// request/response, so lines are told apart by form: a reply line starts
// with three digits and a space or hyphen, and lines inside a multi-line
// reply belong to it; every other line is a command. The multi-line rule
// is textproto's: a line whose fourth byte is a hyphen starts one (whatever
// its first three bytes), and only a line with the same valid code and a
// space ends it. None of the commands sent has a hyphen there.
type wiretap struct {
	mu        sync.Mutex
	buf       []byte
	multiCode string // code of the multi-line reply in progress, or ""
	inMulti   bool   // a multi-line reply is in progress
	lines     int    // lines of the multi-line reply in progress
	bytes     int    // bytes of the multi-line reply in progress, line ends included
	first     string // first line of the multi-line reply in progress
	greeted   bool   // the first line (the greeting) has been seen
	err       error  // sticky: the reply that broke a limit
	lastVerb  string
	lastCode  int
	feat      []string // feature lines of the last FEAT reply
	secret    string   // the password, scrubbed from what is logged
	logger    *slog.Logger
}

// Bounds of one reply on the control connection. The longest replies real
// servers send are FEAT and HELP lists and login banners: a few dozen lines
// and a few KiB.
const (
	maxReplyBytes = 64 << 10
	maxReplyLines = 512
)

func newWiretap(l *slog.Logger, secret string) *wiretap {
	if l != nil && !l.Enabled(context.Background(), slog.LevelDebug) {
		l = nil
	}
	return &wiretap{logger: l, secret: secret}
}

// replyError reports a reply the session stopped reading: longer than the
// bounds, or not from an FTP server. It matches protocol.ErrProtocol, and
// the control connection is unusable after it.
type replyError struct {
	msg   string // what was wrong
	first string // the reply's first line (raw server text), if known
	// secret is scrubbed from the text shown.
	secret string
}

func (e *replyError) Error() string {
	if e.first == "" {
		return e.msg
	}
	return fmt.Sprintf("%s (it began %q)", e.msg, protocol.ServerText(e.first, e.secret))
}

// Is makes a replyError match protocol.ErrProtocol.
func (e *replyError) Is(target error) bool { return target == protocol.ErrProtocol }

// maxShownLine bounds the first line a replyError keeps.
const maxShownLine = 128

func cut(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Write implements io.Writer. It fails, from then on, once a reply broke
// the bounds (see wiretap).
func (t *wiretap) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		return 0, t.err
	}
	t.buf = append(t.buf, p...)
	if !t.greeted && len(t.buf) >= 4 && bytes.HasPrefix(t.buf, []byte("SSH-")) {
		// The first bytes on the connection are the server's.
		line, _, _ := bytes.Cut(t.buf, []byte("\n"))
		t.err = &replyError{secret: t.secret,
			msg:   "the server speaks SSH, not FTP: use an sftp:// URL",
			first: cut(string(bytes.TrimRight(line, "\r")), maxShownLine)}
		return 0, t.err
	}
	for t.err == nil {
		i := bytes.IndexByte(t.buf, '\n')
		if i < 0 {
			break
		}
		t.line(string(bytes.TrimRight(t.buf[:i], "\r")), i+1)
		t.buf = t.buf[i+1:]
	}
	if t.err == nil {
		pending := len(t.buf) // a line not ended yet
		if t.inMulti {
			pending += t.bytes
		}
		if pending > maxReplyBytes {
			first := t.first
			if !t.inMulti {
				first = string(t.buf[:maxShownLine])
			}
			t.err = &replyError{secret: t.secret, first: first,
				msg: fmt.Sprintf("a reply longer than %d bytes", maxReplyBytes)}
		}
	}
	if t.err != nil {
		t.buf = nil
		return 0, t.err
	}
	if len(t.buf) == 0 {
		t.buf = nil
	}
	return len(p), nil
}

func replyPrefix(line string) (code string, sep byte, ok bool) {
	if len(line) < 4 {
		if len(line) == 3 && isDigits(line) {
			return line, ' ', true
		}
		return "", 0, false
	}
	if !isDigits(line[:3]) || (line[3] != ' ' && line[3] != '-') {
		return "", 0, false
	}
	return line[:3], line[3], true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// endsMulti reports whether l ends the multi-line reply whose first line
// began with code, as textproto decides it: the same valid code (100 to
// 999), then a space.
func endsMulti(l, code string) bool {
	return len(l) >= 4 && l[3] == ' ' && l[:3] == code && isDigits(code) && code[0] != '0'
}

// line handles one complete line of n bytes (its end included).
func (t *wiretap) line(l string, n int) {
	t.greeted = true
	if t.inMulti {
		t.lines++
		t.bytes += n
		switch {
		case t.lines > maxReplyLines:
			t.err = &replyError{secret: t.secret, first: t.first,
				msg: fmt.Sprintf("a reply longer than %d lines", maxReplyLines)}
			return
		case t.bytes > maxReplyBytes:
			t.err = &replyError{secret: t.secret, first: t.first,
				msg: fmt.Sprintf("a reply longer than %d bytes", maxReplyBytes)}
			return
		case endsMulti(l, t.multiCode):
			t.inMulti, t.multiCode, t.first = false, "", ""
			t.lastCode = atoi3(l[:3])
		case t.lastVerb == "FEAT" && strings.HasPrefix(l, " "):
			t.feat = append(t.feat, strings.TrimSpace(l))
		}
		t.logReply(l)
		return
	}
	if len(l) >= 4 && l[3] == '-' {
		t.inMulti, t.multiCode, t.lines, t.bytes = true, l[:3], 1, n
		t.first = cut(l, maxShownLine)
		t.logReply(l)
		return
	}
	if _, _, ok := replyPrefix(l); ok {
		t.lastCode = atoi3(l[:3])
		t.logReply(l)
		return
	}
	verb, arg, _ := strings.Cut(l, " ")
	verb = strings.ToUpper(verb)
	t.lastVerb = verb
	t.lastCode = 0
	if verb == "FEAT" {
		t.feat = nil
	}
	if t.logger != nil {
		if arg != "" && (verb == "PASS" || verb == "ACCT") {
			arg = "****"
		}
		cmd := verb
		if arg != "" {
			cmd += " " + arg
		}
		// A line that is no reply may still be the server's (one that
		// textproto refuses): show it as server text.
		t.logger.Debug("ftp command", "cmd", protocol.ServerText(cmd, t.secret))
	}
}

func (t *wiretap) logReply(l string) {
	if t.logger != nil {
		t.logger.Debug("ftp reply", "line", protocol.ServerText(l, t.secret))
	}
}

func atoi3(s string) int {
	return int(s[0]-'0')*100 + int(s[1]-'0')*10 + int(s[2]-'0')
}

// last returns the verb of the last command sent and the code of the last
// complete reply received after it (0 if none).
func (t *wiretap) last() (verb string, code int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastVerb, t.lastCode
}

// features returns the feature lines of the last FEAT reply.
func (t *wiretap) features() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.feat...)
}
