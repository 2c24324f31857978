package sftp

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strings"

	"github.com/openhaul/haul/protocol"
)

// checkFileDefault is what a server that answers check-file without
// naming its algorithms in VERSION (proftpd's mod_sftp at version 3) is
// assumed to offer: the draft's algorithms every such server implements.
var checkFileDefault = []string{"sha256", "sha512", "sha1", "md5"}

var _ protocol.Hasher = (*Session)(nil)

// hashState is what a session learned about hashing on its server; it is
// probed once, on first use.
type hashState struct {
	probed    bool
	checkFile []string // algorithms by check-file-name; nil: not offered
	fxp       *fxpConn // the channel check-file requests go over
	exec      []string // algorithms by SSH exec; nil: not offered
	cwd       string   // the SFTP working directory, for exec
}

// HashAlgorithms lists the algorithms the server can hash with, best
// first: those of the check-file extension when the server has it, else
// those of the hash commands found over SSH exec (see WithExecHash). The
// first call probes the server (an exec command first, unless the server
// advertises check-file, then a second SFTP channel), bounded by
// WithDialTimeout, and logs the method found and why; the exec probe gets
// at most 5 s (or half of it), is run once more when it ends without an
// exit status (EOF), and when it does not answer, only its channel is
// closed and the session offers no hash by exec. A check-file probe that
// times out closes the connection, like any call whose context ends.
func (s *Session) HashAlgorithms() []string {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.dialTimeout)
	defer cancel()
	s.hashMu.Lock()
	defer s.hashMu.Unlock()
	hs := s.probeHash(ctx)
	var out []string
	for _, name := range protocol.KnownHashes() {
		if slices.Contains(hs.checkFile, name) {
			out = append(out, name)
		}
	}
	if len(out) > 0 {
		return out
	}
	// Over exec the server runs coreutils, without SHA extensions on many
	// CPUs (sha256sum ran at 120-250 MB/s on the test machines, sha1sum
	// and md5sum at 530-610 MB/s): fastest first, counting this side's
	// hash of the same bytes too, where SHA-1 runs 2.4 times as fast as
	// MD5 (Go's SHA-1 uses the CPU's SHA extensions: 1.6 GB/s against
	// 0.7). The check guards against accidental corruption on a channel
	// SSH already authenticates, so speed matters more here than
	// collision resistance; SHA-1 is the stronger of the two anyway.
	for _, name := range execPreference {
		if slices.Contains(hs.exec, name) {
			out = append(out, name)
		}
	}
	return out
}

// execPreference orders the exec hash tools by speed (both sides').
var execPreference = []string{"sha1", "md5", "sha512", "sha256"}

// probeHash fills s.hash once. s.hashMu must be held.
//
// The exec probe runs before the check-file probe opens and closes a
// channel of its own: a server was seen to fail an exec (EOF) now and
// then when it came right after another channel closed, which made the
// verification method change from run to run (a probe that ends in EOF is
// also run once more, see probeExec). Where the main channel's VERSION
// names check-file, which is preferred, exec is probed only when the
// check-file channel is refused. The method found, and why, is logged
// once, at Info.
func (s *Session) probeHash(ctx context.Context) *hashState {
	hs := &s.hash
	if hs.probed {
		return hs
	}
	end, err := s.begin(ctx, "hash-probe", ".")
	if err != nil {
		return hs // not marked probed: a later call may succeed
	}
	hs.probed = true
	advertised := false
	for _, name := range []string{extCheckFileName, extCheckFile, extCheckFileHandle} {
		if _, ok := s.client.HasExtension(name); ok {
			advertised = true
		}
	}
	execWhy := "exec hashing is off (WithExecHash(false))"
	execFirst := s.opts.execHash && !advertised
	if execFirst {
		execWhy, err = s.probeExec(ctx, hs)
	}
	if err == nil {
		err = s.probeCheckFile(hs)
	}
	switch {
	case err != nil || execFirst || !s.opts.execHash:
	case hs.checkFile != nil:
		execWhy = "not probed: the server answers check-file"
	default:
		// Advertised, but the check-file channel was refused.
		execWhy, err = s.probeExec(ctx, hs)
	}
	if err = end(err); err != nil {
		s.log.Debug("sftp: hash probe failed", "err", err)
		execWhy = "the probe failed: " + err.Error()
	}
	switch {
	case hs.checkFile != nil:
		s.log.Info("sftp: server-side hashing by the check-file extension", "algorithms", hs.checkFile,
			"why", "the server answers check-file", "exec", hs.exec)
	case hs.exec != nil:
		s.log.Info("sftp: server-side hashing by commands over SSH exec", "algorithms", hs.exec,
			"why", "no check-file extension; "+execWhy)
	default:
		s.log.Info("sftp: no server-side hashing", "why", "no check-file extension; exec: "+execWhy)
	}
	return hs
}

