package sftp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"strings"
	"time"

	"github.com/openhaul/haul/protocol"
	"github.com/pkg/sftp"
)

var (
	_ protocol.DirReader = (*Session)(nil)
	_ protocol.DirMaker  = (*Session)(nil)
)

// SFTP packet types and attribute flags used by listings (draft-ietf-
// secsh-filexfer-02, version 3), beside those of stream.go.
const (
	dirFxpOpendir    = 11
	dirFxpReaddir    = 12
	dirFxpName       = 104
	dirAttrACModTime = 0x8
	dirAttrExtended  = 0x80000000
)

var errDirNotDir = errors.New("not a directory")

// ReadDir lists path with OPENDIR and READDIR on the session's data
// channel (the second SFTP channel readers and writers use), whose replies
// are read one packet at a time, each bounded (256 KiB, OpenSSH's own
// client limit): entries are counted as they arrive, and a server that
// sends more than protocol.MaxDirEntries of them (or sends names without
// end) fails the call with an error matching protocol.ErrProtocol before
// they exhaust memory, as does a malformed NAME reply or a size of 2^63 or
// more.
//
// Names are the server's, relative to path; "." and ".." are left out, and
// so are names holding a slash, NUL, CR or LF. Directories have IsDir set
// and Size 0. Entries are described as READDIR does (OpenSSH: lstat), so a
// symbolic link is not followed: IsDir false, the link's own size. ModTime
// is the mtime the server sends (second precision), zero without one.
//
// A missing path matches fs.ErrNotExist, a path that is no directory
// protocol.ErrInvalidPath: OpenSSH answers OPENDIR on a file with
// SSH_FX_NO_SUCH_FILE, so a refused OPENDIR or READDIR is explained with a
// Stat of path.
//
// Where the server refuses a second channel, the listing goes through
// pkg/sftp's ReadDirContext, which keeps every entry in memory before
// anything can count them (the limit is then checked afterwards) and turns
// a name with a slash into its last element instead of dropping it.
func (s *Session) ReadDir(ctx context.Context, path string) ([]protocol.DirEntry, error) {
	end, err := s.begin(ctx, "readdir", path)
	if err != nil {
		return nil, err
	}
	var entries []protocol.DirEntry
	if fc := s.takeDataChannel(); fc != nil {
		var inStep bool
		entries, inStep, err = readDirFXP(fc, path)
		s.releaseDataChannel(fc, inStep && !s.aborted.Load())
		if err != nil && !dirIsRefusal(err) && protocol.Classify(err) == nil {
			// A reply over the packet bound, or one that makes no
			// sense: the server broke the protocol.
			err = &protocolError{msg: err.Error()}
		}
	} else {
		entries, err = s.readDirClient(ctx, path)
	}
	if err != nil && dirIsRefusal(err) && ctx.Err() == nil {
		err = s.readDirCause(path, err)
	}
	if err = end(err); err != nil {
		return nil, err
	}
	return entries, nil
}

// readDirFXP lists path on fc. inStep reports whether fc can carry the
// next request (every reply due was read).
func readDirFXP(fc *fxpConn, path string) (entries []protocol.DirEntry, inStep bool, err error) {
	id := fc.nextID()
	b := binary.BigEndian.AppendUint32(nil, id)
	b = appendString(b, path)
	if err := fc.send(dirFxpOpendir, b); err != nil {
		return nil, false, err
	}
	typ, body, err := fc.recvReply(id)
	if err != nil {
		return nil, errors.As(err, new(*fxStatusError)), err
	}
	if typ != fxpHandle {
		return nil, false, &protocolError{msg: fmt.Sprintf("sftp: packet type %d in reply to OPENDIR", typ)}
	}
	r := &fxpReader{b: body[4:]}
	dir := &remoteFile{fc: fc, handle: r.string()}
	if r.err != nil {
		return nil, false, &protocolError{msg: fmt.Sprintf("sftp: malformed HANDLE in reply to OPENDIR: %v", r.err)}
	}
	entries, inStep, err = readDirNames(fc, dir.handle)
	if inStep {
		if cerr := dir.close(); cerr != nil && !errors.As(cerr, new(*fxStatusError)) {
			inStep = false
			if err == nil {
				err = cerr
			}
		}
	}
	if err != nil {
		return nil, inStep, err
	}
	return entries, inStep, nil
}

