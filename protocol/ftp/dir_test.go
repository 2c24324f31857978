package ftp_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openhaul/haul/protocol"
	"github.com/openhaul/haul/protocol/ftp"
)

// entryMap indexes a listing by name, failing on duplicates.
func entryMap(t *testing.T, entries []protocol.DirEntry) map[string]protocol.DirEntry {
	t.Helper()
	m := make(map[string]protocol.DirEntry, len(entries))
	for _, e := range entries {
		if _, dup := m[e.Name]; dup {
			t.Fatalf("%q listed twice", e.Name)
		}
		m[e.Name] = e
	}
	return m
}

func sortedNames(entries []protocol.DirEntry) []string {
	var names []string
	for _, e := range entries {
		names = append(names, e.Name)
	}
	slices.Sort(names)
	return names
}

// countPrefix counts the commands starting with prefix.
func countPrefix(cmds []string, prefix string) int {
	n := 0
	for _, c := range cmds {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func TestReadDirMLSD(t *testing.T) {
	d := &dirFake{mlst: true, listing: func(verb, arg string) ([]string, int) {
		if verb != "MLSD" || arg != "dir" {
			return nil, 550
		}
		return []string{
			"type=cdir;modify=20240102030405; .",
			"type=pdir;modify=20240102030405; ..",
			"type=file;size=5;modify=20240102030405; plain.txt",
			"type=file;size=0;modify=20231231235959; with  two spaces ",
			"type=file;size=1234567890123;modify=20240102030405; ünïcødé ☃.bin",
			"type=dir;modify=20240102030405; sub dir",
			"type=OS.unix=symlink;modify=20240102030405; link",
			"type=file;size=1;modify=20240102030405; ../../etc/passwd",
			"type=file;size=1;modify=20240102030405; a/b",
			"type=file;size=1;modify=20240102030405; nul\x00name",
			"type=file;size=1;modify=20240102030405; cr\rname",
			"garbage line the parser drops",
		}, 0
	}}
	srv := newFakeServer(t, withDirs(d))
	srv.setFile("dir/plain.txt", []byte("hello"))
	s := dialFake(t, srv)
	ctx := context.Background()
	entries, err := s.ReadDir(ctx, "dir")
	if err != nil {
		t.Fatalf("ReadDir: %v", err)
	}
	m := entryMap(t, entries)
	want := []string{"with  two spaces ", "link", "plain.txt", "sub dir", "ünïcødé ☃.bin"}
	slices.Sort(want)
	if got := sortedNames(entries); !slices.Equal(got, want) {
		t.Fatalf("names = %q, want %q", got, want)
	}
	if e := m["plain.txt"]; e.Size != 5 || e.IsDir || !e.ModTime.Equal(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("plain.txt = %+v", e)
	}
	if e := m["ünïcødé ☃.bin"]; e.Size != 1234567890123 {
		t.Errorf("big file = %+v", e)
	}
	if e := m["sub dir"]; !e.IsDir || e.Size != 0 {
		t.Errorf("sub dir = %+v", e)
	}
	if e := m["link"]; e.IsDir {
		t.Errorf("link = %+v", e)
	}
	cmds := srv.commands()
	if countPrefix(cmds, "MLSD dir") != 1 || countPrefix(cmds, "LIST") != 0 {
		t.Fatalf("commands = %q", cmds)
	}
	// The control connection is in step afterwards.
	if err := s.Check(ctx); err != nil {
		t.Fatalf("Check after ReadDir: %v", err)
	}
	if fi, err := s.Stat(ctx, "dir/plain.txt"); err != nil || fi.Size != 5 {
		t.Fatalf("Stat after ReadDir = %+v, %v", fi, err)
	}
}

// vsftpd's LIST: every regular file's line has a hyphen as its fourth
// byte, the mark of a multi-line reply. Thousands of them must neither end
// the session nor put later replies out of step.
func TestReadDirLISTManyLines(t *testing.T) {
	const n = 5000
	var lines []string
	lines = append(lines,
		"drwxr-xr-x    2 1001     1001         4096 Nov 30 12:26 .",
		"drwxr-xr-x    5 1001     1001         4096 Nov 30 12:26 ..",
		"-rw-r--r--    1 1001     1001            2 Nov 30 12:26 .hidden",
		"drwxr-xr-x    2 1001     1001         4096 Jan 02  2024 a dir",
		"lrwxrwxrwx    1 1001     1001            7 Jan 02  2024 ln -> target",
		"-rw-r--r--    1 1001     1001            9 Jan 02  2024  lead space",
		"123-456 looks like a reply",
		"550 looks like a reply too",
	)
	for i := range n {
		lines = append(lines, fmt.Sprintf("-rw-r--r--    1 1001     1001     %8d Jan 02  2024 file %05d ü", i, i))
	}
	d := &dirFake{listing: func(verb, arg string) ([]string, int) {
		if verb == "LIST" && arg == "-a dir" {
			return lines, 0
		}
		return nil, 550
	}}
	srv := newFakeServer(t, withDirs(d))
	// A debug logger sees the listing through the wiretap too.
	var logged strings.Builder
	s := dialFake(t, srv, ftp.WithLogger(slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	ctx := context.Background()
	for round := range 2 {
		entries, err := s.ReadDir(ctx, "dir")
		if err != nil {
			t.Fatalf("round %d: ReadDir: %v", round, err)
		}
		if len(entries) != n+4 {
			t.Fatalf("round %d: %d entries, want %d", round, len(entries), n+4)
		}
		m := entryMap(t, entries)
		if e := m["file 00042 ü"]; e.Size != 42 || e.IsDir || !e.ModTime.IsZero() {
			t.Errorf("file 00042 = %+v (LIST times are not reported)", e)
		}
		if e := m["a dir"]; !e.IsDir {
			t.Errorf("a dir = %+v", e)
		}
		if e := m[".hidden"]; e.Size != 2 {
			t.Errorf(".hidden = %+v", e)
		}
		if _, ok := m[" lead space"]; !ok {
			t.Errorf("leading space lost: %q", sortedNames(entries)[:5])
		}
		if e, ok := m["ln"]; !ok || e.IsDir {
			t.Errorf("ln = %+v, %v", e, ok)
		}
		if err := s.Check(ctx); err != nil {
			t.Fatalf("round %d: Check after ReadDir: %v", round, err)
		}
	}
	if err := s.Rename(ctx, "nothing", "x"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Rename of a missing file after listings = %v, want fs.ErrNotExist", err)
	}
	cmds := srv.commands()
	if countPrefix(cmds, "LIST -a dir") != 2 || countPrefix(cmds, "LIST dir") != 0 {
		t.Fatalf("commands = %q", cmds)
	}
	if !strings.Contains(logged.String(), "file 04999") {
		t.Error("listing lines not in the debug log")
	}
}

// A server that takes "-a" for a path (it refuses it, or lists nothing) is
// asked again without it.
func TestReadDirLISTWithoutDashA(t *testing.T) {
	for _, refuse := range []int{550, 450, 0} {
		t.Run(fmt.Sprint(refuse), func(t *testing.T) {
			d := &dirFake{listing: func(verb, arg string) ([]string, int) {
				switch arg {
				case "-a -dir":
					return nil, 550 // would be options
				case "-a ./-dir":
					return nil, refuse
				case "./-dir":
					return []string{"-rw-r--r--    1 1001     1001            2 Nov 30 12:26 f"}, 0
				}
				return nil, 550
			}}
			srv := newFakeServer(t, withDirs(d))
			srv.mu.Lock()
			srv.dirs["-dir"] = true
			srv.mu.Unlock()
			s := dialFake(t, srv)
			entries, err := s.ReadDir(context.Background(), "-dir")
			if err != nil || len(entries) != 1 || entries[0].Name != "f" || entries[0].Size != 2 {
				t.Fatalf("ReadDir = %+v, %v; commands %q", entries, err, srv.commands())
			}
		})
	}
}

func TestReadDirNotDirMissingBadPath(t *testing.T) {
	for _, mlst := range []bool{false, true} {
		t.Run(fmt.Sprintf("mlst=%v", mlst), func(t *testing.T) {
			d := &dirFake{mlst: mlst, listing: func(verb, arg string) ([]string, int) {
				// vsftpd lists a file and a missing path happily.
				return []string{"-rw-r--r--    1 1001     1001            2 Nov 30 12:26 f"}, 0
			}}
			srv := newFakeServer(t, withDirs(d))
			srv.setFile("f", []byte("xy"))
			s := dialFake(t, srv)
			ctx := context.Background()
			_, err := s.ReadDir(ctx, "f")
			var pe *protocol.Error
			if !errors.Is(err, protocol.ErrInvalidPath) || errors.Is(err, fs.ErrNotExist) ||
				!errors.As(err, &pe) || pe.Op != "readdir" {
				t.Fatalf("ReadDir(file) = %#v, want ErrInvalidPath", err)
			}
			_, err = s.ReadDir(ctx, "missing")
			if !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &pe) || pe.Op != "readdir" {
				t.Fatalf("ReadDir(missing) = %v, want fs.ErrNotExist", err)
			}
			before := len(srv.commands())
			for _, bad := range []string{"", "d\r\nDELE f", "d\n", "d\x00"} {
				if _, err := s.ReadDir(ctx, bad); !errors.Is(err, protocol.ErrInvalidPath) {
					t.Fatalf("ReadDir(%q) = %v", bad, err)
				}
				if err := s.Mkdir(ctx, bad); !errors.Is(err, protocol.ErrInvalidPath) {
					t.Fatalf("Mkdir(%q) = %v", bad, err)
				}
			}
			if got := srv.commands()[before:]; len(got) != 0 {
				t.Fatalf("commands sent for invalid paths: %q", got)
			}
			cmds := srv.commands()
			if countPrefix(cmds, "MLSD") != 0 || countPrefix(cmds, "LIST") != 0 {
				t.Fatalf("listed what is no directory: %q", cmds)
			}
		})
	}
}

func TestReadDirHostile(t *testing.T) {
	cases := []struct {
		name   string
		stream func(verb, arg string, d net.Conn) bool
		usable bool // the session survives
		big    bool // a million lines: skipped with -short
	}{
		{"huge size", func(_, _ string, d net.Conn) bool {
			fmt.Fprintf(d, "type=file;size=%d; big\r\n", uint64(1<<63))
			return true
		}, true, false},
		{"line over 64 KiB", func(_, _ string, d net.Conn) bool {
			_, _ = d.Write([]byte("type=file;size=1; " + strings.Repeat("x", 100<<10) + "\r\n"))
			waitClosed(d)
			return true
		}, true, false},
		{"more than MaxDirEntries", func(_, _ string, d net.Conn) bool {
			w := bufio.NewWriterSize(d, 1<<16)
			for i := range protocol.MaxDirEntries + 1 {
				if _, err := fmt.Fprintf(w, "type=file;size=1; %d\r\n", i); err != nil {
					return true
				}
			}
			_ = w.Flush()
			return true
		}, true, true},
		{"endless listing", func(_, _ string, d net.Conn) bool {
			w := bufio.NewWriterSize(d, 1<<16)
			line := []byte("type=file;size=1; .\r\n") // dropped, but counted
			for range 2 * protocol.MaxDirEntries {
				if _, err := w.Write(line); err != nil {
					return false
				}
			}
			_ = w.Flush()
			return true
		}, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.big && testing.Short() {
				t.Skip("a million listing lines; skipped with -short")
			}
			d := &dirFake{mlst: true, stream: c.stream}
			srv := newFakeServer(t, withDirs(d))
			s := dialFake(t, srv)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, err := s.ReadDir(ctx, "dir")
			if !errors.Is(err, protocol.ErrProtocol) || protocol.IsRetryable(err) {
				t.Fatalf("ReadDir = %v, want ErrProtocol, not retried", err)
			}
			t.Logf("error: %v", err)
			if err := s.Check(ctx); (err == nil) != c.usable {
				t.Fatalf("Check after the listing = %v, want usable=%v", err, c.usable)
			}
		})
	}
}

// The final reply read ahead with the 150, then a listing whose last line
// has no end: the wiretap must not take that line's start for part of the
// next command (it would log it so, and classify the reply by its verb).
func TestReadDirReplyReadAhead(t *testing.T) {
	d := &dirFake{mlst: true, early226: true, stream: func(_, _ string, c net.Conn) bool {
		fmt.Fprintf(c, "type=file;size=1; first\r\ntype=file;size=2; last")
		return true
	}}
	srv := newFakeServer(t, withDirs(d))
	var logged strings.Builder
	s := dialFake(t, srv, ftp.WithLogger(slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	ctx := context.Background()
	entries, err := s.ReadDir(ctx, "dir")
	if err != nil || len(entries) != 2 {
		t.Fatalf("ReadDir = %+v, %v", entries, err)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logged.String(), `msg="ftp command" cmd=NOOP`) {
		t.Fatalf("NOOP not logged as a command:\n%s", logged.String())
	}
}

func TestReadDirCancel(t *testing.T) {
	d := &dirFake{mlst: true, stream: func(_, _ string, c net.Conn) bool {
		fmt.Fprintf(c, "type=file;size=1; first\r\n")
		waitClosed(c) // then nothing: the client must give up on ctx
		return false
	}}
	srv := newFakeServer(t, withDirs(d))
	s := dialFake(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	_, err := s.ReadDir(ctx, "dir")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadDir = %v, want context.Canceled", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("ReadDir returned %v after the cancellation", took)
	}
	if err := s.Check(context.Background()); err == nil {
		t.Fatal("session usable after cancellation")
	}
	if _, err := s.ReadDir(context.Background(), "dir"); err == nil {
		t.Fatal("ReadDir on a cancelled session succeeded")
	}
}

func TestMkdir(t *testing.T) {
	for _, mlst := range []bool{false, true} {
		t.Run(fmt.Sprintf("mlst=%v", mlst), func(t *testing.T) {
			d := &dirFake{mlst: mlst}
			srv := newFakeServer(t, withDirs(d))
			srv.setFile("file", []byte("x"))
			s := dialFake(t, srv)
			ctx := context.Background()
			if err := s.Mkdir(ctx, "new"); err != nil {
				t.Fatalf("Mkdir(new): %v", err)
			}
			if err := s.Mkdir(ctx, "new/sub"); err != nil {
				t.Fatalf("Mkdir(new/sub): %v", err)
			}
			kinds := []struct {
				path string
				kind error
			}{
				{"new", fs.ErrExist},
				{"dir", fs.ErrExist},
				{"file", fs.ErrExist},
				{"missing/sub", fs.ErrNotExist},
				{"new/missing/sub", fs.ErrNotExist},
				{"file/sub", protocol.ErrInvalidPath},
			}
			for _, k := range kinds {
				err := s.Mkdir(ctx, k.path)
				var pe *protocol.Error
				if !errors.Is(err, k.kind) || !errors.As(err, &pe) || pe.Kind != k.kind || pe.Code != 550 || pe.Op != "mkdir" {
					t.Errorf("Mkdir(%q) = %#v, want %v", k.path, err, k.kind)
					continue
				}
				if !strings.Contains(err.Error(), "Create directory operation failed") {
					t.Errorf("Mkdir(%q): the server's words are lost: %v", k.path, err)
				}
				for _, other := range []error{fs.ErrExist, fs.ErrNotExist, fs.ErrPermission, protocol.ErrInvalidPath} {
					if other != k.kind && errors.Is(err, other) {
						t.Errorf("Mkdir(%q) = %v matches %v too", k.path, err, other)
					}
				}
			}
			if err := s.Check(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestMkdirServerAnswers(t *testing.T) {
	cases := []struct {
		code int
		want error // nil: success
	}{
		{257, nil},
		{250, nil}, // not RFC 959's answer, but success
		{550, fs.ErrPermission},
		{553, fs.ErrPermission},
		{421, protocol.ErrTransient},
		{502, protocol.ErrUnsupported},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.code), func(t *testing.T) {
			d := &dirFake{mkd: func(string) (int, string) { return c.code, "as you wish" }}
			srv := newFakeServer(t, withDirs(d))
			s := dialFake(t, srv)
			err := s.Mkdir(context.Background(), "dir/new") // parent there, path missing
			switch {
			case c.want == nil && err != nil:
				t.Fatalf("Mkdir = %v", err)
			case c.want != nil && !errors.Is(err, c.want):
				t.Fatalf("Mkdir = %v, want %v", err, c.want)
			}
		})
	}
}