// probeCheckFile finds out whether the server answers check-file-name: by
// the VERSION extensions (on pkg/sftp's channel, then on a channel of our
// own), else by asking for the hash of "." (a directory: a server with the
// extension refuses the path, one without refuses the request as
// unsupported). The channel stays open for Hash when the extension is
// there. Only a broken connection is an error.
func (s *Session) probeCheckFile(hs *hashState) error {
	f, err := openFXP(s.ssh.Conn)
	if err != nil {
		if s.aborted.Load() || s.closed.Load() {
			return err
		}
		s.log.Debug("sftp: no second SFTP channel for check-file", "err", err)
		return nil
	}
	algos, advertised := checkFileAlgorithms(f.ext)
	if !advertised {
		_, _, err := f.checkFileName(".", strings.Join(checkFileDefault, ","), 0, 0, 0)
		var fe *fxStatusError
		switch {
		case errors.As(err, &fe) && fe.Code == fxOpUnsupported:
			_ = f.Close()
			return nil
		case errors.As(err, &fe):
			// The path was refused: the request is known.
		case err != nil:
			_ = f.Close()
			return err
		}
	}
	if len(algos) == 0 {
		algos = checkFileDefault
	}
	hs.fxp = f
	hs.checkFile = algos
	return nil
}

// Hash returns the digest, by algorithm, of bytes [start, end) of path as
// the server computes it: with the check-file extension where the server
// has it, else by a hash command over SSH exec (WithExecHash). end < 0
// means the end of the file; bytes past the end of the file are not
// hashed (the digest then differs from that of the full range).
//
// check-file hashes only ranges that start at 0 or end at the end of the
// file (proftpd 1.3.8 hashes other ranges wrongly, so none is asked for).
// A range or algorithm the server cannot hash yields an error matching
// protocol.ErrUnsupported, as does a hash command that fails on the
// server; a missing file yields fs.ErrNotExist.
//
// The server sends nothing while it hashes: the keepalive does not close
// the connection meanwhile, so bound the call by ctx. When ctx ends, a hash
// command's exec channel is closed (the server stops the command) and the
// connection with it.
func (s *Session) Hash(ctx context.Context, path, algorithm string, start, end int64) ([]byte, error) {
	if start < 0 || end >= 0 && end < start {
		return nil, &protocol.Error{Op: "hash", Path: path, Err: fmt.Errorf("invalid range [%d, %d)", start, end)}
	}
	h := protocol.NewHash(algorithm)
	if h == nil {
		return nil, &protocol.Error{Op: "hash", Path: path, Kind: protocol.ErrUnsupported,
			Err: fmt.Errorf("unknown hash algorithm %q", algorithm)}
	}
	s.hashMu.Lock()
	defer s.hashMu.Unlock()
	hs := s.probeHash(ctx)
	done, err := s.begin(ctx, "hash", path)
	if err != nil {
		return nil, err
	}
	s.quiet.Add(1)
	defer s.quiet.Add(-1)
	sum, err := s.hashRange(ctx, hs, h, path, algorithm, start, end)
	return sum, done(err)
}

var errNoHash = errors.New("the server offers no way to hash this")

// hashRange is Hash once the call has begun.
func (s *Session) hashRange(ctx context.Context, hs *hashState, h hash.Hash, path, algo string, start, end int64) ([]byte, error) {
	byCheckFile := slices.Contains(hs.checkFile, algo)
	byExec := slices.Contains(hs.exec, algo)
	if !byCheckFile && !byExec {
		return nil, &protocol.Error{Op: "hash", Path: path, Kind: protocol.ErrUnsupported,
			Err: fmt.Errorf("%w with %s", errNoHash, algo)}
	}
	fi, err := s.client.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%s is a directory", path)
	}
	size := fi.Size()
	if err := checkSize(size); err != nil {
		return nil, err
	}
	if end < 0 || end > size {
		end = size
	}
	start = min(start, end)
	if start == end {
		return h.Sum(nil), nil // nothing to hash: no need to ask
	}
	switch {
	case byCheckFile && (start == 0 || end == size):
		length := end - start
		if end == size {
			length = 0 // to the end, whatever the file's size now
		}
		used, sum, err := hs.fxp.checkFileName(path, algo, uint64(start), uint64(length), 0)
		if err != nil {
			return nil, err
		}
		if used != algo || len(sum) != h.Size() {
			return nil, shown(&protocol.Error{Op: "hash", Path: path, Kind: protocol.ErrUnsupported,
				Err: fmt.Errorf("check-file answered %d bytes of %q for one %s digest", len(sum), used, algo)}, s.opts.password)
		}
		return sum, nil
	case byExec:
		return s.execHash(ctx, hs, path, algo, h.Size(), start, end, size)
	}
	return nil, &protocol.Error{Op: "hash", Path: path, Kind: protocol.ErrUnsupported,
		Err: fmt.Errorf("%w: check-file cannot hash [%d, %d) of a %d-byte file", errNoHash, start, end, size)}
}