// readDirNames sends READDIR on handle until the server answers
// SSH_FX_EOF.
func readDirNames(fc *fxpConn, handle string) (entries []protocol.DirEntry, inStep bool, err error) {
	seen := 0 // names received, "." and ".." included; an empty NAME counts as one
	for {
		id := fc.nextID()
		b := binary.BigEndian.AppendUint32(nil, id)
		b = appendString(b, handle)
		if err := fc.send(dirFxpReaddir, b); err != nil {
			return nil, false, err
		}
		typ, body, err := fc.recvReply(id)
		var se *fxStatusError
		switch {
		case errors.As(err, &se) && se.Code == fxEOF:
			return entries, true, nil
		case errors.As(err, &se):
			return nil, true, err
		case err != nil:
			return nil, false, err
		case typ != dirFxpName:
			return nil, false, &protocolError{msg: fmt.Sprintf("sftp: packet type %d in reply to READDIR", typ)}
		}
		r := &fxpReader{b: body[4:]}
		count := r.uint32()
		if r.err != nil || uint64(count) > uint64(len(r.b)/12) { // a name takes 12 bytes at least
			return nil, false, &protocolError{msg: fmt.Sprintf("sftp: malformed NAME in reply to READDIR (%d names in %d bytes)", count, len(r.b))}
		}
		seen += max(int(count), 1)
		if seen > protocol.MaxDirEntries+2 {
			// The reply was read whole: the channel is in step.
			return nil, true, &protocolError{msg: fmt.Sprintf("sftp: a listing of more than %d entries", protocol.MaxDirEntries)}
		}
		for range count {
			e, ok, err := parseDirName(r)
			if err != nil {
				return nil, false, err
			}
			if ok {
				entries = append(entries, e)
			}
		}
		if len(entries) > protocol.MaxDirEntries {
			return nil, true, &protocolError{msg: fmt.Sprintf("sftp: a listing of more than %d entries", protocol.MaxDirEntries)}
		}
	}
}

// parseDirName reads one name of a NAME reply: filename, longname, ATTRS.
// ok is false for a name that is no entry to hand out.
func parseDirName(r *fxpReader) (e protocol.DirEntry, ok bool, err error) {
	name := r.string()
	long := r.string()
	flags := r.uint32()
	var size uint64
	var mode, mtime uint32
	if flags&attrSize != 0 {
		size = dirUint64(r)
	}
	if flags&attrUIDGID != 0 {
		r.uint32()
		r.uint32()
	}
	if flags&attrPermissions != 0 {
		mode = r.uint32()
	}
	if flags&dirAttrACModTime != 0 {
		r.uint32() // atime
		mtime = r.uint32()
	}
	if flags&dirAttrExtended != 0 {
		for n := r.uint32(); n > 0 && r.err == nil; n-- {
			r.string()
			r.string()
		}
	}
	if r.err != nil {
		return e, false, &protocolError{msg: fmt.Sprintf("sftp: malformed NAME in reply to READDIR: %v", r.err)}
	}
	if !validEntryName(name) {
		return e, false, nil
	}
	e.Name = name
	if flags&attrPermissions != 0 {
		e.IsDir = mode&modeType == modeDir
	} else {
		e.IsDir = strings.HasPrefix(long, "d") // ls -l style, where the server sends no mode
	}
	if flags&dirAttrACModTime != 0 {
		e.ModTime = time.Unix(int64(mtime), 0)
	}
	if !e.IsDir {
		if size > math.MaxInt64 {
			return e, false, &protocolError{msg: fmt.Sprintf("sftp: the server listed %q with a size of %d bytes",
				protocol.ServerText(name), size)}
		}
		e.Size = int64(size)
	}
	return e, true, nil
}

// dirUint64 reads a uint64 off r.
func dirUint64(r *fxpReader) uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.err = errShortPacket
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

// validEntryName reports whether a name a server listed may be handed out
// as an entry: not empty, not "." or "..", and no slash, NUL, CR or LF.
func validEntryName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00\r\n")
}

