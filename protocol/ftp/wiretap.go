package ftp

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
)

// wiretap receives every byte written to and read from the control
// connection (jlaffaye's debug output, which sees the plain text even after
// AUTH TLS). It remembers the verb of the last command sent and the code of
// the last complete reply, so errors that jlaffaye reports without a code
// can still be classified, and it logs the dialogue at debug level with
// passwords masked.
//
// jlaffaye writes both directions to the same io.Writer. FTP is strictly
// request/response, so lines are told apart by form: a reply line starts
// with three digits and a space or hyphen, and lines inside a multi-line
// reply belong to it; every other line is a command.
type wiretap struct {
	mu        sync.Mutex
	buf       []byte
	multiCode string // code of the multi-line reply in progress, or ""
	lastVerb  string
	lastCode  int
	feat      []string // feature lines of the last FEAT reply
	logger    *slog.Logger
}

const maxTapLine = 8 << 10

func newWiretap(l *slog.Logger) *wiretap {
	if l != nil && !l.Enabled(context.Background(), slog.LevelDebug) {
		l = nil
	}
	return &wiretap{logger: l}
}

// Write implements io.Writer; it never fails.
func (t *wiretap) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	for {
		i := bytes.IndexByte(t.buf, '\n')
		if i < 0 {
			break
		}
		t.line(string(bytes.TrimRight(t.buf[:i], "\r")))
		t.buf = t.buf[i+1:]
	}
	if len(t.buf) > maxTapLine { // a line this long is not FTP; do not grow
		t.buf = t.buf[:0]
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

func (t *wiretap) line(l string) {
	if t.multiCode != "" {
		if code, sep, ok := replyPrefix(l); ok && sep == ' ' && code == t.multiCode {
			t.multiCode = ""
			t.lastCode = atoi3(code)
		} else if t.lastVerb == "FEAT" && strings.HasPrefix(l, " ") {
			t.feat = append(t.feat, strings.TrimSpace(l))
		}
		t.logReply(l)
		return
	}
	if code, sep, ok := replyPrefix(l); ok {
		if sep == '-' {
			t.multiCode = code
		} else {
			t.lastCode = atoi3(code)
		}
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
		if arg != "" {
			t.logger.Debug("ftp command", "cmd", verb+" "+arg)
		} else {
			t.logger.Debug("ftp command", "cmd", verb)
		}
	}
}

func (t *wiretap) logReply(l string) {
	if t.logger != nil {
		t.logger.Debug("ftp reply", "line", l)
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
