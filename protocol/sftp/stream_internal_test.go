package sftp

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"sync/atomic"
	"testing"
)

// fakeReadServer answers OPEN, FSTAT, READ and CLOSE for one file. It
// holds READ replies while more requests are arriving and then sends them
// newest first, so the client sees them out of order; reads return at most
// maxRead bytes.
type fakeReadServer struct {
	data    []byte
	maxRead int
	status  map[int64]uint32 // a read at this offset fails with this status
	// reordered counts the times held replies went out newest first.
	reordered atomic.Int32
	// reach is the furthest byte any READ asked for.
	reach atomic.Int64
}

func (fs *fakeReadServer) serve(r io.Reader, w io.Writer) error {
	reqs := make(chan []byte, 1024) // never blocks the reading: a channel has a window
	errc := make(chan error, 1)
	go func() {
		defer close(reqs)
		for {
			var h [4]byte
			if _, err := io.ReadFull(r, h[:]); err != nil {
				errc <- err
				return
			}
			b := make([]byte, binary.BigEndian.Uint32(h[:]))
			if _, err := io.ReadFull(r, b); err != nil {
				errc <- err
				return
			}
			reqs <- b
		}
	}()
	send := func(typ byte, body []byte) error {
		p := binary.BigEndian.AppendUint32(nil, uint32(1+len(body)))
		_, err := w.Write(append(append(p, typ), body...))
		return err
	}
	status := func(id, code uint32) []byte {
		b := binary.BigEndian.AppendUint32(nil, id)
		b = binary.BigEndian.AppendUint32(b, code)
		return appendString(appendString(b, "msg"), "")
	}
	type reply struct {
		typ  byte
		body []byte
	}
	var held []reply
	flush := func() error {
		if len(held) > 1 {
			fs.reordered.Add(1)
		}
		for i := len(held) - 1; i >= 0; i-- {
			if err := send(held[i].typ, held[i].body); err != nil {
				return err
			}
		}
		held = held[:0]
		return nil
	}
	for {
		var b []byte
		var ok bool
		select {
		case b, ok = <-reqs:
		default:
			if err := flush(); err != nil {
				return err
			}
			b, ok = <-reqs
		}
		if !ok {
			return <-errc
		}
		typ, id := b[0], binary.BigEndian.Uint32(b[1:5])
		body := binary.BigEndian.AppendUint32(nil, id)
		switch typ {
		case fxpOpen:
			if err := send(fxpHandle, appendString(body, "h")); err != nil {
				return err
			}
		case fxpFstat:
			body = binary.BigEndian.AppendUint32(body, attrSize|attrPermissions)
			body = binary.BigEndian.AppendUint64(body, uint64(len(fs.data)))
			body = binary.BigEndian.AppendUint32(body, 0o100644)
			if err := send(fxpAttrs, body); err != nil {
				return err
			}
		case fxpRead:
			rest := b[5+4+1:] // handle "h"
			off := int64(binary.BigEndian.Uint64(rest))
			n := int64(binary.BigEndian.Uint32(rest[8:]))
			if e := off + n; e > fs.reach.Load() {
				fs.reach.Store(e)
			}
			switch code, bad := fs.status[off]; {
			case bad:
				held = append(held, reply{fxpStatus, status(id, code)})
			case off >= int64(len(fs.data)):
				held = append(held, reply{fxpStatus, status(id, fxEOF)})
			default:
				n = min(n, int64(fs.maxRead), int64(len(fs.data))-off)
				d := appendString(body, string(fs.data[off:off+n]))
				held = append(held, reply{fxpData, d})
			}
		case fxpClose:
			if err := flush(); err != nil {
				return err
			}
			if err := send(fxpStatus, status(id, 0)); err != nil {
				return err
			}
		default:
			return errors.New("unexpected request")
		}
	}
}

// fakeChannel connects an fxpConn to a fakeReadServer.
func fakeChannel(t *testing.T, fs *fakeReadServer) *fxpConn {
	t.Helper()
	cr, sw := io.Pipe()
	sr, cw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- fs.serve(sr, sw) }()
	t.Cleanup(func() {
		_ = cw.Close()
		_ = cr.Close()
		<-done
	})
	return &fxpConn{r: cr, w: cw, next: 1}
}

