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
		a.r.emit(Event{Kind: EventVerifying, Attempt: a.n, Method: "readback"})
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
	a.r.emit(Event{Kind: EventVerifying, Attempt: a.n, Method: algo})
	// Both sides read the whole file: hash them at the same time.
	type sum struct {
		b   []byte
		err error
	}
	localSum := make(chan sum, 1)
	go func() {
		if s, ok := local.(Summer); ok {
			if b, ok := s.Sum(algo); ok {
				localSum <- sum{b, nil}
				return
			}
		}
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

// maxProofWindow caps how far proofWindow widens a resume's overlap.
const maxProofWindow = 16 << 20

// proofWindow returns how many bytes before off a resume compares with
// the remote: the configured overlap, doubled while local's bytes there
// are all one value (a zero run proves nothing: a stream from the wrong
// offset may hold the same zeros), up to maxProofWindow and off.
// informative is false when even the widest window holds one value, or
// when there is none.
func proofWindow(local io.ReaderAt, off, overlap int64) (k int64, informative bool, err error) {
	k = min(overlap, off)
	if k <= 0 {
		return 0, false, nil
	}
	var one [1]byte
	if _, err := local.ReadAt(one[:], off-1); err != nil {
		return 0, false, &localError{op: "read", err: err}
	}
	v := one[0]
	checked := int64(0) // bytes before off known to equal v
	for {
		same, err := allEqual(local, off-k, off-checked, v)
		if err != nil {
			return 0, false, err
		}
		if !same {
			return k, true, nil
		}
		checked = k
		if k >= min(off, maxProofWindow) {
			return k, false, nil
		}
		k = min(2*k, off, maxProofWindow)
	}
}

// allEqual reports whether every byte of local's [lo, hi) is v.
func allEqual(local io.ReaderAt, lo, hi int64, v byte) (bool, error) {
	buf := make([]byte, min(hi-lo, 256<<10))
	for off := lo; off < hi; {
		k := min(hi-off, int64(len(buf)))
		if _, err := local.ReadAt(buf[:k], off); err != nil {
			return false, &localError{op: "read", err: err}
		}
		for _, b := range buf[:k] {
			if b != v {
				return false, nil
			}
		}
		off += k
	}
	return true, nil
}

// hashProves reports whether a server-side hash proves that the first n
// bytes of the remote path equal local's: false, without an error, where
// the server cannot hash.
func (a *attempt) hashProves(ctx context.Context, sess protocol.Session, path string, local io.ReaderAt, n int64) (bool, error) {
	h, algo, ok := hasherFor(sess)
	if !ok || n <= 0 {
		return false, nil
	}
	want, err := hashLocal(local, algo, 0, n)
	if err != nil {
		return false, err
	}
	got, err := a.remoteHash(ctx, h, path, algo, 0, n)
	if errors.Is(err, protocol.ErrUnsupported) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return bytes.Equal(got, want), nil
}

// Summer is implemented by a download's destination that hashed its
// bytes as they were written and may not be read back whole (a plain
// io.WriterAt behind an adapter): Sum returns the hash of all its bytes
// by algo (a protocol.NewHash name), or false when it has none, and
// verification then reads the destination as usual.
type Summer interface {
	Sum(algo string) ([]byte, bool)
}

// SameContent reports whether the remote path holds exactly the size
// bytes of local, by a hash the server computes (the first algorithm
// both sides know), and names it. A remote file of another size is not
// the same; a session that cannot hash fails with protocol.ErrUnsupported.
// It reads local whole.
func SameContent(ctx context.Context, sess protocol.Session, path string, local io.ReaderAt, size int64) (method string, same bool, err error) {
	fi, err := sess.Stat(ctx, path)
	if err != nil {
		return "", false, err
	}
	if fi.IsDir || fi.Size != size {
		return "size", false, nil
	}
	h, algo, ok := hasherFor(sess)
	if !ok {
		return "", false, &protocol.Error{Op: "hash", Path: path, Kind: protocol.ErrUnsupported, Err: errors.New("the server offers no hash this client knows")}
	}
	hctx, cancel := context.WithTimeout(ctx, hashBudget(DefaultStallTimeout, size))
	defer cancel()
	got, err := h.Hash(hctx, path, algo, 0, size)
	if err != nil {
		return "", false, err
	}
	want, err := hashLocal(local, algo, 0, size)
	if err != nil {
		return "", false, err
	}
	return algo, bytes.Equal(got, want), nil
}
