package resume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/openhaul/haul/protocol"
)

// UploadStream sends r, read once to its end, to remotePath over one
// connection. A stream cannot be read again, so this upload is not
// resumable: any failure (a cut included) ends the call with an *Error
// whose Committed is 0, and nothing is retried; the caller may start
// again with a new reader. The bytes go to cfg.TempPath when set, renamed
// over remotePath once verified: the size the server reports must equal
// the bytes read and, where the server can hash (and cfg.Verify is not
// VerifySize), its hash must equal the hash of the bytes as they were
// read. VerifyReadback is refused (ErrUnsupported): there is nothing to
// read back. Progress reports a total of -1 (unknown).
func UploadStream(ctx context.Context, dial protocol.Dialer, r io.Reader, remotePath string, cfg Config) (Result, error) {
	began := time.Now()
	res := Result{Attempts: 1}
	fail := func(err error) (Result, error) {
		res.Duration = time.Since(began)
		return res, &Error{Op: "upload", Path: remotePath, Attempts: 1, Err: err}
	}
	if cfg.Verify == VerifyReadback {
		return fail(&protocol.Error{Op: "verify", Path: remotePath, Kind: protocol.ErrUnsupported, Err: errors.New("a stream cannot be read back")})
	}
	target := remotePath
	if cfg.TempPath != "" {
		target = cfg.TempPath
	}
	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	dog := newWatchdog(cfg.stallTimeout(), cancel)
	defer dog.stop()
	fail = func(err error) (Result, error) {
		res.Duration = time.Since(began)
		return res, &Error{Op: "upload", Path: remotePath, Attempts: 1, Err: attemptErr(parent, ctx, err)}
	}
	sess, err := dial(ctx)
	if err != nil {
		return fail(err)
	}
	defer sess.Close()
	var h hash.Hash
	var algo string
	hs, algo, ok := hasherFor(sess)
	if ok && cfg.Verify != VerifySize {
		h = protocol.NewHash(algo)
	}
	w, err := sess.OpenWriter(ctx, target, 0)
	if err != nil {
		return fail(err)
	}
	cfg = cfg.withLimiter()
	m := &meter{total: -1, dog: dog, progress: cfg.Progress, limit: cfg.limiterOrNil(), ctx: ctx}
	dst := io.Writer(w)
	if h != nil {
		dst = io.MultiWriter(w, h)
	}
	n, copyErr := io.Copy(&countingWriter{w: dst, m: m}, r)
	closeErr := w.Close()
	res.Transferred = n
	if err := errors.Join(copyErr, closeErr); err != nil {
		return fail(err)
	}
	res.Size = n
	size, exists, err := remoteFile(ctx, sess, target)
	if err != nil {
		return fail(err)
	}
	if !exists || size != n {
		return fail(&protocol.Error{Op: "verify", Path: target, Err: fmt.Errorf("%w: read %d bytes, the server holds %d", ErrVerify, n, size)})
	}
	res.Verified = "size"
	if h != nil {
		got, err := hs.Hash(ctx, target, algo, 0, n)
		switch {
		case errors.Is(err, protocol.ErrUnsupported) && cfg.Verify == VerifyAuto:
		case err != nil:
			return fail(err)
		case !bytes.Equal(got, h.Sum(nil)):
			return fail(&protocol.Error{Op: "verify", Path: target, Err: fmt.Errorf("%w: %s differs", ErrVerify, algo)})
		default:
			res.Verified = algo
		}
	} else if cfg.Verify == VerifyHash {
		return fail(&protocol.Error{Op: "verify", Path: target, Kind: protocol.ErrUnsupported, Err: errors.New("the server offers no hash this client knows")})
	}
	if target != remotePath {
		if err := sess.Rename(ctx, target, remotePath); err != nil {
			return fail(err)
		}
	}
	res.Duration = time.Since(began)
	return res, nil
}
