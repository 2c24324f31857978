package transfer_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/openhaul/haul/transfer"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in                       string
		scheme, addr, user, path string
	}{
		{"ftp://h/dir/f.bin", "ftp", "h:21", "", "dir/f.bin"},
		{"ftp://h:/sub/", "ftp", "h:21", "", "sub/"},
		{"ftp://h:65535//", "ftp", "h:65535", "", "/"},
		{"ftp://anonymous@h/f", "ftp", "h:21", "anonymous", "f"},
		{"ftp://u:p@h:2121//srv/f", "ftp", "h:2121", "u", "/srv/f"},
		{"ftps://u@h/f", "ftps", "h:21", "u", "f"},
		{"ftps+implicit://u@h/f", "ftps+implicit", "h:990", "u", "f"},
		{"sftp://u@h/f", "sftp", "h:22", "u", "f"},
		{"sftp://u@h/~/d/f", "sftp", "h:22", "u", "d/f"},
		{"sftp://u@[::1]:2222//abs/f", "sftp", "[::1]:2222", "u", "/abs/f"},
		{"SFTP://u@h/f%20x", "sftp", "h:22", "u", "f x"},
	} {
		e, err := transfer.ParseURL(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if e.Scheme != tc.scheme || e.Addr() != tc.addr || e.User != tc.user || e.Path != tc.path {
			t.Errorf("%s: got %s %s %s %q", tc.in, e.Scheme, e.Addr(), e.User, e.Path)
		}
	}
}

func TestParseURLRejects(t *testing.T) {
	if _, err := transfer.ParseURL("http://h/f"); !errors.Is(err, transfer.ErrUnsupportedScheme) {
		t.Errorf("http: %v", err)
	}
	if _, err := transfer.ParseURL("ftp://h/a%0D%0ADELE%20b"); !errors.Is(err, transfer.ErrInvalidPath) {
		t.Errorf("CRLF: %v", err)
	}
	if _, err := transfer.ParseURL("ftp://h/a%00b"); !errors.Is(err, transfer.ErrInvalidPath) {
		t.Errorf("NUL: %v", err)
	}
	if _, err := transfer.ParseURL("ftp://h/a%0Ab"); errors.Is(err, transfer.ErrInvalidURL) {
		t.Errorf("a bad path is not a bad URL: %v", err)
	}
	for _, in := range []string{
		"ftp://u:s3cret@h:bad/f",
		"ftp://u:s3cret@h:0/f",
		"ftp://u:s3cret@h:99999/f",
		"ftp://u:s3cret@h:65536/f",
		"ftp://::",
		"ftp://u:s3cret@h:21:22/f",
		"ftp:///f",
		"ftp://u:s3cret@/f",
		"ftp:h/f",
		"ftp://u:s3cret@h/f?x=1",
		"ftp://u:s3cret@h/f#frag",
		"ftp://a..b/f",
		"http://u:s3cret@h/f",
	} {
		_, err := transfer.ParseURL(in)
		var ue *transfer.URLError
		if !errors.Is(err, transfer.ErrInvalidURL) || !errors.As(err, &ue) {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: password shown: %v", in, err)
		}
		if errors.Is(err, transfer.ErrInvalidPath) {
			t.Errorf("%s: a bad URL is not a bad path: %v", in, err)
		}
	}
}

// An sftp:// URL needs a user: the URL's, or Config.User.
func TestSFTPUser(t *testing.T) {
	if _, err := transfer.Open("sftp://h/f", transfer.Config{InsecureIgnoreHostKey: true, Password: "x"}); !errors.Is(err, transfer.ErrInvalidURL) {
		t.Errorf("no user: %v", err)
	}
	if _, err := transfer.Open("sftp://h/f", transfer.Config{User: "u", InsecureIgnoreHostKey: true, Password: "x"}); err != nil {
		t.Errorf("Config.User: %v", err)
	}
}

func TestRedactNeverShowsPassword(t *testing.T) {
	for _, in := range []string{"ftp://u:s3cret@h/f", "sftp://u:s3cret@h:22//x", "ftp://u:s3cret@h:bad/f", "ftp://u:s3cret@h/%zz"} {
		got := transfer.Redact(in)
		if strings.Contains(got, "s3cret") {
			t.Errorf("Redact(%q) = %q", in, got)
		}
	}
	if got := transfer.Redact("ftp://u:s3cret@h:0/f"); got != "<invalid URL>" {
		t.Errorf("got %q", got)
	}
	if got := transfer.Redact("sftp://u:pw@h:22//abs/f"); got != "sftp://u@h:22//abs/f" {
		t.Errorf("got %q", got)
	}
}
