package demo

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jlaffaye/ftp"
)

func startFTP(t *testing.T) (*ftpServer, string) {
	t.Helper()
	root := t.TempDir()
	s, err := newFTPServer(root, "u", "pw", 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	for _, p := range s.pasv {
		if ip := p.ln.Addr().(*net.TCPAddr).IP; !ip.Equal(net.IPv4(127, 0, 0, 1)) {
			t.Fatalf("passive port listens on %v, want 127.0.0.1", ip)
		}
	}
	return s, root
}

func dialFTP(t *testing.T, s *ftpServer, password string) (*ftp.ServerConn, error) {
	t.Helper()
	c, err := ftp.Dial(s.ln.Addr().String(), ftp.DialWithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Quit() })
	return c, c.Login("u", password)
}

func replyCode(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// TestFTPServerResume: what a resuming client relies on. STOR after REST
// writes at the offset (it neither appends nor truncates), REST past the end
// is refused for STOR and RETR, RETR after REST starts at the offset, SIZE
// of a missing file is 550, and a wrong password 530.
func TestFTPServerResume(t *testing.T) {
	s, root := startFTP(t)
	if _, err := dialFTP(t, s, "wrong"); replyCode(err) != 530 {
		t.Fatalf("login with a wrong password: %v, want 530", err)
	}
	c, err := dialFTP(t, s, "pw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.FileSize("f"); replyCode(err) != 550 {
		t.Errorf("SIZE of a missing file: %v, want 550", err)
	}
	if err := c.Stor("f", strings.NewReader("0123456789")); err != nil {
		t.Fatal(err)
	}
	if err := c.StorFrom("f", strings.NewReader("ab"), 4); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "f")); string(b) != "0123ab6789" {
		t.Errorf("after REST 4 + STOR ab: %q, want 0123ab6789", b)
	}
	if err := c.StorFrom("f", strings.NewReader("zz"), 11); replyCode(err) != 554 {
		t.Errorf("REST past the end + STOR: %v, want 554", err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "f")); string(b) != "0123ab6789" {
		t.Errorf("after a refused STOR: %q", b)
	}
	if n, err := c.FileSize("f"); err != nil || n != 10 {
		t.Errorf("SIZE: %d, %v", n, err)
	}
	r, err := c.RetrFrom("f", 6)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	if err != nil || string(b) != "6789" {
		t.Errorf("REST 6 + RETR: %q, %v", b, err)
	}
	if _, err := c.RetrFrom("f", 11); replyCode(err) != 554 {
		t.Errorf("REST past the end + RETR: %v, want 554", err)
	}
}

// TestFTPServerHash: XSHA256 of a whole file and of a byte range, as
// proftpd's mod_digest answers them, and FEAT offers it.
func TestFTPServerHash(t *testing.T) {
	s, root := startFTP(t)
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("abc"), 0o600); err != nil {
		t.Fatal(err)
	}
	tc, err := textproto.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	cmd := func(code int, format string, args ...any) string {
		t.Helper()
		if format != "" {
			if _, err := tc.Cmd(format, args...); err != nil {
				t.Fatal(err)
			}
		}
		_, msg, err := tc.ReadResponse(code)
		if err != nil {
			t.Fatalf("%q: %v", format, err)
		}
		return msg
	}
	cmd(220, "")
	if feat := cmd(211, "FEAT"); !strings.Contains(feat, "XSHA256") {
		t.Errorf("FEAT does not offer XSHA256: %q", feat)
	}
	cmd(331, "USER u")
	cmd(230, "PASS pw")
	// SHA-256("abc") and SHA-256("b").
	if got := cmd(250, "XSHA256 f"); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("XSHA256 f: %q", got)
	}
	if got := cmd(250, "XSHA256 f 1 2"); got != "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d" {
		t.Errorf("XSHA256 f 1 2: %q", got)
	}
	cmd(501, "XSHA256 f 2 4")
}

// TestFTPServerCloseEndsSessions: Close returns with a session logged in
// and another waiting for its data connection after EPSV.
func TestFTPServerCloseEndsSessions(t *testing.T) {
	root := t.TempDir()
	s, err := newFTPServer(root, "u", "pw", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	c1, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	tc := textproto.NewConn(c1)
	_, _, _ = tc.ReadResponse(220)
	for _, l := range []string{"USER u", "PASS pw", "EPSV", "STOR f"} {
		_ = tc.PrintfLine("%s", l)
	}
	var got bytes.Buffer
	for !strings.Contains(got.String(), "229 ") { // EPSV answered: STOR is next
		line, err := tc.ReadLine()
		if err != nil {
			t.Fatal(err)
		}
		got.WriteString(line + "\n")
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second): // far below dataWait
		t.Fatal("Close still waiting after 10 s")
	}
}
