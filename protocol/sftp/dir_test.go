package sftp_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/openhaul/haul/protocol"
	hsftp "github.com/openhaul/haul/protocol/sftp"
)

func dirNames(entries []protocol.DirEntry) []string {
	var names []string
	for _, e := range entries {
		names = append(names, e.Name)
	}
	slices.Sort(names)
	return names
}

func dirIndex(t *testing.T, entries []protocol.DirEntry) map[string]protocol.DirEntry {
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

// onlyKind fails unless err matches kind and none of the other kinds a
// listing or mkdir can have.
func onlyKind(t *testing.T, what string, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Errorf("%s = %v, want %v", what, err, kind)
		return
	}
	for _, other := range []error{fs.ErrExist, fs.ErrNotExist, fs.ErrPermission, protocol.ErrInvalidPath, protocol.ErrProtocol} {
		if other != kind && errors.Is(err, other) {
			t.Errorf("%s = %v matches %v too", what, err, other)
		}
	}
}

// Listing and mkdir on a real file system, on the data channel and, where
// the server refuses a second channel, through pkg/sftp.
func TestReadDirAndMkdir(t *testing.T) {
	for _, second := range []bool{true, false} {
		t.Run(fmt.Sprintf("second-channel=%v", second), func(t *testing.T) {
			ts := newTestServer(t, nil)
			if !second {
				ts.maxSFTP = 1
			}
			s := dial(t, ts)
			ctx := context.Background()
			if err := s.Mkdir(ctx, "d"); err != nil {
				t.Fatalf("Mkdir(d): %v", err)
			}
			if fi, err := os.Stat(filepath.Join(ts.dir, "d")); err != nil || !fi.IsDir() {
				t.Fatalf("d after Mkdir: %v, %v", fi, err)
			}
			files := map[string]int{"plain.txt": 5, "with  spaces ": 0, "ünïcødé ☃": 1234, ".hidden": 2}
			mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
			for name, size := range files {
				p := filepath.Join(ts.dir, "d", name)
				if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(p, mtime, mtime); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Mkdir(ctx, "d/sub dir"); err != nil {
				t.Fatalf("Mkdir(d/sub dir): %v", err)
			}
			if err := os.Symlink("sub dir", filepath.Join(ts.dir, "d", "link")); err != nil {
				t.Fatal(err)
			}
			entries, err := s.ReadDir(ctx, "d")
			if err != nil {
				t.Fatalf("ReadDir: %v", err)
			}
			want := []string{".hidden", "link", "plain.txt", "sub dir", "with  spaces ", "ünïcødé ☃"}
			if got := dirNames(entries); !slices.Equal(got, want) {
				t.Fatalf("names = %q, want %q", got, want)
			}
			m := dirIndex(t, entries)
			for name, size := range files {
				if e := m[name]; e.Size != int64(size) || e.IsDir || !e.ModTime.Equal(mtime) {
					t.Errorf("%q = %+v, want size %d, mtime %v", name, e, size, mtime)
				}
			}
			if e := m["sub dir"]; !e.IsDir || e.Size != 0 {
				t.Errorf("sub dir = %+v", e)
			}
			if e := m["link"]; e.IsDir {
				t.Errorf("link = %+v (not followed)", e)
			}
			if entries, err := s.ReadDir(ctx, "d/sub dir"); err != nil || len(entries) != 0 {
				t.Errorf("ReadDir(empty) = %+v, %v", entries, err)
			}
			if entries, err := s.ReadDir(ctx, "d/link"); err != nil || len(entries) != 0 {
				t.Errorf("ReadDir(link to a directory) = %+v, %v", entries, err)
			}

			_, err = s.ReadDir(ctx, "d/plain.txt")
			onlyKind(t, "ReadDir(file)", err, protocol.ErrInvalidPath)
			_, err = s.ReadDir(ctx, "missing")
			onlyKind(t, "ReadDir(missing)", err, fs.ErrNotExist)
			_, err = s.ReadDir(ctx, "missing/deeper")
			onlyKind(t, "ReadDir(missing/deeper)", err, fs.ErrNotExist)
			onlyKind(t, "Mkdir(d)", s.Mkdir(ctx, "d"), fs.ErrExist)
			onlyKind(t, "Mkdir(d/plain.txt)", s.Mkdir(ctx, "d/plain.txt"), fs.ErrExist)
			onlyKind(t, "Mkdir(missing/x)", s.Mkdir(ctx, "missing/x"), fs.ErrNotExist)
			onlyKind(t, "Mkdir(d/plain.txt/x)", s.Mkdir(ctx, "d/plain.txt/x"), protocol.ErrInvalidPath)
			for _, bad := range []string{"", "d\n", "d\r", "d\x00"} {
				_, err := s.ReadDir(ctx, bad)
				onlyKind(t, fmt.Sprintf("ReadDir(%q)", bad), err, protocol.ErrInvalidPath)
				onlyKind(t, fmt.Sprintf("Mkdir(%q)", bad), s.Mkdir(ctx, bad), protocol.ErrInvalidPath)
			}
			// The session carries on.
			if fi, err := s.Stat(ctx, "d/plain.txt"); err != nil || fi.Size != 5 {
				t.Fatalf("Stat after the listings = %+v, %v", fi, err)
			}
			if second && ts.sftpChans.Load() != 2 {
				t.Errorf("%d SFTP channels opened, want 2 (the data channel reused)", ts.sftpChans.Load())
			}
		})
	}
	checkNoLeaks(t)
}

// dirLister serves listings of made-up entries through a request server:
// every path is a directory whose entries entries returns.
type dirLister struct {
	inner   sftp.Handlers
	entries func(off int64, max int) ([]os.FileInfo, error)
	gate    chan struct{} // when set, listings wait for it to close
}

func (l *dirLister) handlers() *sftp.Handlers {
	return &sftp.Handlers{FileGet: l.inner.FileGet, FilePut: l.inner.FilePut, FileCmd: l.inner.FileCmd, FileList: l}
}

func (l *dirLister) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	if r.Method != "List" {
		return listerAt{fakeInfo{name: filepath.Base(r.Filepath), mode: fs.ModeDir | 0o755}}, nil
	}
	return listFunc(func(f []os.FileInfo, off int64) (int, error) {
		if l.gate != nil {
			<-l.gate
		}
		fis, err := l.entries(off, len(f))
		return copy(f, fis), err
	}), nil
}

