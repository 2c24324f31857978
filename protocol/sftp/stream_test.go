package sftp_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"testing"

	hsftp "github.com/openhaul/haul/protocol/sftp"
)

// readAll reads path from offset through WriteTo or, with k > 0, first k
// bytes through Read and the rest through WriteTo.
func readAll(t *testing.T, s *hsftp.Session, path string, offset int64, k int) []byte {
	t.Helper()
	r, err := s.OpenReader(context.Background(), path, offset)
	if err != nil {
		t.Fatalf("OpenReader(%s, %d): %v", path, offset, err)
	}
	var out bytes.Buffer
	if k > 0 {
		b := make([]byte, 777) // odd sizes: Read splits chunks
		for out.Len() < k {
			n, err := r.Read(b[:min(len(b), k-out.Len())])
			out.Write(b[:n])
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
		}
	}
	if _, err := io.Copy(&out, r); err != nil {
		t.Fatalf("copy: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("reader Close: %v", err)
	}
	return out.Bytes()
}

func TestReadChannel(t *testing.T) {
	ffs := newFaultFS()
	ts := newTestServer(t, ffs.handlers())
	s := dial(t, ts, hsftp.WithConcurrency(4), hsftp.WithPacketSize(32<<10))
	data := randomBytes(t, 3<<20+777)
	upload(t, s, "/f", 0, data)
	ctx := context.Background()

	check := func(name string, off int64, k int) {
		t.Helper()
		if got := readAll(t, s, "/f", off, k); !bytes.Equal(got, data[off:]) {
			t.Fatalf("%s: %d bytes read, want %d, or they differ", name, len(got), len(data)-int(off))
		}
	}
	check("whole", 0, 0)
	check("Read then WriteTo", 12345, 100_000)
	check("from the end", int64(len(data)), 0)

	// Readers closed early: the requests in flight are drained and the
	// channel carries the next reader.
	for i := range 3 {
		r, err := s.OpenReader(ctx, "/f", int64(i)*1000)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r, make([]byte, 100_000)); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("early Close: %v", err)
		}
	}
	check("after early closes", 0, 0)

	// A server that answers reads short in the middle of the file.
	ffs.mu.Lock()
	ffs.readMax = 10_000
	ffs.mu.Unlock()
	check("short reads", 5, 0)
	check("short reads, Read", 0, len(data))
	ffs.mu.Lock()
	ffs.readMax = 0
	ffs.mu.Unlock()

	// Failed opens leave the channel usable.
	if _, err := s.OpenReader(ctx, "/missing", 0); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: err = %v, want fs.ErrNotExist", err)
	}
	if _, err := s.OpenReader(ctx, "/f", int64(len(data))+1); err == nil {
		t.Fatal("offset past the end: no error")
	}
	check("after failed opens", 0, 0)

	// Two readers at once: the second reads through the main channel.
	r1, err := s.OpenReader(ctx, "/f", 0)
	if err != nil {
		t.Fatal(err)
	}
	check("while another reader is open", 100, 0)
	got, err := io.ReadAll(r1)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("first reader: %d bytes, err %v", len(got), err)
	}
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}

	if n := ts.sftpChans.Load(); n != 2 {
		t.Fatalf("%d SFTP channels opened, want 2 (main and one read channel)", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkNoLeaks(t)
}

func TestReadWithoutSecondChannel(t *testing.T) {
	ffs := newFaultFS()
	ts := newTestServer(t, ffs.handlers())
	ts.maxSFTP = 1
	s := dial(t, ts)
	data := randomBytes(t, 1<<20+5)
	upload(t, s, "/f", 0, data)
	for range 2 {
		if got := readAll(t, s, "/f", 3, 10); !bytes.Equal(got, data[3:]) {
			t.Fatalf("read %d bytes, want %d, or they differ", len(got), len(data)-3)
		}
	}
	if n := ts.sftpChans.Load(); n != 1 {
		t.Fatalf("%d SFTP channels, want 1", n)
	}
}
