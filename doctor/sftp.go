package doctor

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/openhaul/haul/protocol"
	psftp "github.com/openhaul/haul/protocol/sftp"
)

func (d *doc) runSFTP(ctx context.Context) {
	start := time.Now()
	s, err := d.dialSFTP(ctx, 0)
	if err != nil {
		d.loginFailed(err, time.Since(start))
		var he *psftp.HostKeyError
		if errors.As(err, &he) {
			f := &d.rep.Findings[len(d.rep.Findings)-1]
			f.Data = map[string]any{"host": he.Host, "received": he.Received, "expected": he.Expected}
			if len(he.Expected) > 0 {
				f.Summary = "the server's SSH host key DIFFERS from the one recorded: possible man-in-the-middle, or a reinstalled server"
			} else {
				f.Summary = "the server's SSH host key is unknown (not in known_hosts): refused, nothing sent"
			}
		}
		return
	}
	defer func() { _ = s.Close() }()
	login := Finding{ID: "login", Status: OK, Summary: fmt.Sprintf("host key verified; logged in as %s in %v (one attempt)", d.user(), time.Since(start).Round(time.Millisecond)),
		Evidence: "a rejected login is never retried by haul, nor probed by doctor (no wrong password is sent)"}
	if d.cfg.InsecureIgnoreHostKey {
		login.Status = Warn
		login.Summary = fmt.Sprintf("host key NOT checked (--insecure-host-key): anyone on the path could pose as the server; logged in as %s in %v (one attempt)", d.user(), time.Since(start).Round(time.Millisecond))
		login.Fix = "drop --insecure-host-key; record the key once with --accept-new-host-key after checking its fingerprint"
	}
	d.rep.add(login)
	d.sftpInfo(ctx, s)
	d.sftpRTT(ctx, s)
	file, size := d.readable(ctx, s)
	var wrote string
	if d.opts.WriteDir != "" {
		wrote = d.sftpWriteTest(ctx, s)
		if file == "" && wrote != "" {
			if fi, err := s.Stat(ctx, wrote); err == nil && fi.Size >= 2*windowSize {
				file, size = wrote, fi.Size
			}
		}
	}
	d.sftpResume(ctx, s, file, size)
	if file != "" {
		n := min(size, throughputMax)
		t := time.Now()
		if got, err := readRange(ctx, s, file, 0, n); err == nil && len(got) > 0 {
			d.throughputFinding(int64(len(got)), time.Since(t))
		}
	}
	if wrote != "" {
		if err := s.Remove(ctx, wrote); err != nil {
			d.rep.add(Finding{ID: "cleanup", Status: Warn, Summary: "could not remove the test file " + wrote, Evidence: err.Error()})
		}
	}
	_ = s.Close()
	if d.opts.ProbeLimit > 0 {
		d.connLimit(ctx, func(ctx context.Context) (io.Closer, error) { return d.dialSFTP(ctx, 0) })
	}
	if d.opts.ProbeIdle > 0 {
		conns := idleConns
		if d.maxConns > 0 && d.maxConns < conns {
			conns = d.maxConns
		}
		answer := d.answerTimeout()
		r := idleSearch(ctx, d.opts.ProbeIdle, conns, func(ctx context.Context, wait time.Duration) idleOutcome {
			s, err := dialBusy(ctx, func(ctx context.Context) (*psftp.Session, error) { return d.dialSFTP(ctx, -1) }) // no SSH keepalive: idle means idle
			if err != nil {
				return idleOutcome{}
			}
			defer s.Close()
			res, err := s.IdleCheck(ctx, wait, answer)
			o := idleOutcome{measured: err == nil}
			switch {
			case err != nil:
			case res.Closed && res.Waited < wait:
				o.closedAt = res.Waited
				o.evidence = fmt.Sprintf("after %.1fs idle the server closed the connection", seconds(res.Waited))
			case res.Silent, res.Err != nil, res.Closed:
				o.silent = true
			default:
				o.survived = true
			}
			return o
		})
		d.rep.add(d.idleFinding("idle-control", "SSH connection", r))
	}
	d.segments()
}

func (d *doc) dialSFTP(ctx context.Context, ka time.Duration) (*psftp.Session, error) {
	s, err := d.dialer(ka)(ctx)
	if err != nil {
		return nil, err
	}
	ss, ok := s.(*psftp.Session)
	if !ok {
		_ = s.(io.Closer).Close()
		return nil, fmt.Errorf("doctor: unexpected session type %T", s)
	}
	return ss, nil
}

