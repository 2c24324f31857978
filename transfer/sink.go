package transfer

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"sync"
	"time"

	"github.com/openhaul/haul/protocol"
	"github.com/openhaul/haul/resume"
)

// DownloadTo downloads remotePath into w, over one stream, with the
// reconnections and the verification of Download (no .part, no state:
// the bytes go to w at their offsets as they arrive).
//
// When w is also an io.ReaderAt (an *os.File, a buffer that can be read
// back), a cut resumes at the bytes already written, after comparing the
// overlap, and verification reads w. A plain io.WriterAt cannot be read
// back: a cut restarts the file from offset 0 (w receives those bytes
// again), and verification compares the server's hash with one computed
// as the bytes were written. Either way the call reports success only
// once the content is proven as Download proves it.
func (c *Client) DownloadTo(ctx context.Context, remotePath string, w io.WriterAt) (Result, error) {
	if err := protocol.CheckPath(remotePath); err != nil {
		return Result{Op: "download", Remote: remotePath}, &Error{Op: "download", Path: remotePath, Err: err}
	}
	var dst resume.LocalFile
	if rw, ok := w.(interface {
		io.WriterAt
		io.ReaderAt
	}); ok {
		dst = &readBackSink{w: rw}
	} else {
		info, err := c.Stat(ctx, remotePath)
		if err != nil {
			return Result{Op: "download", Remote: remotePath}, errorOf("download", remotePath, err)
		}
		dst = newHashingSink(w, info.Size)
	}
	return c.transfer(ctx, "download", remotePath, "", func(ctx context.Context, dial protocol.Dialer) (resume.Result, error) {
		return resume.Download(ctx, dial, remotePath, dst, callOpts{segments: 1}.apply(c.engine(remotePath)))
	})
}

// readBackSink is a resume.LocalFile over a writer that can be read back:
// its size is the end of what was written since the last Truncate.
type readBackSink struct {
	w interface {
		io.WriterAt
		io.ReaderAt
	}
	mu   sync.Mutex
	size int64
}

func (s *readBackSink) WriteAt(p []byte, off int64) (int, error) {
	n, err := s.w.WriteAt(p, off)
	s.mu.Lock()
	s.size = max(s.size, off+int64(n))
	s.mu.Unlock()
	return n, err
}

func (s *readBackSink) ReadAt(p []byte, off int64) (int, error) { return s.w.ReadAt(p, off) }

func (s *readBackSink) Truncate(n int64) error {
	s.mu.Lock()
	s.size = min(s.size, n)
	s.mu.Unlock()
	return nil
}

func (s *readBackSink) Stat() (fs.FileInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sinkInfo(s.size), nil
}

func (s *readBackSink) Sync() error {
	if f, ok := s.w.(interface{ Sync() error }); ok {
		return f.Sync()
	}
	return nil
}

// hashingSink is a resume.LocalFile over a plain io.WriterAt: it hashes
// the bytes as they come (in order: one stream), says it holds nothing
// until it holds the whole file (so that a cut restarts from zero rather
// than resume behind an overlap it cannot read), and gives verification
// its hashes (resume.Summer).
type hashingSink struct {
	w     io.WriterAt
	total int64

	mu     sync.Mutex
	next   int64 // the offset the stream writes next
	broken bool  // a write out of order: no hash
	hashes map[string]hash.Hash
}

var (
	_ resume.LocalFile = (*hashingSink)(nil)
	_ resume.Summer    = (*hashingSink)(nil)
)

func newHashingSink(w io.WriterAt, total int64) *hashingSink {
	s := &hashingSink{w: w, total: total}
	s.reset()
	return s
}

func (s *hashingSink) reset() {
	s.next, s.broken = 0, false
	s.hashes = make(map[string]hash.Hash)
	for _, a := range protocol.KnownHashes() {
		s.hashes[a] = protocol.NewHash(a)
	}
}

func (s *hashingSink) WriteAt(p []byte, off int64) (int, error) {
	n, err := s.w.WriteAt(p, off)
	s.mu.Lock()
	defer s.mu.Unlock()
	if off == 0 && s.next > 0 {
		s.reset() // a restart from zero after a cut
	}
	if off != s.next {
		s.broken = true
	}
	for _, h := range s.hashes {
		h.Write(p[:n])
	}
	s.next = off + int64(n)
	return n, err
}

var errNoReadBack = errors.New("the destination (an io.WriterAt) cannot be read back")

func (s *hashingSink) ReadAt(p []byte, off int64) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: "io.WriterAt", Err: errNoReadBack}
}

func (s *hashingSink) Truncate(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case n == 0:
		s.reset()
	case n < s.next:
		return fmt.Errorf("truncate to %d: %w", n, errNoReadBack)
	}
	return nil
}

func (s *hashingSink) Stat() (fs.FileInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == s.total && !s.broken {
		return sinkInfo(s.total), nil
	}
	return sinkInfo(0), nil
}

func (s *hashingSink) Sync() error { return nil }

func (s *hashingSink) Sum(algo string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.hashes[algo]
	if !ok || s.broken || s.next != s.total {
		return nil, false
	}
	return h.Sum(nil), true
}

type sinkInfo int64

func (i sinkInfo) Name() string       { return "writer" }
func (i sinkInfo) Size() int64        { return int64(i) }
func (i sinkInfo) Mode() fs.FileMode  { return 0o644 }
func (i sinkInfo) ModTime() time.Time { return time.Time{} }
func (i sinkInfo) IsDir() bool        { return false }
func (i sinkInfo) Sys() any           { return nil }
