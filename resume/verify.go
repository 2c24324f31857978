package resume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/openhaul/haul/protocol"
)

// VerifyPolicy says how a finished transfer is proven identical.
type VerifyPolicy int

const (
	// VerifyAuto, the default, compares a hash computed by the server
	// (FTP HASH/XSHA256..., SFTP check-file) with the local one where the
	// server can hash, and sizes otherwise.
	VerifyAuto VerifyPolicy = iota
	// VerifySize compares sizes only.
	VerifySize
	// VerifyHash requires a server-side hash; a server that cannot hash
	// fails the transfer with protocol.ErrUnsupported.
	VerifyHash
	// VerifyReadback reads the whole remote file back and compares it
	// with the local one, byte for byte. It doubles the traffic.
	VerifyReadback
)

// String returns the policy's name as the CLI spells it.
func (p VerifyPolicy) String() string {
	switch p {
	case VerifyAuto:
		return "auto"
	case VerifySize:
		return "size"
	case VerifyHash:
		return "hash"
	case VerifyReadback:
		return "readback"
	}
	return fmt.Sprintf("VerifyPolicy(%d)", int(p))
}

// ParseVerifyPolicy parses "auto", "size", "hash" or "readback".
func ParseVerifyPolicy(s string) (VerifyPolicy, error) {
	for p := VerifyAuto; p <= VerifyReadback; p++ {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("unknown verification policy %q (want auto, size, hash or readback)", s)
}

// hasherFor returns the session's hasher and the best algorithm both sides
// know, or ok=false.
func hasherFor(sess protocol.Session) (h protocol.Hasher, algo string, ok bool) {
	h, ok = sess.(protocol.Hasher)
	if !ok {
		return nil, "", false
	}
	for _, a := range h.HashAlgorithms() {
		if protocol.NewHash(a) != nil {
			return h, a, true
		}
	}
	return nil, "", false
}

// hashLocal hashes bytes [start, end) of r.
func hashLocal(r io.ReaderAt, algo string, start, end int64) ([]byte, error) {
	h := protocol.NewHash(algo)
	if _, err := io.Copy(h, io.NewSectionReader(r, start, end-start)); err != nil {
		return nil, &localError{op: "read", err: err}
	}
	return h.Sum(nil), nil
}

// hashBudget is how long a server may take to hash n bytes before the
// call is abandoned: servers hash at hundreds of MB/s, so this is generous.
func hashBudget(stall time.Duration, n int64) time.Duration {
	return max(stall, 0) + time.Duration(n/(20<<20))*time.Second + 10*time.Second
}

// remoteHash asks the server for the hash of [start, end) of path, with
// the stall watchdog paused (the server sends nothing while it hashes) and
// a deadline of its own.
func (a *attempt) remoteHash(ctx context.Context, h protocol.Hasher, path, algo string, start, end int64) ([]byte, error) {
	a.dog.pause()
	defer a.dog.resume()
	hctx, cancel := context.WithTimeout(ctx, hashBudget(a.r.cfg.stallTimeout(), end-start))
	defer cancel()
	sum, err := h.Hash(hctx, path, algo, start, end)
	if err != nil && hctx.Err() != nil && ctx.Err() == nil {
		return nil, &protocol.Error{Op: "hash", Path: path, Kind: protocol.ErrTransient, Err: err}
	}
	return sum, err
}

// sameRange reports whether bytes [start, end) of the remote path equal
// those of local: by a server-side hash where the server can (no data
// connection), else by reading the remote range.
func (a *attempt) sameRange(ctx context.Context, sess protocol.Session, path string, local io.ReaderAt, start, end int64) (bool, error) {
	if h, algo, ok := hasherFor(sess); ok {
		want, err := hashLocal(local, algo, start, end)
		if err != nil {
			return false, err
		}
		got, err := a.remoteHash(ctx, h, path, algo, start, end)
		if err == nil {
			return bytes.Equal(got, want), nil
		}
		if !errors.Is(err, protocol.ErrUnsupported) {
			return false, err
		}
	}
	rd, err := sess.OpenReader(ctx, path, start)
	if err != nil {
		return false, err
	}
	same, err := equalStream(rd, local, start, end-start, a)
	// Closing before the end aborts the transfer; whatever the server
	// says about that abort, the answer is already known.
	_ = rd.Close()
	return same, err
}

// equalStream compares the next n bytes of r with local from offset off.
func equalStream(r io.Reader, local io.ReaderAt, off, n int64, a *attempt) (bool, error) {
	_, bad, err := compareStream(r, local, off, off+n, a, true)
	return err == nil && bad < 0, err
}

// compareStream compares the next hi-lo bytes of r with local's bytes
// [lo, hi). proof is the offset of the last byte that matches and is not
// zero (-1 if none); firstBad the first offset after proof (or after lo,
// without proof) whose byte differs or is missing, -1 if none. With
// stopAtBad it returns at the first such byte (proof is then meaningless).
func compareStream(r io.Reader, local io.ReaderAt, lo, hi int64, a *attempt, stopAtBad bool) (proof, firstBad int64, err error) {
	proof, firstBad = -1, -1
	const chunk = 256 << 10
	rb, lb := make([]byte, chunk), make([]byte, chunk)
	for off := lo; off < hi; {
		k := int(min(hi-off, chunk))
		got, rerr := io.ReadFull(r, rb[:k])
		if rerr != nil && !errors.Is(rerr, io.EOF) && !errors.Is(rerr, io.ErrUnexpectedEOF) {
			return 0, 0, rerr
		}
		if _, err := local.ReadAt(lb[:k], off); err != nil {
			return 0, 0, &localError{op: "read", err: err}
		}
		if a != nil {
			a.dog.touch()
		}
		if got == k && bytes.Equal(rb[:k], lb[:k]) {
			if j := lastNonZero(lb[:k]); j >= 0 {
				proof, firstBad = off+int64(j), -1
			}
		} else {
			for j := 0; j < k; j++ {
				switch {
				case j >= got || rb[j] != lb[j]:
					if firstBad < 0 {
						firstBad = off + int64(j)
					}
					if stopAtBad {
						return proof, firstBad, nil
					}
				case lb[j] != 0:
					proof, firstBad = off+int64(j), -1
				}
			}
		}
		if got < k { // the remote ends here: nothing after it is there
			return proof, firstBad, nil
		}
		off += int64(k)
	}
	return proof, firstBad, nil
}

// lastNonZero returns the index of p's last non-zero byte, or -1.
func lastNonZero(p []byte) int {
	for j := len(p) - 1; j >= 0; j-- {
		if p[j] != 0 {
			return j
		}
	}
	return -1
}

// verifyContent proves that the remote path holds exactly the size bytes
// of local, by the configured policy, after sizes were found equal. It
// returns the method used.
func (a *attempt) verifyContent(ctx context.Context, sess protocol.Session, path string, local io.ReaderAt, size int64) (string, error) {
	policy := a.r.cfg.Verify
	switch policy {
	case VerifySize:
		return "size", nil
	case VerifyReadback:
		same, err := a.sameRangeByReading(ctx, sess, path, local, size)
		if err != nil {
			return "", err
		}
		if !same {
			return "", &protocol.Error{Op: "verify", Path: path, Err: fmt.Errorf("%w: read-back differs", ErrVerify)}
		}
		return "readback", nil
	}
	h, algo, ok := hasherFor(sess)
	if !ok {
		if policy == VerifyHash {
			return "", &protocol.Error{Op: "verify", Path: path, Kind: protocol.ErrUnsupported, Err: errors.New("the server offers no hash this client knows")}
		}
		return "size", nil
	}
	// Both sides read the whole file: hash them at the same time.
	type sum struct {
		b   []byte
		err error
	}
	localSum := make(chan sum, 1)
	go func() {
		b, err := hashLocal(local, algo, 0, size)
		localSum <- sum{b, err}
	}()
	got, err := a.remoteHash(ctx, h, path, algo, 0, size)
	mine := <-localSum
	if errors.Is(err, protocol.ErrUnsupported) && policy == VerifyAuto {
		return "size", nil
	}
	if err != nil {
		return "", err
	}
	want, err := mine.b, mine.err
	if err != nil {
		return "", err
	}
	if !bytes.Equal(got, want) {
		return "", &protocol.Error{Op: "verify", Path: path,
			Err: fmt.Errorf("%w: %s differs: remote %x, local %x", ErrVerify, algo, got, want)}
	}
	return algo, nil
}

func (a *attempt) sameRangeByReading(ctx context.Context, sess protocol.Session, path string, local io.ReaderAt, size int64) (bool, error) {
	rd, err := sess.OpenReader(ctx, path, 0)
	if err != nil {
		return false, err
	}
	defer rd.Close()
	same, err := equalStream(rd, local, 0, size, a)
	if err != nil || !same {
		return same, err
	}
	// The remote must end here too.
	var one [1]byte
	if n, _ := rd.Read(one[:]); n > 0 {
		return false, nil
	}
	return true, nil
}