func (d *doc) sftpInfo(ctx context.Context, s *psftp.Session) {
	in, err := s.Diagnose(ctx)
	if err != nil {
		d.rep.add(Finding{ID: "features", Status: Warn, Summary: "could not read the server's SFTP extensions", Evidence: err.Error()})
		return
	}
	exts := in.Extensions
	if exts == nil {
		exts = in.KnownExtensions
	}
	f := Finding{ID: "features", Status: OK, Data: map[string]any{"extensions": exts, "server": in.ServerVersion,
		"max_read": in.MaxRead, "max_write": in.MaxWrite, "packet": in.PacketSize, "requests": in.Concurrency}}
	f.Summary = fmt.Sprintf("%s, SFTP v3, cipher %s; extensions: %s", in.ServerVersion, in.Cipher, strings.Join(exts, ", "))
	if in.MaxRead > 0 {
		f.Evidence = fmt.Sprintf("limits@openssh.com: read %d, write %d, packet %d, handles %d; haul uses %d-byte requests, %d in flight",
			in.MaxRead, in.MaxWrite, in.MaxPacket, in.MaxHandles, in.PacketSize, in.Concurrency)
	} else {
		f.Evidence = fmt.Sprintf("no limits@openssh.com: haul uses %d-byte requests, %d in flight", in.PacketSize, in.Concurrency)
	}
	has := func(n string) bool { return slices.Contains(exts, n) }
	var missing []string
	if !has("statvfs@openssh.com") {
		missing = append(missing, "statvfs@openssh.com (free space: a full disk shows only as a failed write)")
	}
	if !has("posix-rename@openssh.com") {
		missing = append(missing, "posix-rename@openssh.com (renaming over an existing file may fail)")
	}
	if len(missing) > 0 {
		f.Status = Info
		f.Evidence += "; missing: " + strings.Join(missing, "; ")
	}
	d.rep.add(f)

	v := Finding{ID: "verify", Status: OK, Data: map[string]any{"algorithms": in.HashAlgorithms, "check_file": in.CheckFile, "exec": in.Exec}}
	switch {
	case len(in.CheckFile) > 0:
		v.Summary = fmt.Sprintf("haul verifies with the check-file extension (%s, byte ranges)", strings.Join(in.CheckFile, ", "))
	case len(in.Exec) > 0:
		v.Summary = fmt.Sprintf("no check-file; exec is allowed: haul verifies by running a hash command over SSH (%s, fastest first)", strings.Join(in.HashAlgorithms, ", "))
		v.Evidence = "turn it off with --no-exec-hash"
	case in.ExecHashOff:
		v.Status, v.Summary = Info, "no check-file, exec hashing off (--no-exec-hash): haul verifies by size"
	default:
		v.Status = Info
		v.Summary = "no check-file and no hash command over exec (exec refused, e.g. ForceCommand internal-sftp): haul verifies by size, and re-reads 64 KiB before each resume point"
		v.Fix = "server: allow exec of sha256sum/md5sum for this user, or use a server with check-file (proftpd mod_sftp); or --verify readback"
	}
	d.rep.add(v)
	d.rep.add(Finding{ID: "binary", Status: OK, Summary: "SFTP moves bytes unchanged (no ASCII mode)"})
	d.rep.add(Finding{ID: "resume-method", Status: OK, Summary: "haul resumes at explicit offsets (never SSH_FXF_APPEND), from the contiguous acknowledged high-water mark"})
}

func (d *doc) sftpRTT(ctx context.Context, s *psftp.Session) {
	var ts []time.Duration
	for range 5 {
		t := time.Now()
		if _, err := s.Stat(ctx, "."); err != nil {
			break
		}
		ts = append(ts, time.Since(t))
	}
	d.rttFinding(ts, "stats")
}

// readRange reads [off, off+n) of path as a download does.
func readRange(ctx context.Context, s *psftp.Session, path string, off, n int64) ([]byte, error) {
	r, err := s.OpenRangeReader(ctx, path, off, n)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, n))
	if err != nil {
		return nil, err
	}
	return b, nil
}