type listFunc func([]os.FileInfo, int64) (int, error)

func (f listFunc) ListAt(fis []os.FileInfo, off int64) (int, error) { return f(fis, off) }

type fakeInfo struct {
	name string
	size int64
	mode fs.FileMode
}

func (i fakeInfo) Name() string       { return i.name }
func (i fakeInfo) Size() int64        { return i.size }
func (i fakeInfo) Mode() fs.FileMode  { return i.mode }
func (i fakeInfo) ModTime() time.Time { return time.Unix(1700000000, 0) }
func (i fakeInfo) IsDir() bool        { return i.mode.IsDir() }
func (i fakeInfo) Sys() any           { return nil }

func TestReadDirHostileNames(t *testing.T) {
	l := &dirLister{inner: sftp.InMemHandler(), entries: func(off int64, _ int) ([]os.FileInfo, error) {
		if off > 0 {
			return nil, io.EOF
		}
		return []os.FileInfo{
			fakeInfo{name: ".", mode: fs.ModeDir},
			fakeInfo{name: "..", mode: fs.ModeDir},
			fakeInfo{name: ""},
			fakeInfo{name: "../../etc/passwd", size: 1},
			fakeInfo{name: "a/b", size: 1},
			fakeInfo{name: "/abs", size: 1},
			fakeInfo{name: "nul\x00name", size: 1},
			fakeInfo{name: "cr\rname", size: 1},
			fakeInfo{name: "lf\nname", size: 1},
			fakeInfo{name: "ok", size: 7},
		}, io.EOF
	}}
	for _, second := range []bool{true, false} {
		t.Run(fmt.Sprintf("second-channel=%v", second), func(t *testing.T) {
			ts := newTestServer(t, l.handlers())
			if !second {
				ts.maxSFTP = 1
			}
			s := dial(t, ts)
			entries, err := s.ReadDir(context.Background(), "/d")
			if err != nil {
				t.Fatalf("ReadDir: %v", err)
			}
			names := dirNames(entries)
			if second && !slices.Equal(names, []string{"ok"}) {
				t.Fatalf("names = %q, want only \"ok\"", names)
			}
			// Through pkg/sftp, a name with a slash comes out as its last
			// element (pkg/sftp's path.Base): never a path, but not
			// dropped either.
			for _, n := range names {
				if !hsftpValidName(n) {
					t.Fatalf("name %q handed out", n)
				}
			}
			if !slices.Contains(names, "ok") {
				t.Fatalf("names = %q", names)
			}
		})
	}
}

