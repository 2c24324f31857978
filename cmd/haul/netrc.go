package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// A small .netrc reader, as curl and lftp read the file: "machine NAME",
// "default", "login NAME", "password VALUE", "account VALUE" and "macdef
// NAME" (its body runs to the next empty line and is skipped), tokens
// separated by blanks and newlines, "#" starting a comment where a keyword
// is expected, and values that may be double-quoted with backslash
// escapes (curl 7.84 and later) so that a password may hold blanks. No
// module on the Go module proxy list kept here parses netrc files, and
// the format is small enough that a dependency would cost more than these
// lines.

// netrcEntry is one machine (or the default) of a .netrc file.
type netrcEntry struct {
	machine  string // "" for the default entry
	login    string
	password string
}

// netrcError reports a syntax error by line; it never quotes the file,
// which holds passwords.
type netrcError struct {
	path string
	line int
	msg  string
}

func (e *netrcError) Error() string { return fmt.Sprintf("%s:%d: %s", e.path, e.line, e.msg) }

// parseNetrc parses the content of a .netrc file named path (for errors).
func parseNetrc(path string, data []byte) ([]netrcEntry, error) {
	s := &netrcScanner{data: data, line: 1}
	var entries []netrcEntry
	var cur *netrcEntry
	bad := func(msg string) error { return &netrcError{path: path, line: s.line, msg: msg} }
	value := func(kw string) (string, error) {
		v, ok, err := s.token(false)
		switch {
		case err != nil:
			return "", bad(err.Error())
		case !ok:
			return "", bad(kw + " without a value")
		}
		return v, nil
	}
	for {
		kw, ok, err := s.token(true)
		if err != nil {
			return nil, bad(err.Error())
		}
		if !ok {
			return entries, nil
		}
		switch kw {
		case "machine", "default":
			e := netrcEntry{}
			if kw == "machine" {
				if e.machine, err = value(kw); err != nil {
					return nil, err
				}
			}
			entries = append(entries, e)
			cur = &entries[len(entries)-1]
		case "login", "password", "account":
			v, err := value(kw)
			if err != nil {
				return nil, err
			}
			if cur == nil {
				return nil, bad(kw + " before any machine or default")
			}
			switch kw {
			case "login":
				cur.login = v
			case "password":
				cur.password = v
			}
		case "macdef":
			if _, err := value(kw); err != nil {
				return nil, err
			}
			s.skipMacro()
		default:
			// Not quoted: the token may be part of a password.
			return nil, bad("unexpected word where a keyword (machine, default, login, password, account, macdef) belongs; a value with blanks needs double quotes")
		}
	}
}

// lookupNetrc returns the entry for host: the first machine entry of that
// name whose login is user (any login when user is ""; an entry without a
// login matches any user), else the default entry.
func lookupNetrc(entries []netrcEntry, host, user string) (netrcEntry, bool) {
	var def *netrcEntry
	for i, e := range entries {
		if e.machine == "" {
			if def == nil {
				def = &entries[i]
			}
			continue
		}
		if strings.EqualFold(e.machine, host) && (user == "" || e.login == "" || e.login == user) {
			return e, true
		}
	}
	if def != nil && (user == "" || def.login == "" || def.login == user) {
		return *def, true
	}
	return netrcEntry{}, false
}

// netrcPath is the file read: ~/.netrc.
func netrcPath() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".netrc")
}

// readNetrc returns the login and password ~/.netrc holds for host and
// user, if any. A missing file is no error. warn receives a warning when
// the file holding the password can be read by other users.
func readNetrc(path, host, user string, warn func(string)) (login, password string, err error) {
	if path == "" {
		return "", "", nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", "", nil
	}
	if err != nil {
		return "", "", err
	}
	entries, err := parseNetrc(path, data)
	if err != nil {
		return "", "", err
	}
	e, ok := lookupNetrc(entries, host, user)
	if !ok || e.password == "" {
		return "", "", nil
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		warn(fmt.Sprintf("%s holds a password and other users may read it: chmod 600 %s", path, path))
	}
	return e.login, e.password, nil
}

// netrcScanner splits a .netrc file into tokens.
type netrcScanner struct {
	data []byte
	pos  int
	line int
}

// token returns the next token; keyword is true where a keyword is
// expected (a "#" there starts a comment that runs to the end of the line).
func (s *netrcScanner) token(keyword bool) (string, bool, error) {
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '\n':
			s.line++
			s.pos++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v':
			s.pos++
		case c == '#' && keyword:
			for s.pos < len(s.data) && s.data[s.pos] != '\n' {
				s.pos++
			}
		case c == '"':
			return s.quoted()
		default:
			start := s.pos
			for s.pos < len(s.data) && !isNetrcBlank(s.data[s.pos]) {
				s.pos++
			}
			return string(s.data[start:s.pos]), true, nil
		}
	}
	return "", false, nil
}

func isNetrcBlank(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// quoted reads a double-quoted value with \", \\, \n, \r and \t escapes.
func (s *netrcScanner) quoted() (string, bool, error) {
	var b strings.Builder
	for s.pos++; s.pos < len(s.data); s.pos++ {
		c := s.data[s.pos]
		switch c {
		case '"':
			s.pos++
			return b.String(), true, nil
		case '\n':
			return "", false, errors.New("a quoted value runs past the end of its line")
		case '\\':
			s.pos++
			if s.pos == len(s.data) {
				return "", false, errors.New("a quoted value is not closed")
			}
			switch e := s.data[s.pos]; e {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte(e)
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", false, errors.New("a quoted value is not closed")
}

// skipMacro skips a macdef body: everything up to and including the next
// empty line.
func (s *netrcScanner) skipMacro() {
	// The rest of the macdef line.
	for s.pos < len(s.data) && s.data[s.pos] != '\n' {
		s.pos++
	}
	for s.pos < len(s.data) {
		s.pos++ // the newline
		s.line++
		start := s.pos
		for s.pos < len(s.data) && s.data[s.pos] != '\n' {
			s.pos++
		}
		if strings.TrimSpace(string(s.data[start:s.pos])) == "" {
			return
		}
	}
}
