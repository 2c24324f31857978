package integration_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openhaul/haul/integration/testbed"
	"github.com/openhaul/haul/protocol"
)

// dirSession is a session that lists and makes directories.
type dirSession interface {
	protocol.Session
	protocol.DirReader
	protocol.DirMaker
}

// dirTarget is one server of the test bed with a way to log in to it.
type dirTarget struct {
	name string
	srv  testbed.Server
	dial func(t *testing.T) dirSession
	// remote turns a path relative to the login directory into the path
	// the session is given (SFTP: absolute, FTP: as it is).
	remote func(name string) string
	// precise: the server lists modification times (MLSD, SFTP), not
	// only LIST's.
	precise bool
}

func dirTargets(env *testbed.Env) []dirTarget {
	var targets []dirTarget
	for _, tg := range pftpTargets(env) {
		targets = append(targets, dirTarget{
			name: tg.name, srv: tg.srv,
			dial: func(t *testing.T) dirSession {
				s, rec := pftpDial(t, env, tg)
				t.Cleanup(func() {
					if t.Failed() {
						t.Logf("%s control dialogue:\n%s", tg.name, rec)
					}
				})
				return s
			},
			remote:  func(name string) string { return name },
			precise: tg.srv.Name != env.VsftpdPlain.Name && tg.srv.Name != env.VsftpdFTPS.Name,
		})
	}
	for _, srv := range env.SFTPServers() {
		targets = append(targets, dirTarget{
			name: strings.ToLower(srv.Name), srv: srv,
			dial:    func(t *testing.T) dirSession { return psftpDial(t, env, srv, true) },
			remote:  srv.RemotePath,
			precise: true,
		})
	}
	return targets
}

// dirKinds are the kinds a listing or mkdir error can have; dirOnlyKind
// fails unless err matches kind and no other of them.
var dirKinds = []error{fs.ErrExist, fs.ErrNotExist, fs.ErrPermission, protocol.ErrInvalidPath,
	protocol.ErrProtocol, protocol.ErrTransient, protocol.ErrUnsupported}

func dirOnlyKind(t *testing.T, what string, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Errorf("%s = %v, want %v", what, err, kind)
		return
	}
	for _, other := range dirKinds {
		if other != kind && errors.Is(err, other) {
			t.Errorf("%s = %v matches %v too", what, err, other)
		}
	}
	t.Logf("%s: %v", what, err)
}

