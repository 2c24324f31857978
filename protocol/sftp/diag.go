package sftp

import (
	"context"
	"errors"
	"slices"
	"sort"
	"time"

	"github.com/openhaul/haul/protocol"
	"golang.org/x/crypto/ssh"
)

// Diagnostics: what `haul doctor` asks of an SFTP session beyond
// protocol.Session. Nothing here writes to the server.

// Info is what a server told about itself.
type Info struct {
	// ServerVersion is the SSH identification string (server text,
	// escaped).
	ServerVersion string
	// Cipher and KeyExchange are the algorithms negotiated ("" when the
	// library does not say).
	Cipher, KeyExchange string
	// Extensions lists the SFTP extensions of the VERSION reply, sorted,
	// or nil when a second SFTP channel to read them was refused (see
	// KnownExtensions).
	Extensions []string
	// KnownExtensions lists, of the extensions haul uses, those the main
	// channel's VERSION reply named.
	KnownExtensions []string
	// Limits are the server's answers to limits@openssh.com (zero when it
	// does not offer the extension): the largest packet, read and write,
	// and open handles.
	MaxPacket, MaxRead, MaxWrite, MaxHandles uint64
	// PacketSize and Concurrency are the request size and requests in
	// flight haul chose for this server.
	PacketSize, Concurrency int
	// CheckFile lists the check-file algorithms the server answers; Exec
	// the hash commands found over SSH exec (nil when refused or not
	// probed). HashAlgorithms is what haul verifies with, best first.
	CheckFile, Exec, HashAlgorithms []string
	// ExecHashOff reports that exec hashing is turned off (WithExecHash).
	ExecHashOff bool
}

// extensionsUsed are the SFTP extensions haul looks for.
var extensionsUsed = []string{extCheckFileName, extCheckFile, extCheckFileHandle, extStatVFS,
	extLimits, extPosixRename, "fsync@openssh.com", "hardlink@openssh.com", "copy-data"}

// Diagnose returns what the server told about itself, probing hashing
// (as HashAlgorithms does) if that was not done yet.
func (s *Session) Diagnose(ctx context.Context) (Info, error) {
	var in Info
	in.ServerVersion = protocol.ServerText(string(s.ssh.ServerVersion()), s.opts.password)
	if am, ok := s.ssh.Conn.(ssh.AlgorithmsConnMetadata); ok {
		a := am.Algorithms()
		in.Cipher, in.KeyExchange = a.Write.Cipher, a.KeyExchange
	}
	for _, name := range extensionsUsed {
		if _, ok := s.client.HasExtension(name); ok {
			in.KnownExtensions = append(in.KnownExtensions, name)
		}
	}
	in.PacketSize, in.Concurrency = s.opts.packetSize, s.opts.concurrency
	in.ExecHashOff = !s.opts.execHash

	end, err := s.begin(ctx, "diag", ".")
	if err != nil {
		return in, err
	}
	f, err := openFXP(s.ssh.Conn)
	if err == nil {
		for name := range f.ext {
			in.Extensions = append(in.Extensions, protocol.ServerText(name, s.opts.password))
		}
		sort.Strings(in.Extensions)
		if _, ok := f.ext[extLimits]; ok {
			lim, lerr := f.limits()
			var se *fxStatusError
			switch {
			case lerr == nil:
				in.MaxPacket, in.MaxRead, in.MaxWrite, in.MaxHandles = lim.maxPacket, lim.maxRead, lim.maxWrite, lim.maxHandles
			case !errors.As(lerr, &se):
				err = lerr
			}
		}
		_ = f.Close()
	} else if !s.aborted.Load() && !s.closed.Load() {
		err = nil // a second channel refused: Extensions stays nil
	}
	if err = end(err); err != nil {
		return in, err
	}

	in.HashAlgorithms = s.HashAlgorithms()
	s.hashMu.Lock()
	in.CheckFile = slices.Clone(s.hash.checkFile)
	in.Exec = slices.Clone(s.hash.exec)
	s.hashMu.Unlock()
	return in, nil
}

// IdleProbe is what IdleCheck saw of an idle connection.
type IdleProbe struct {
	// Waited is how long the connection sat idle before the server closed
	// it, or the whole wait.
	Waited time.Duration
	// Closed reports that the connection ended during the wait (the
	// server's idle timeout, or a reset on the way).
	Closed bool
	// Silent reports that a request sent after the wait got no answer
	// within answer: the connection was dropped on the way without a word.
	Silent bool
	// Err is how the request after the wait failed, when it did.
	Err error
}

// IdleCheck leaves the connection idle for up to wait (dial the session
// with WithKeepAlive(0), or the keepalive keeps it busy), noting when the
// server closes it, then sends one request (a stat of ".") and waits up to
// answer for the reply. The session is unusable afterwards unless the
// result shows neither Closed nor Silent nor Err; close it either way (a
// goroutine watching the connection ends only then).
func (s *Session) IdleCheck(ctx context.Context, wait, answer time.Duration) (IdleProbe, error) {
	var r IdleProbe
	closed := make(chan struct{})
	go func() {
		_ = s.ssh.Wait()
		close(closed)
	}()
	start := time.Now()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-closed:
		r.Waited, r.Closed = time.Since(start), true
		return r, nil
	case <-ctx.Done():
		s.abort()
		<-closed
		return r, &protocol.Error{Op: "diag", Err: context.Cause(ctx)}
	case <-t.C:
		r.Waited = wait
	}
	actx, cancel := context.WithTimeout(ctx, answer)
	defer cancel()
	_, err := s.Stat(actx, ".")
	switch {
	case err == nil, errors.Is(err, protocol.ErrTransient) && actx.Err() == nil && ctx.Err() == nil:
		if err != nil {
			r.Err = err
		}
	case actx.Err() != nil && ctx.Err() == nil:
		r.Silent = true
	case ctx.Err() != nil:
		return r, err
	default:
		r.Err = err
	}
	if r.Err != nil || r.Silent {
		s.abort()
	}
	select {
	case <-closed:
		if r.Err == nil && !r.Silent {
			r.Closed = true
		}
	default:
		if r.Err != nil || r.Silent {
			<-closed
		}
	}
	return r, nil
}