func TestPipelineOutOfOrderShortReads(t *testing.T) {
	data := make([]byte, 1<<20+333)
	_, _ = rand.Read(data)
	for _, tc := range []struct {
		name                 string
		off                  int64
		size, depth, maxRead int
		readFirst            int
		reorders             bool
	}{
		{"full reads", 0, 4096, 8, 1 << 20, 0, true},
		{"short reads", 7, 4096, 8, 1000, 0, true},
		{"uneven short reads", 0, 4096, 5, 3001, 5000, true},
		{"one request", 100, 65536, 1, 65536, 1, false},
		{"at the end", int64(len(data)), 4096, 4, 4096, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &fakeReadServer{data: data, maxRead: tc.maxRead}
			fc := fakeChannel(t, srv)
			f, err := openRemote(fc, "/f")
			if err != nil {
				t.Fatal(err)
			}
			if f.size != int64(len(data)) || f.isDir {
				t.Fatalf("size %d, dir %v", f.size, f.isDir)
			}
			st := &stream{p: newPipeline(f, tc.off, -1, tc.size, tc.depth)}
			var out bytes.Buffer
			if tc.readFirst > 0 {
				b := make([]byte, tc.readFirst)
				n, err := io.ReadFull(st, b)
				if err != nil {
					t.Fatal(err)
				}
				out.Write(b[:n])
			}
			if _, err := st.WriteTo(&out); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), data[tc.off:]) {
				t.Fatalf("%d bytes, want %d, or they differ", out.Len(), len(data)-int(tc.off))
			}
			if !st.p.drain() {
				t.Fatal("drain failed")
			}
			if err := f.close(); err != nil {
				t.Fatal(err)
			}
			if tc.reorders && srv.reordered.Load() == 0 {
				t.Fatal("no reply came out of order")
			}
		})
	}
}

func TestPipelineStatusError(t *testing.T) {
	data := make([]byte, 100_000)
	fc := fakeChannel(t, &fakeReadServer{data: data, maxRead: 4096, status: map[int64]uint32{40960: fxPermissionDenied}})
	f, err := openRemote(fc, "/f")
	if err != nil {
		t.Fatal(err)
	}
	st := &stream{p: newPipeline(f, 0, -1, 4096, 6)}
	n, err := st.WriteTo(io.Discard)
	var fe *fxStatusError
	if !errors.As(err, &fe) || fe.Code != fxPermissionDenied || n != 40960 {
		t.Fatalf("%d bytes, err %v; want 40960 bytes, permission denied", n, err)
	}
	if !st.p.drain() {
		t.Fatal("drain failed after a status error")
	}
	if err := f.close(); err != nil {
		t.Fatal(err)
	}
}

func TestParseAttrs(t *testing.T) {
	b := binary.BigEndian.AppendUint32(nil, attrSize|attrUIDGID|attrPermissions)
	b = binary.BigEndian.AppendUint64(b, 12345)
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint32(b, 2)
	b = binary.BigEndian.AppendUint32(b, 0o040755)
	if size, mode, ok := parseAttrs(b); !ok || size != 12345 || mode != 0o040755 {
		t.Fatalf("parseAttrs = %d, %o, %v", size, mode, ok)
	}
	if _, _, ok := parseAttrs(binary.BigEndian.AppendUint32(nil, attrPermissions)); ok {
		t.Fatal("attrs without a size accepted")
	}
	if _, _, ok := parseAttrs(b[:10]); ok {
		t.Fatal("short attrs accepted")
	}
}

// TestPipelineStopsAtTheRangeEnd: a range-limited pipeline delivers
// exactly the range, with short reads on the way, and asks for nothing
// past its end.
func TestPipelineStopsAtTheRangeEnd(t *testing.T) {
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	for _, tc := range []struct{ off, end int64 }{{1000, 300_000}, {0, 4096 * 8}, {5, 6}} {
		srv := &fakeReadServer{data: data, maxRead: 3001}
		fc := fakeChannel(t, srv)
		f, err := openRemote(fc, "/f")
		if err != nil {
			t.Fatal(err)
		}
		st := &stream{p: newPipeline(f, tc.off, tc.end, 4096, 8)}
		var out bytes.Buffer
		if _, err := st.WriteTo(&out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), data[tc.off:tc.end]) {
			t.Fatalf("[%d, %d): %d bytes, or they differ", tc.off, tc.end, out.Len())
		}
		if r := srv.reach.Load(); r > tc.end {
			t.Fatalf("[%d, %d): a read asked up to %d", tc.off, tc.end, r)
		}
		if !st.p.drain() || f.close() != nil {
			t.Fatal("drain or close failed")
		}
	}
}