// readDirClient lists path through pkg/sftp (no read channel).
func (s *Session) readDirClient(ctx context.Context, path string) ([]protocol.DirEntry, error) {
	fis, err := s.client.ReadDirContext(ctx, path)
	if err != nil {
		return nil, err
	}
	entries := make([]protocol.DirEntry, 0, min(len(fis), protocol.MaxDirEntries))
	for _, fi := range fis {
		if !validEntryName(fi.Name()) {
			continue
		}
		if len(entries) == protocol.MaxDirEntries {
			return nil, &protocolError{msg: fmt.Sprintf("sftp: a listing of more than %d entries", protocol.MaxDirEntries)}
		}
		e := protocol.DirEntry{Name: fi.Name()}
		e.IsDir = fi.IsDir()
		e.ModTime = fi.ModTime()
		if !e.IsDir {
			if err := checkSize(fi.Size()); err != nil {
				return nil, err
			}
			e.Size = fi.Size()
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// dirIsRefusal reports an error that is the server's status reply (not a
// transport failure), which a Stat may explain.
func dirIsRefusal(err error) bool {
	var se *sftp.StatusError
	var fe *fxStatusError
	return errors.As(err, &se) || errors.As(err, &fe) ||
		errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission)
}

// readDirCause explains a refused listing of path: a path that is no
// directory yields protocol.ErrInvalidPath, a missing one fs.ErrNotExist;
// otherwise the refusal stands.
func (s *Session) readDirCause(path string, refusal error) error {
	fi, err := s.client.Stat(path)
	switch {
	case err == nil && !fi.IsDir():
		return &protocol.Error{Op: "readdir", Path: path, Kind: protocol.ErrInvalidPath, Err: errDirNotDir}
	case err != nil && errors.Is(err, os.ErrNotExist):
		pe, ok := classify("readdir", path, refusal, s.opts.password).(*protocol.Error)
		if !ok || pe.Kind == fs.ErrNotExist {
			return refusal
		}
		return dirReclassify(pe, fs.ErrNotExist, "it does not exist")
	}
	return refusal
}

// Mkdir creates the directory path (SSH_FXP_MKDIR).
//
// OpenSSH answers an existing path with the generic SSH_FX_FAILURE and a
// missing parent (or one that is no directory) with SSH_FX_NO_SUCH_FILE;
// other servers differ. So a refused MKDIR is explained with Lstat of path
// and Stat of its parent: a path that exists (a dangling symbolic link
// too) yields an error matching fs.ErrExist, a missing parent
// fs.ErrNotExist, a parent that is no directory protocol.ErrInvalidPath;
// otherwise the refusal stands as classified.
func (s *Session) Mkdir(ctx context.Context, path string) error {
	end, err := s.begin(ctx, "mkdir", path)
	if err != nil {
		return err
	}
	err = s.client.Mkdir(path)
	if err != nil && dirIsRefusal(err) && ctx.Err() == nil {
		err = s.mkdirCause(path, err)
	}
	return end(err)
}

// mkdirCause explains a refused MKDIR of path (see Mkdir).
func (s *Session) mkdirCause(path string, refusal error) error {
	pe, ok := classify("mkdir", path, refusal, s.opts.password).(*protocol.Error)
	if !ok {
		return refusal
	}
	_, err := s.client.Lstat(path)
	switch {
	case err == nil:
		return dirReclassify(pe, fs.ErrExist, "it already exists")
	case !dirIsRefusal(err):
		return pe
	}
	// Not there, or not to be seen (pkg/sftp's server answers ENOTDIR
	// with SSH_FX_FAILURE): a parent that is missing or no directory
	// explains both.
	parent := protocol.ParentDir(path)
	if parent == "" {
		return pe // the login directory or the root
	}
	fi, err := s.client.Stat(parent)
	switch {
	case err != nil && errors.Is(err, os.ErrNotExist):
		if pe.Kind == fs.ErrNotExist {
			return pe
		}
		return dirReclassify(pe, fs.ErrNotExist, fmt.Sprintf("the parent directory %q does not exist", parent))
	case err == nil && !fi.IsDir():
		return dirReclassify(pe, protocol.ErrInvalidPath, fmt.Sprintf("the parent %q is not a directory", parent))
	}
	return pe
}

// dirReclassify returns pe as an error of kind, its cause noted. The
// server's words stay in the text; the cause is wrapped only when it
// carries no kind of its own, so that the error matches kind alone.
func dirReclassify(pe *protocol.Error, kind error, note string) error {
	var cause error
	if _, k := kindOf(pe.Err); k == nil {
		cause = fmt.Errorf("%s (the server said: %w)", note, pe.Err)
	} else {
		cause = fmt.Errorf("%s (the server said: %v)", note, pe.Err)
	}
	return &protocol.Error{Op: pe.Op, Path: pe.Path, Code: pe.Code, Kind: kind, Err: cause}
}