func TestDirListAndMkdir(t *testing.T) {
	env := testbed.Require(t)
	for _, tg := range dirTargets(env) {
		t.Run(tg.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			s := tg.dial(t)
			base := fmt.Sprintf("dir-%s-%d", strings.ReplaceAll(t.Name(), "/", "_"), time.Now().UnixNano())
			t.Cleanup(func() { _ = os.RemoveAll(tg.srv.LocalPath(base)) })
			r := func(rel string) string { return tg.remote(base + "/" + rel) }
			start := time.Now()

			// A missing parent, then the directories, then one again.
			dirOnlyKind(t, "Mkdir(base/a/b) without base", s.Mkdir(ctx, r("a/b")), fs.ErrNotExist)
			if err := s.Mkdir(ctx, tg.remote(base)); err != nil {
				t.Fatalf("Mkdir(base): %v", err)
			}
			dirOnlyKind(t, "Mkdir(base/a/b) without a", s.Mkdir(ctx, r("a/b")), fs.ErrNotExist)
			if err := s.Mkdir(ctx, r("a")); err != nil {
				t.Fatalf("Mkdir(a): %v", err)
			}
			dirOnlyKind(t, "Mkdir(a) again", s.Mkdir(ctx, r("a")), fs.ErrExist)
			dirOnlyKind(t, "Mkdir(base) again", s.Mkdir(ctx, tg.remote(base)), fs.ErrExist)
			if err := s.Mkdir(ctx, r("a/b")); err != nil {
				t.Fatalf("Mkdir(a/b): %v", err)
			}
			const subdir = "sub dir ünï ☃"
			if err := s.Mkdir(ctx, r(subdir)); err != nil {
				t.Fatalf("Mkdir(%q): %v", subdir, err)
			}
			if fi, err := os.Stat(tg.srv.LocalPath(base + "/a/b")); err != nil || !fi.IsDir() {
				t.Fatalf("a/b on the server: %v, %v", fi, err)
			}

			// Files, uploaded through the session. (No leading or
			// trailing spaces: pure-ftpd's STOR turns a trailing one
			// into "_".)
			files := map[string]int{"f 1.txt": 5, "ünïcødé ☃.bin": 1234, ".hidden": 2, "empty": 0, "two  inner  spaces": 7}
			for name, size := range files {
				w, err := s.OpenWriter(ctx, r(name), 0)
				if err != nil {
					t.Fatalf("OpenWriter(%q): %v", name, err)
				}
				if _, err := w.Write(bytes.Repeat([]byte("x"), size)); err != nil {
					t.Fatalf("Write(%q): %v", name, err)
				}
				if err := w.Close(); err != nil {
					t.Fatalf("Close(%q): %v", name, err)
				}
			}
			dirOnlyKind(t, "Mkdir(file)", s.Mkdir(ctx, r("f 1.txt")), fs.ErrExist)
			dirOnlyKind(t, "Mkdir(file/x)", s.Mkdir(ctx, r("f 1.txt/x")), protocol.ErrInvalidPath)

			entries, err := s.ReadDir(ctx, tg.remote(base))
			if err != nil {
				t.Fatalf("ReadDir(base): %v", err)
			}
			var names []string
			byName := map[string]protocol.DirEntry{}
			for _, e := range entries {
				names = append(names, e.Name)
				byName[e.Name] = e
			}
			slices.Sort(names)
			want := []string{"a", subdir}
			for name := range files {
				want = append(want, name)
			}
			slices.Sort(want)
			if !slices.Equal(names, want) {
				t.Fatalf("ReadDir(base) names = %q, want %q", names, want)
			}
			for name, size := range files {
				e := byName[name]
				if e.IsDir || e.Size != int64(size) {
					t.Errorf("%q = %+v, want a file of %d bytes", name, e, size)
				}
				switch {
				case !tg.precise && !e.ModTime.IsZero():
					t.Errorf("%q: ModTime %v from LIST", name, e.ModTime)
				case tg.precise && (e.ModTime.Before(start.Add(-time.Minute)) || e.ModTime.After(time.Now().Add(time.Minute))):
					t.Errorf("%q: ModTime %v, want about %v", name, e.ModTime, start)
				}
			}
			for _, d := range []string{"a", subdir} {
				if e := byName[d]; !e.IsDir || e.Size != 0 {
					t.Errorf("%q = %+v, want a directory", d, e)
				}
			}
			if sub, err := s.ReadDir(ctx, r("a")); err != nil || len(sub) != 1 || sub[0].Name != "b" || !sub[0].IsDir {
				t.Errorf("ReadDir(a) = %+v, %v", sub, err)
			}
			if sub, err := s.ReadDir(ctx, r(subdir)); err != nil || len(sub) != 0 {
				t.Errorf("ReadDir(%q) = %+v, %v", subdir, sub, err)
			}

			_, err = s.ReadDir(ctx, r("f 1.txt"))
			dirOnlyKind(t, "ReadDir(file)", err, protocol.ErrInvalidPath)
			_, err = s.ReadDir(ctx, r("missing"))
			dirOnlyKind(t, "ReadDir(missing)", err, fs.ErrNotExist)
			_, err = s.ReadDir(ctx, r("missing/deeper"))
			dirOnlyKind(t, "ReadDir(missing/deeper)", err, fs.ErrNotExist)
			for _, bad := range []string{"x\r\nDELE f 1.txt", "x\x00"} {
				_, err := s.ReadDir(ctx, r(bad))
				dirOnlyKind(t, fmt.Sprintf("ReadDir(%q)", bad), err, protocol.ErrInvalidPath)
				dirOnlyKind(t, fmt.Sprintf("Mkdir(%q)", bad), s.Mkdir(ctx, r(bad)), protocol.ErrInvalidPath)
			}

			// More entries than an FTP reply may have lines (vsftpd's
			// LIST lines look like multi-line replies to the wiretap),
			// made on the server's disk directly.
			const many = 1500
			if err := s.Mkdir(ctx, r("many")); err != nil {
				t.Fatalf("Mkdir(many): %v", err)
			}
			local := tg.srv.LocalPath(base + "/many")
			for i := range many {
				if err := os.WriteFile(filepath.Join(local, fmt.Sprintf("file %04d", i)), []byte(strings.Repeat("y", i%17)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			entries, err = s.ReadDir(ctx, r("many"))
			if err != nil {
				t.Fatalf("ReadDir(many): %v", err)
			}
			if len(entries) != many {
				t.Fatalf("ReadDir(many): %d entries, want %d", len(entries), many)
			}
			for _, e := range entries {
				var i int
				if _, err := fmt.Sscanf(e.Name, "file %04d", &i); err != nil || e.Size != int64(i%17) || e.IsDir {
					t.Fatalf("ReadDir(many): entry %+v", e)
				}
			}

			// The session carries on.
			if c, ok := s.(protocol.Checker); ok {
				if err := c.Check(ctx); err != nil {
					t.Fatalf("Check after the listings: %v", err)
				}
			}
			if fi, err := s.Stat(ctx, r("f 1.txt")); err != nil || fi.Size != 5 {
				t.Fatalf("Stat after the listings = %+v, %v", fi, err)
			}
		})
	}
}

// A cancelled listing returns at once and leaves the session unusable.
func TestDirListCancel(t *testing.T) {
	env := testbed.Require(t)
	for _, tg := range dirTargets(env) {
		t.Run(tg.name, func(t *testing.T) {
			s := tg.dial(t)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := s.ReadDir(ctx, tg.remote(".")); !errors.Is(err, context.Canceled) {
				t.Fatalf("ReadDir with a cancelled context = %v", err)
			}
			if err := s.Mkdir(ctx, tg.remote("never")); !errors.Is(err, context.Canceled) {
				t.Fatalf("Mkdir with a cancelled context = %v", err)
			}
			if _, err := os.Stat(tg.srv.LocalPath("never")); err == nil {
				t.Fatal("Mkdir with a cancelled context made the directory")
			}
		})
	}
}
