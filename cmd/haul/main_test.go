package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openhaul/haul/protocol"
	psftp "github.com/openhaul/haul/protocol/sftp"
	"github.com/openhaul/haul/transfer"
)

// listener is a TCP listener the test owns; it counts the connections it
// accepted, so a test can assert that a command made none.
type listener struct {
	ln       net.Listener
	accepted atomic.Int32
}

func newListener(t *testing.T) *listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &listener{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return l
}

// isolate keeps the user's environment out of a test: no HAUL_PASSWORD,
// and a HOME without ~/.netrc or ~/.ssh.
func isolate(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("HAUL_PASSWORD", "")
	return home
}

// TestBadInputsFailAtOnce: every command that can never succeed exits
// with its code within a second, without a connection, saying why.
func TestBadInputsFailAtOnce(t *testing.T) {
	isolate(t)
	l := newListener(t)
	addr := l.ln.Addr().String()
	ftp := "ftp://u@" + addr + "/f.bin"
	ftps := "ftps://u@" + addr + "/f.bin"
	sftp := "sftp://u@" + addr + "/f.bin"
	dir := t.TempDir()
	src := filepath.Join(dir, "src.bin")
	if err := os.WriteFile(src, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(dir, "out.bin")
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no command", []string{}, exitUsage, "no command given"},
		{"one argument", []string{"put", "only-one"}, exitUsage, "want at least 2 arguments"},
		{"unknown command", []string{"bogus"}, exitUsage, "unknown command"},
		{"retries not a number", []string{"get", "--retries", "x", ftp, local}, exitUsage, "invalid argument"},
		{"unsupported scheme", []string{"get", "http://h/f", local}, exitUsage, "unsupported URL scheme"},
		{"CRLF in path", []string{"put", "--json", src, "ftp://h/a%0Ab"}, exitUsage, "invalid path"},
		{"port 0", []string{"get", "ftp://u@127.0.0.1:0/f", local}, exitUsage, "port 0 is not in 1-65535"},
		{"port 99999", []string{"put", src, "sftp://u@127.0.0.1:99999/f"}, exitUsage, "port 99999 is not in 1-65535"},
		{"ftp://::", []string{"get", "ftp://::", local}, exitUsage, "IPv6 address in brackets"},
		{"no host", []string{"get", "ftp:///f", local}, exitUsage, "no host"},
		{"colons in host", []string{"get", "ftp://h:21:22/f", local}, exitUsage, "IPv6 address in brackets"},
		{"empty label", []string{"get", "ftp://a..b/f", local}, exitUsage, "empty label"},
		{"query", []string{"get", ftp + "?x=1", local}, exitUsage, "query or fragment"},
		{"malformed", []string{"get", "ftp://u:s3cret@h:bad/f", local}, exitUsage, "malformed"},
		{"sftp without credentials", []string{"get", sftp, local}, exitUsage, "hint: no password was given"},
		{"sftp without user", []string{"get", "sftp://" + addr + "/f", local}, exitUsage, "needs a user name"},
		{"negative stall timeout", []string{"get", "--stall-timeout", "-1s", ftp, local}, exitUsage, "--stall-timeout -1s: want a positive duration"},
		{"zero stall timeout", []string{"get", "--stall-timeout", "0", ftp, local}, exitUsage, "--stall-timeout 0s: want a positive duration"},
		{"negative timeout", []string{"get", "--timeout", "-5s", ftp, local}, exitUsage, "--timeout -5s: want a positive duration"},
		{"retries 0", []string{"get", "--retries", "0", ftp, local}, exitUsage, "--retries 0: want at least 1"},
		{"negative retries", []string{"get", "--retries", "-2", ftp, local}, exitUsage, "--retries -2: want at least 1"},
		{"limit-rate overflow", []string{"get", "--limit-rate", "99999999999G", ftp, local}, exitUsage, "is more than 9223372036854775807 bytes"},
		{"limit-rate empty", []string{"get", "--limit-rate", "", ftp, local}, exitUsage, "--limit-rate: empty value"},
		{"limit-rate unit", []string{"get", "--limit-rate", "1.5X", ftp, local}, exitUsage, "want a number with an optional unit"},
		{"limit-rate zero", []string{"get", "--limit-rate", "0", ftp, local}, exitUsage, "less than one byte"},
		{"limit-rate negative", []string{"get", "--limit-rate", "-1M", ftp, local}, exitUsage, "want a number with an optional unit"},
		{"identity missing", []string{"get", "--identity", filepath.Join(dir, "nokey"), sftp, local}, exitUsage, "identity file: open"},
		{"identity not a key", []string{"get", "--identity", src, sftp, local}, exitUsage, "identity file " + src},
		{"direct on get", []string{"get", "--direct", ftp, local}, exitUsage, "--direct applies to put only"},
		{"insecure-host-key on ftps", []string{"get", "--insecure-host-key", ftps, local}, exitUsage, "--insecure-host-key applies to sftp:// URLs only, not ftps://"},
		{"identity on ftp", []string{"put", "--identity", src, src, ftp}, exitUsage, "--identity applies to sftp:// URLs only"},
		{"known-hosts on ftp", []string{"put", "--known-hosts", src, src, ftp}, exitUsage, "--known-hosts applies to sftp:// URLs only"},
		{"no-exec-hash on ftp", []string{"put", "--no-exec-hash", src, ftp}, exitUsage, "--no-exec-hash applies to sftp:// URLs only"},
		{"ca-file on sftp", []string{"get", "--ca-file", src, sftp, local}, exitUsage, "--ca-file applies to ftps:// and ftps+implicit:// URLs only, not sftp://"},
		{"ca-file on ftp", []string{"get", "--ca-file", src, ftp, local}, exitUsage, "plain FTP has no TLS"},
		{"ca-file not PEM", []string{"get", "--ca-file", src, ftps, local}, exitUsage, "no PEM certificate"},
		{"accept-new-host-key on ftp", []string{"get", "--accept-new-host-key", ftp, local}, exitUsage, "--accept-new-host-key applies to sftp:// URLs only, not ftp://"},
		{"accept-new-host-key on ftps", []string{"put", "--accept-new-host-key", src, ftps}, exitUsage, "--accept-new-host-key applies to sftp:// URLs only, not ftps://"},
		{"insecure and accept-new", []string{"get", "--insecure-host-key", "--accept-new-host-key", "--password-file", src, sftp, local}, exitUsage, "--insecure-host-key and --accept-new-host-key contradict"},
		{"insecure and known-hosts", []string{"get", "--insecure-host-key", "--known-hosts", src, sftp, local}, exitUsage, "contradict"},
		{"segments 17", []string{"get", "--segments", "17", ftp, local}, exitUsage, "--segments 17: want 0 (auto) to 16"},
		{"segments negative", []string{"get", "--segments", "-1", ftp, local}, exitUsage, "--segments -1"},
		{"part-suffix with slash", []string{"get", "--part-suffix", "/x", ftp, local}, exitUsage, "--part-suffix \"/x\""},
		{"verify unknown", []string{"get", "--verify", "bogus", ftp, local}, exitUsage, "unknown verification policy"},
		{"json with stdout", []string{"get", "--json", ftp, "-"}, exitUsage, "--json prints on stdout"},
		{"stdin to a directory", []string{"put", "-", "ftp://u@" + addr + "/sub/"}, exitUsage, "needs the remote file's name"},
		{"get into a fifo", []string{"get", ftp, fifo}, exitUsage, "not a regular file (a fifo)"},
		{"get onto a device", []string{"get", ftp, os.DevNull}, exitUsage, "not a regular file (a character device)"},
		{"get onto a symlink", []string{"get", ftp, link}, exitUsage, "not a regular file (a symbolic link)"},
		{"get a directory URL into a directory", []string{"get", "ftp://u@" + addr + "/sub/", dir}, exitUsage, "names no file"},
		{"put a fifo", []string{"put", fifo, ftp}, exitUsage, "not a regular file (a fifo)"},
		{"put a directory", []string{"put", dir, ftp}, exitUsage, "not a regular file (a directory)"},
		{"get into a missing directory", []string{"get", ftp, filepath.Join(dir, "nodir") + "/"}, exitNotFound, "no such file or directory"},
		{"put a missing file", []string{"put", filepath.Join(dir, "nofile"), ftp}, exitNotFound, "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			start := time.Now()
			code := run(tc.args, strings.NewReader(""), &out, &errb)
			elapsed := time.Since(start)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tc.code, errb.String())
			}
			if elapsed > time.Second {
				t.Errorf("took %v", elapsed)
			}
			if !strings.Contains(errb.String(), tc.msg) {
				t.Errorf("stderr does not say %q:\n%s", tc.msg, errb.String())
			}
			if strings.Contains(errb.String(), "s3cret") {
				t.Errorf("password shown: %s", errb.String())
			}
		})
	}
	if n := l.accepted.Load(); n != 0 {
		t.Errorf("the listener accepted %d connections", n)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "keep me" {
		t.Errorf("victim changed: %q %v", b, err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link was replaced: %v", err)
	}
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("the fifo was replaced: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.part")); len(m) != 0 {
		t.Errorf("partials left: %v", m)
	}
}