func hsftpValidName(n string) bool {
	return n != "" && n != "." && n != ".." && !strings.ContainsAny(n, "/\x00\r\n")
}

func TestReadDirHugeSize(t *testing.T) {
	l := &dirLister{inner: sftp.InMemHandler(), entries: func(off int64, _ int) ([]os.FileInfo, error) {
		if off > 0 {
			return nil, io.EOF
		}
		return []os.FileInfo{fakeInfo{name: "big", size: -1 << 63}}, io.EOF // 2^63 on the wire
	}}
	for _, second := range []bool{true, false} {
		t.Run(fmt.Sprintf("second-channel=%v", second), func(t *testing.T) {
			ts := newTestServer(t, l.handlers())
			if !second {
				ts.maxSFTP = 1
			}
			s := dial(t, ts)
			ctx := context.Background()
			_, err := s.ReadDir(ctx, "/d")
			if !errors.Is(err, protocol.ErrProtocol) || protocol.IsRetryable(err) {
				t.Fatalf("ReadDir = %v, want ErrProtocol, not retried", err)
			}
			t.Logf("error: %v", err)
			if _, err := s.Stat(ctx, "/d"); err != nil {
				t.Fatalf("Stat after the listing: %v", err)
			}
		})
	}
}

func TestReadDirCancel(t *testing.T) {
	for _, second := range []bool{true, false} {
		t.Run(fmt.Sprintf("second-channel=%v", second), func(t *testing.T) {
			gate := make(chan struct{})
			var once sync.Once
			release := func() { once.Do(func() { close(gate) }) }
			l := &dirLister{inner: sftp.InMemHandler(), gate: gate, entries: func(int64, int) ([]os.FileInfo, error) {
				return nil, io.EOF
			}}
			ts := newTestServer(t, l.handlers())
			t.Cleanup(release) // before the server's close, which waits for its handlers
			if !second {
				ts.maxSFTP = 1
			}
			s := dial(t, ts)
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(200*time.Millisecond, cancel)
			start := time.Now()
			_, err := s.ReadDir(ctx, "/d")
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("ReadDir = %v, want context.Canceled", err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("ReadDir returned %v after the cancellation", took)
			}
			if _, err := s.ReadDir(context.Background(), "/d"); err == nil {
				t.Fatal("ReadDir on a cancelled session succeeded")
			}
			release()
			_ = s.Close()
		})
	}
	checkNoLeaks(t)
}

var (
	_ protocol.DirReader = (*hsftp.Session)(nil)
	_ protocol.DirMaker  = (*hsftp.Session)(nil)
)

// rawServer is an SSH server whose SFTP subsystem is answered by hand,
// packet by packet, for listings no pkg/sftp server sends (and a million
// entries sent fast). Every path is a directory; READDIR is answered by
// readdir, called with the number of READDIRs of the listing so far and
// the request id; it returns the whole reply packet.
type rawServer struct {
	addr    string
	readdir func(n int, id uint32) []byte
}

func newRawServer(t *testing.T, readdir func(n int, id uint32) []byte) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rs := &rawServer{addr: ln.Addr().String(), readdir: readdir}
	cfg := &ssh.ServerConfig{PasswordCallback: func(ssh.ConnMetadata, []byte) (*ssh.Permissions, error) { return nil, nil }}
	cfg.AddHostKey(newSigner(t))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				rs.serveConn(c, cfg)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return rs
}

func (rs *rawServer) serveConn(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	var wg sync.WaitGroup
	defer wg.Wait()
	for nc := range chans {
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer ch.Close()
			for req := range creqs {
				ok := req.Type == "subsystem"
				_ = req.Reply(ok, nil)
				if ok {
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer ch.Close()
						rs.serveSFTP(ch)
					}()
				}
			}
		}()
	}
}

// SFTP wire values the raw server uses.
const (
	rawInit    = 1
	rawVersion = 2
	rawOpen    = 3
	rawClose   = 4
	rawLstat   = 7
	rawFstat   = 8
	rawOpendir = 11
	rawReaddir = 12
	rawStat    = 17
	rawStatus  = 101
	rawHandle  = 102
	rawName    = 104
	rawAttrs   = 105

	rawAttrSize  = 0x1
	rawAttrPerm  = 0x4
	rawAttrTimes = 0x8
)

