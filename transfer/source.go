package transfer

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/openhaul/haul/protocol"
	"github.com/openhaul/haul/resume"
)

// UploadFrom uploads the size bytes of r to remotePath, with every
// guarantee of Upload: reconnection, resume at the offset the remote
// holds (r is read again from any offset, so it must not change during
// the call), verification, and the atomic rename of remotePath +
// Config.PartSuffix. It keeps no state for a later process: a rerun
// resumes a partial only where a server-side hash proves it (proftpd's
// HASH, SFTP check-file or exec), else rewrites it. remotePath must name
// a file.
func (c *Client) UploadFrom(ctx context.Context, r io.ReaderAt, size int64, remotePath string) (Result, error) {
	if size < 0 {
		return Result{Op: "upload", Remote: remotePath}, &Error{Op: "upload", Path: remotePath,
			Err: fmt.Errorf("%w: negative size %d", protocol.ErrInvalidPath, size)}
	}
	if err := protocol.CheckPath(remotePath); err != nil {
		return Result{Op: "upload", Remote: remotePath}, &Error{Op: "upload", Path: remotePath, Err: err}
	}
	src := readerSource{r: r, size: size, mtime: time.Now()}
	ecfg := c.engine(remotePath)
	if !c.cfg.DirectUpload {
		ecfg.TempPath = remotePath + c.cfg.partSuffix()
	}
	return c.transfer(ctx, "upload", remotePath, "", func(ctx context.Context, dial protocol.Dialer) (resume.Result, error) {
		return resume.Upload(ctx, dial, src, remotePath, ecfg)
	})
}

// readerSource is a resume.Source over an io.ReaderAt of a fixed size.
type readerSource struct {
	r     io.ReaderAt
	size  int64
	mtime time.Time
}

var _ resume.Source = readerSource{}

func (s readerSource) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	if rest := s.size - off; int64(len(p)) > rest {
		n, err := s.r.ReadAt(p[:rest], off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return s.r.ReadAt(p, off)
}

func (s readerSource) Stat() (fs.FileInfo, error) { return readerInfo(s), nil }

type readerInfo readerSource

func (i readerInfo) Name() string       { return "reader" }
func (i readerInfo) Size() int64        { return i.size }
func (i readerInfo) Mode() fs.FileMode  { return 0o444 }
func (i readerInfo) ModTime() time.Time { return i.mtime }
func (i readerInfo) IsDir() bool        { return false }
func (i readerInfo) Sys() any           { return nil }

// UploadStream uploads what r yields, to its end, to remotePath. A stream
// cannot be read twice, so it is NOT resumable: a cut or any other
// failure ends the call (an *Error, 0 bytes committed) and nothing is
// retried; start again with a new reader, or give an io.ReaderAt to
// UploadFrom for a resumable upload. Everything else holds: the data goes
// to remotePath + Config.PartSuffix and is renamed into place only once
// the server's size and, where it can hash, its hash match the bytes read
// (hashed as they were read). Config.Verify "readback" is refused.
func (c *Client) UploadStream(ctx context.Context, r io.Reader, remotePath string) (Result, error) {
	if err := protocol.CheckPath(remotePath); err != nil {
		return Result{Op: "upload", Remote: remotePath}, &Error{Op: "upload", Path: remotePath, Err: err}
	}
	ecfg := c.engine(remotePath)
	if !c.cfg.DirectUpload {
		ecfg.TempPath = remotePath + c.cfg.partSuffix()
	}
	return c.transfer(ctx, "upload", remotePath, "", func(ctx context.Context, dial protocol.Dialer) (resume.Result, error) {
		return resume.UploadStream(ctx, dial, r, remotePath, ecfg)
	})
}