func TestJSONOnFailureHasNoPassword(t *testing.T) {
	isolate(t)
	var out, errb bytes.Buffer
	code := run([]string{"put", "--json", "/nonexistent/file", "ftp://u:s3cret@127.0.0.1:1/f"}, strings.NewReader(""), &out, &errb)
	if code == exitOK {
		t.Fatal("want failure")
	}
	if strings.Contains(out.String()+errb.String(), "s3cret") {
		t.Fatalf("password leaked: %s %s", out.String(), errb.String())
	}
	var rep report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("stdout is not one JSON object: %q", out.String())
	}
	if rep.OK || rep.Op != "put" || rep.Error == nil || rep.URL != "ftp://u@127.0.0.1:1/f" {
		t.Fatalf("report %+v", rep)
	}
}

// A password in the URL is warned about, once, without showing it.
func TestPasswordInURLWarnsOnce(t *testing.T) {
	isolate(t)
	var out, errb bytes.Buffer
	run([]string{"put", "/nonexistent/file", "ftp://u:s3cret@127.0.0.1:1/f"}, strings.NewReader(""), &out, &errb)
	if n := strings.Count(errb.String(), "visible to every local user"); n != 1 {
		t.Errorf("%d warnings: %s", n, errb.String())
	}
	if !strings.Contains(errb.String(), "HAUL_PASSWORD or --password-file") || strings.Contains(errb.String(), "s3cret") {
		t.Errorf("stderr: %s", errb.String())
	}
}