func (d *doc) sftpResume(ctx context.Context, s *psftp.Session, file string, size int64) {
	if file == "" {
		d.rep.add(Finding{ID: "resume-read", Status: Skip, Summary: "no readable file to test a read at an offset on",
			Fix: "name one with --read-file PATH, or let doctor write one with --write-test DIR"})
		return
	}
	off, w := resumeWindow(size)
	head, err1 := readRange(ctx, s, file, 0, off+int64(w))
	at, err2 := readRange(ctx, s, file, off, int64(w))
	f := Finding{ID: "resume-read", Data: map[string]any{"file": file, "offset": off}}
	switch {
	case err1 != nil || err2 != nil:
		f.Status, f.Summary, f.Evidence = Skip, "could not read "+file, fmt.Sprint(errors.Join(err1, err2))
	case bytes.Equal(at, head[off:]):
		f.Status, f.Summary = OK, fmt.Sprintf("a read at offset %d of %s returns the file's bytes there", off, file)
	default:
		f.Status, f.Summary = Fail, fmt.Sprintf("a read at offset %d of %s returned other bytes than the file holds there", off, file)
		f.Fix = "server: reads at an offset are broken; do not resume against it"
	}
	d.rep.add(f)
}

func (d *doc) sftpWriteTest(ctx context.Context, s *psftp.Session) string {
	dir := strings.TrimSuffix(d.opts.WriteDir, "/")
	if dir == "" {
		dir = "."
	}
	sp := Finding{ID: "free-space"}
	free, err := s.FreeSpace(ctx, dir)
	switch {
	case errors.Is(err, protocol.ErrUnsupported):
		sp.Status, sp.Summary = Info, "the server offers no statvfs@openssh.com: a full disk shows only when an upload fails"
	case err != nil:
		sp.Status, sp.Summary, sp.Evidence = Info, "could not ask for free space", err.Error()
	case free < testFileSize:
		sp.Status, sp.Summary = Fail, fmt.Sprintf("disk full: %d bytes free in %s (statvfs)", free, dir)
		sp.Fix = "free space on the server or raise the quota; haul checks free space before an SFTP upload and stops with \"no space\""
		sp.Data = map[string]any{"bytes": free}
	default:
		sp.Status, sp.Summary = OK, fmt.Sprintf("%d bytes free in %s (statvfs)", free, dir)
		sp.Data = map[string]any{"bytes": free}
	}
	d.rep.add(sp)
	name := testName(dir)
	content := make([]byte, testFileSize)
	_, _ = rand.Read(content)
	f := Finding{ID: "write", Data: map[string]any{"path": name}}
	if err := d.writeAt(ctx, s, name, 0, content); err != nil {
		_ = s.Remove(ctx, name)
		d.writeFailed(&f, dir, err)
		d.rep.add(f)
		return ""
	}
	f.Status, f.Summary = OK, fmt.Sprintf("wrote %d bytes to %s", len(content), name)
	d.rep.add(f)

	half := int64(len(content) / 2)
	tail := make([]byte, len(content)-int(half))
	_, _ = rand.Read(tail)
	rf := Finding{ID: "resume-write", Data: map[string]any{"offset": half}}
	err = d.writeAt(ctx, s, name, half, tail)
	switch {
	case errors.Is(err, protocol.ErrResumeUnsupported):
		rf.Status, rf.Summary, rf.Evidence = Warn, "writes at an offset are refused (the server rewrites whatever it opens): haul restarts interrupted uploads from byte 0", err.Error()
		rf.Fix = "server: rclone serve sftp needs --vfs-cache-mode writes (or full) for writes at an offset"
	case err != nil:
		rf.Status, rf.Summary, rf.Evidence = Fail, "a write at an offset failed", err.Error()
	default:
		want := append(append([]byte{}, content[:half]...), tail...)
		got, rerr := readRange(ctx, s, name, 0, int64(len(want))+1)
		switch {
		case rerr != nil:
			rf.Status, rf.Summary, rf.Evidence = Warn, "could not read the test file back", rerr.Error()
		case bytes.Equal(got, want):
			rf.Status, rf.Summary = OK, fmt.Sprintf("offset writes honoured: the file holds the first half and the second half rewritten at %d", half)
		default:
			rf.Status, rf.Summary = Fail, fmt.Sprintf("a write at offset %d did not land there (file has %d bytes, content differs)", half, len(got))
			rf.Fix = "server: writes at an offset are broken; never resume uploads against it (--segments 1)"
		}
	}
	d.rep.add(rf)
	to := name + ".renamed"
	nf := Finding{ID: "rename"}
	if err := s.Rename(ctx, name, to); err != nil {
		nf.Status, nf.Summary, nf.Evidence = Warn, "rename refused: uploads need --direct (no .part file and rename)", err.Error()
		d.rep.add(nf)
		return name
	}
	nf.Status, nf.Summary = OK, "rename allowed (haul uploads to NAME.part and renames it once verified)"
	d.rep.add(nf)
	return to
}