func (rs *rawServer) serveSFTP(ch ssh.Channel) {
	readdirs := 0
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(ch, hdr[:]); err != nil {
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[:4])-1)
		if _, err := io.ReadFull(ch, body); err != nil {
			return
		}
		if hdr[4] == rawInit {
			_, _ = ch.Write(rawPacket(rawVersion, binary.BigEndian.AppendUint32(nil, 3)))
			continue
		}
		id := binary.BigEndian.Uint32(body)
		idb := binary.BigEndian.AppendUint32(nil, id)
		var reply []byte
		switch hdr[4] {
		case rawOpendir:
			readdirs = 0
			reply = rawPacket(rawHandle, rawString(idb, "h"))
		case rawReaddir:
			reply = rs.readdir(readdirs, id)
			readdirs++
		case rawStat, rawLstat, rawFstat:
			reply = rawPacket(rawAttrs, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(idb, rawAttrPerm), 0o40755))
		case rawClose:
			reply = rawStatusPacket(id, 0)
		case rawOpen:
			reply = rawStatusPacket(id, 2)
		default:
			reply = rawStatusPacket(id, 8)
		}
		if _, err := ch.Write(reply); err != nil {
			return
		}
	}
}

func rawPacket(typ byte, body []byte) []byte {
	p := binary.BigEndian.AppendUint32(nil, uint32(1+len(body)))
	return append(append(p, typ), body...)
}

func rawString(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint32(b, uint32(len(s))), s...)
}

func rawStatusPacket(id, code uint32) []byte {
	b := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, id), code)
	return rawPacket(rawStatus, rawString(rawString(b, "status"), ""))
}

// rawEntry is one name of a NAME reply.
type rawEntry struct {
	name, long string
	flags      uint32
	size       uint64
	perm       uint32
	mtime      uint32
}

// rawNames builds a NAME reply with the given count (which may lie about
// the entries that follow).
func rawNames(id uint32, count int, entries ...rawEntry) []byte {
	b := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, id), uint32(count))
	for _, e := range entries {
		b = rawString(rawString(b, e.name), e.long)
		b = binary.BigEndian.AppendUint32(b, e.flags)
		if e.flags&rawAttrSize != 0 {
			b = binary.BigEndian.AppendUint64(b, e.size)
		}
		if e.flags&rawAttrPerm != 0 {
			b = binary.BigEndian.AppendUint32(b, e.perm)
		}
		if e.flags&rawAttrTimes != 0 {
			b = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(b, e.mtime), e.mtime)
		}
	}
	return rawPacket(rawName, b)
}

// setID writes id into a prebuilt reply.
func setID(p []byte, id uint32) []byte {
	binary.BigEndian.PutUint32(p[5:9], id)
	return p
}

