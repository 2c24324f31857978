package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const sampleNetrc = `# comment line
machine ftp.example.com login alice password "pa ss\"word"
machine FILES.example.com
	login bob
	password b0b#notacomment   # a comment after a value
	account ignored
macdef init
cd /pub
binary

machine files.example.com login carol password c4rol
default login anonymous password guest@
`

func TestParseNetrc(t *testing.T) {
	entries, err := parseNetrc("netrc", []byte(sampleNetrc))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host, user      string
		login, password string
		ok              bool
	}{
		{"ftp.example.com", "", "alice", `pa ss"word`, true},
		{"ftp.example.com", "alice", "alice", `pa ss"word`, true},
		{"files.example.com", "", "bob", "b0b#notacomment", true}, // machine names are case-insensitive, the first wins
		{"files.example.com", "carol", "carol", "c4rol", true},    // the entry of the URL's user
		{"other.example.com", "", "anonymous", "guest@", true},    // the default
		{"ftp.example.com", "mallory", "anonymous", "", false},    // the default's login is not mallory's
	} {
		e, ok := lookupNetrc(entries, tc.host, tc.user)
		if ok != tc.ok || ok && (e.login != tc.login || e.password != tc.password) {
			t.Errorf("%s %s: %+v %v", tc.host, tc.user, e, ok)
		}
	}
}

func TestParseNetrcErrorsNeverQuoteTheFile(t *testing.T) {
	for _, tc := range []struct{ in, msg string }{
		{"machine h login u password my secret\n", ":1: unexpected word"},
		{"machine h\nlogin u\npassword \"unterminated\n", ":3: a quoted value runs past"},
		{"login u password secret\n", "before any machine"},
		{"machine h password", "password without a value"},
	} {
		_, err := parseNetrc("f", []byte(tc.in))
		var ne *netrcError
		if !errors.As(err, &ne) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: %v, want %q", tc.in, err, tc.msg)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%q: the error quotes the file: %v", tc.in, err)
		}
	}
	entries, err := parseNetrc("f", nil)
	if err != nil || len(entries) != 0 {
		t.Errorf("empty: %v %v", entries, err)
	}
}

func TestReadNetrc(t *testing.T) {
	dir := t.TempDir()
	if login, pw, err := readNetrc(filepath.Join(dir, "none"), "h", "", nil); login != "" || pw != "" || err != nil {
		t.Errorf("missing file: %q %q %v", login, pw, err)
	}
	p := filepath.Join(dir, "netrc")
	if err := os.WriteFile(p, []byte("machine h login u password p\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var warned []string
	login, pw, err := readNetrc(p, "h", "", func(s string) { warned = append(warned, s) })
	if login != "u" || pw != "p" || err != nil {
		t.Errorf("got %q %q %v", login, pw, err)
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "chmod 600") {
		t.Errorf("a file others may read: warnings %q", warned)
	}
}

// The CLI reads ~/.netrc when no password is given otherwise, and the
// URL's password wins over it.
func TestCLIReadsNetrc(t *testing.T) {
	home := isolate(t)
	l := newListener(t)
	if err := os.WriteFile(filepath.Join(home, ".netrc"), []byte("machine 127.0.0.1 login u password p\nmachine h login u password \"unterminated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	// A syntax error names the file and line, exit 2, no connection.
	code := run([]string{"get", "ftp://" + l.ln.Addr().String() + "/f", filepath.Join(t.TempDir(), "f")}, strings.NewReader(""), &out, &errb)
	if code != exitUsage || !strings.Contains(errb.String(), ".netrc:2:") {
		t.Errorf("exit %d: %s", code, errb.String())
	}
	if l.accepted.Load() != 0 {
		t.Error("connected")
	}
}

// fakeFTP answers every login with 530 and records the passwords sent.
func fakeFTP(t *testing.T) (addr string, passwords func() []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var got []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprint(c, "220 fake\r\n")
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					cmd, arg, _ := strings.Cut(sc.Text(), " ")
					switch strings.ToUpper(cmd) {
					case "USER":
						fmt.Fprint(c, "331 password please\r\n")
					case "PASS":
						mu.Lock()
						got = append(got, arg)
						mu.Unlock()
						fmt.Fprint(c, "530 Login incorrect.\r\n")
					case "QUIT":
						fmt.Fprint(c, "221 bye\r\n")
						return
					default:
						fmt.Fprint(c, "500 no\r\n")
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// A rejected login without any password says how to give one; with a
// ~/.netrc entry, its password is sent and that hint is not shown.
func TestCLINetrcPasswordAndNoPasswordHint(t *testing.T) {
	home := isolate(t)
	addr, passwords := fakeFTP(t)
	host, _, _ := net.SplitHostPort(addr)
	local := filepath.Join(t.TempDir(), "f")

	var out, errb bytes.Buffer
	code := run([]string{"get", "ftp://u@" + addr + "/f", local}, strings.NewReader(""), &out, &errb)
	if code != exitAuth || !strings.Contains(errb.String(), "hint: no password was given: set HAUL_PASSWORD, use --password-file FILE, or add a line to ~/.netrc") {
		t.Errorf("no password: exit %d: %s", code, errb.String())
	}

	if err := os.WriteFile(filepath.Join(home, ".netrc"), []byte("machine "+host+" login u password from-netrc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	code = run([]string{"get", "ftp://u@" + addr + "/f", local}, strings.NewReader(""), &out, &errb)
	if code != exitAuth || strings.Contains(errb.String(), "no password was given") || strings.Contains(errb.String(), "from-netrc") {
		t.Errorf("netrc: exit %d: %s", code, errb.String())
	}
	if got := passwords(); len(got) != 2 || got[1] != "from-netrc" {
		t.Errorf("passwords sent: %q", got)
	}
}
