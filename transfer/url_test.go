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
		{"ftp://h/dir/f.bin", "ftp", "h:21", "anonymous", "dir/f.bin"},
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
	_, err := transfer.ParseURL("ftp://u:s3cret@h:bad/f")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad port: %v", err)
	}
}

func TestRedactNeverShowsPassword(t *testing.T) {
	for _, in := range []string{"ftp://u:s3cret@h/f", "sftp://u:s3cret@h:22//x", "ftp://u:s3cret@h:bad/f", "ftp://u:s3cret@h/%zz"} {
		got := transfer.Redact(in)
		if strings.Contains(got, "s3cret") {
			t.Errorf("Redact(%q) = %q", in, got)
		}
	}
	if got := transfer.Redact("sftp://u:pw@h:22//abs/f"); got != "sftp://u@h:22//abs/f" {
		t.Errorf("got %q", got)
	}
}