func dialRaw(t *testing.T, rs *rawServer) *hsftp.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := hsftp.Dial(ctx, rs.addr, hsftp.WithUser("u"), hsftp.WithPassword("pw"), hsftp.WithInsecureIgnoreHostKey())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestReadDirRawReplies(t *testing.T) {
	file := rawEntry{flags: rawAttrSize | rawAttrPerm | rawAttrTimes, size: 3, perm: 0o100644, mtime: 1700000000}
	named := func(e rawEntry, name string) rawEntry { e.name = name; return e }
	cases := []struct {
		name    string
		readdir func(n int, id uint32) []byte
		want    []string // nil: ErrProtocol
	}{
		{"names and modes", func(n int, id uint32) []byte {
			switch n {
			case 0:
				return rawNames(id, 0) // an empty NAME: read on
			case 1:
				return rawNames(id, 9,
					named(file, "."), named(file, ".."), named(file, "a/b"), named(file, "nul\x00"),
					named(file, "cr\r"), named(file, "lf\n"), named(file, ""), named(file, "ok"),
					// No mode: the long name tells a directory.
					rawEntry{name: "d", long: "drwxr-xr-x 2 u g 4096 Jan 1 2024 d", flags: rawAttrSize, size: 4096})
			}
			return rawStatusPacket(id, 1)
		}, []string{"d", "ok"}},
		{"count larger than the packet", func(n int, id uint32) []byte {
			return rawNames(id, 1000, named(file, "x"))
		}, nil},
		{"attributes cut short", func(n int, id uint32) []byte {
			p := rawNames(id, 1, named(file, "x"))
			p = p[:len(p)-6]
			binary.BigEndian.PutUint32(p, uint32(len(p)-4))
			return p
		}, nil},
		{"ATTRS in reply to READDIR", func(n int, id uint32) []byte {
			return rawPacket(rawAttrs, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, id), 0))
		}, nil},
		{"reply to another request", func(n int, id uint32) []byte {
			return rawNames(id+1, 1, named(file, "x"))
		}, nil},
		{"NAME over 256 KiB", func(n int, id uint32) []byte {
			e := named(file, "x")
			e.long = strings.Repeat("l", 300<<10)
			return rawNames(id, 1, e)
		}, nil},
		{"size of 2^64-1", func(n int, id uint32) []byte {
			e := named(file, "x")
			e.size = 1<<64 - 1
			return rawNames(id, 1, e)
		}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rs := newRawServer(t, c.readdir)
			s := dialRaw(t, rs)
			ctx := context.Background()
			entries, err := s.ReadDir(ctx, "/d")
			if c.want == nil {
				if !errors.Is(err, protocol.ErrProtocol) || protocol.IsRetryable(err) {
					t.Fatalf("ReadDir = %+v, %v; want ErrProtocol, not retried", entries, err)
				}
				t.Logf("error: %v", err)
			} else {
				if err != nil {
					t.Fatalf("ReadDir: %v", err)
				}
				if got := dirNames(entries); !slices.Equal(got, c.want) {
					t.Fatalf("names = %q, want %q", got, c.want)
				}
				m := dirIndex(t, entries)
				if e := m["ok"]; e.Size != 3 || e.IsDir || e.ModTime.Unix() != 1700000000 {
					t.Errorf("ok = %+v", e)
				}
				if e := m["d"]; !e.IsDir || e.Size != 0 || !e.ModTime.IsZero() {
					t.Errorf("d = %+v", e)
				}
			}
			// The session carries on (a channel out of step was dropped).
			if _, err := s.Stat(ctx, "/d"); err != nil {
				t.Fatalf("Stat after the listing: %v", err)
			}
		})
	}
}

// A listing of exactly MaxDirEntries entries (and "." and "..") is served;
// one more entry fails with ErrProtocol (as would a listing without end:
// the count is checked as each reply arrives).
func TestReadDirMaxDirEntries(t *testing.T) {
	const per = 1024 // entries per NAME reply: MaxDirEntries is 1024 of them
	if protocol.MaxDirEntries%per != 0 {
		t.Fatalf("MaxDirEntries = %d", protocol.MaxDirEntries)
	}
	batch := make([]rawEntry, per)
	for i := range batch {
		batch[i] = rawEntry{name: fmt.Sprintf("f%04d", i), flags: rawAttrSize, size: 1}
	}
	full := rawNames(0, per, batch...)
	dots := rawNames(0, 2, rawEntry{name: "."}, rawEntry{name: ".."})
	extra := rawNames(0, 1, rawEntry{name: "one more"})
	listing := func(last []byte) func(n int, id uint32) []byte {
		return func(n int, id uint32) []byte {
			switch {
			case n == 0:
				return setID(dots, id)
			case n <= protocol.MaxDirEntries/per:
				return setID(full, id)
			case n == protocol.MaxDirEntries/per+1 && last != nil:
				return setID(last, id)
			}
			return rawStatusPacket(id, 1)
		}
	}
	cases := []struct {
		name    string
		readdir func(n int, id uint32) []byte
		ok      bool
	}{
		{"exactly MaxDirEntries", listing(nil), true},
		{"one more", listing(extra), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if testing.Short() {
				t.Skip("a million entries; skipped with -short")
			}
			rs := newRawServer(t, c.readdir)
			s := dialRaw(t, rs)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			entries, err := s.ReadDir(ctx, "/d")
			switch {
			case c.ok && (err != nil || len(entries) != protocol.MaxDirEntries):
				t.Fatalf("ReadDir = %d entries, %v; want %d", len(entries), err, protocol.MaxDirEntries)
			case !c.ok && (!errors.Is(err, protocol.ErrProtocol) || protocol.IsRetryable(err)):
				t.Fatalf("ReadDir = %d entries, %v; want ErrProtocol", len(entries), err)
			}
			if _, err := s.Stat(ctx, "/d"); err != nil {
				t.Fatalf("Stat after the listing: %v", err)
			}
		})
	}
}