// A put into a URL that ends in "/" reports the file it wrote to.
func TestPutIntoDirectoryNamesTheFile(t *testing.T) {
	isolate(t)
	var out, errb bytes.Buffer
	run([]string{"put", "--json", "/nonexistent/file.bin", "ftp://u@127.0.0.1:1/sub/"}, strings.NewReader(""), &out, &errb)
	var rep report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.URL != "ftp://u@127.0.0.1:1/sub/file.bin" {
		t.Errorf("url %q", rep.URL)
	}
}

// The unknown-host hints name --accept-new-host-key besides ssh-keyscan.
func TestHintUnknownHostNamesAcceptNew(t *testing.T) {
	ep, err := transfer.ParseURL("sftp://u@files.example:2222/f")
	if err != nil {
		t.Fatal(err)
	}
	hc := hintContext{op: "get", ep: ep, knownHosts: "kh"}
	for _, err := range []error{
		&psftp.HostKeyError{Host: "[files.example]:2222", Received: "ssh-ed25519 SHA256:abc"},
		&protocol.Error{Op: "dial", Kind: protocol.ErrHostKey, Err: fmt.Errorf("reading known_hosts: %w", fs.ErrNotExist)},
	} {
		h := hint(err, hc)
		if !strings.Contains(h, "--accept-new-host-key") || !strings.Contains(h, "ssh-keyscan -p 2222 files.example >> kh") {
			t.Errorf("%v: hint %q", err, h)
		}
	}
	// A changed key is not something to accept.
	h := hint(&psftp.HostKeyError{Host: "h", Received: "r", Expected: []string{"e"}}, hc)
	if strings.Contains(h, "accept-new") {
		t.Errorf("mismatch hint %q offers --accept-new-host-key", h)
	}
}
