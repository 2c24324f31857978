package ftp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"strconv"
	"strings"

	"github.com/jlaffaye/ftp"

	"github.com/openhaul/haul/protocol"
)

var (
	_ protocol.DirReader = (*Session)(nil)
	_ protocol.DirMaker  = (*Session)(nil)
)

var errNotDir = errors.New("not a directory")

// Bounds of one listing (see startListing). A listing may hold
// protocol.MaxDirEntries entries plus "." and ".."; listingSlackLines
// leaves room for the control lines sent and received while it runs (PRET,
// EPSV or PASV, the listing command, its 150 and its final reply).
const (
	listingSlackLines = 64
	maxListingLines   = protocol.MaxDirEntries + 2 + listingSlackLines
	// maxListingBytes bounds the bytes of one listing: MaxDirEntries
	// entries of 512 bytes (proftpd's MLSD lines carry ten facts, about
	// 200 bytes before the name).
	maxListingBytes = protocol.MaxDirEntries * 512
)

// ReadDir lists path: MLSD where the server offers MLST (FEAT), else
// LIST -a (so that vsftpd shows dot files) parsed as a Unix or DOS
// listing, with a plain LIST when the server takes "-a" for a path (an
// error or an empty answer). Names are the server's, relative to path;
// "." and ".." are left out, and so are names holding a slash, NUL, CR or
// LF. Directories have IsDir set and Size 0; symbolic links are reported
// as LIST or MLSD show them (not followed: IsDir false). ModTime is set
// from MLSD's modify fact (UTC); LIST times carry no time zone, often no
// year and never seconds, so entries listed with LIST have a zero ModTime.
//
// path is first checked with Stat, because LIST cannot tell what it was
// given: vsftpd lists a file named like a listing of one entry and a
// missing path as an empty directory, and pure-ftpd answers MLSD on a file
// as on a missing path. A missing path matches fs.ErrNotExist, a path that
// is no directory protocol.ErrInvalidPath.
//
// More than protocol.MaxDirEntries entries, a line longer than 64 KiB, or
// a listing longer than maxListingLines lines or maxListingBytes bytes
// (which also ends the session) fail with an error matching
// protocol.ErrProtocol. While a listing runs, the server's replies on the
// control connection are bounded only by those totals, not by the usual
// 64 KiB and 512 lines (see startListing).
func (s *Session) ReadDir(ctx context.Context, path string) ([]protocol.DirEntry, error) {
	if err := protocol.CheckPath(path); err != nil {
		return nil, err
	}
	fi, err := s.Stat(ctx, path)
	if err != nil {
		return nil, relabel(err, "readdir")
	}
	if !fi.IsDir {
		return nil, &protocol.Error{Op: "readdir", Path: path, Kind: protocol.ErrInvalidPath, Err: errNotDir}
	}
	if err := s.begin(ctx, failure{op: "readdir", path: path}); err != nil {
		return nil, err
	}
	defer s.end()
	if s.c.IsTimePreciseInList() { // jlaffaye lists with MLSD
		list, err := s.list(ctx, "MLSD", path, path)
		if err != nil {
			return nil, err
		}
		return s.dirEntries(ctx, path, list, true)
	}
	// LIST takes options before the path: a path starting with "-"
	// would be read as options (vsftpd, pure-ftpd, proftpd).
	arg := path
	if strings.HasPrefix(arg, "-") {
		arg = "./" + arg
	}
	list, err := s.list(ctx, "LIST", "-a "+arg, path)
	if err != nil && (!isRefusal(err) || s.isDead()) {
		return nil, err
	}
	if err != nil || len(list) == 0 {
		// "-a" taken as part of the path, or an empty directory on a
		// server that shows no "." with -a: ask without it.
		if list, err = s.list(ctx, "LIST", arg, path); err != nil {
			return nil, err
		}
	}
	return s.dirEntries(ctx, path, list, false)
}

// isRefusal reports a listing the server refused (proftpd answers a LIST
// of a missing path with 450, others with 5xx); the control connection is
// in step after it.
func isRefusal(err error) bool {
	var pe *protocol.Error
	if !errors.As(err, &pe) || errors.Is(err, protocol.ErrProtocol) {
		return false
	}
	return pe.Code == 450 || pe.Code >= 500 && pe.Code != 530
}

// isDead reports whether the session was killed.
func (s *Session) isDead() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deadErr != nil
}

// list runs jlaffaye's List(arg), which sends verb (MLSD or LIST), inside
// the listing mode of the wiretap.
func (s *Session) list(ctx context.Context, verb, arg, path string) ([]*ftp.Entry, error) {
	f := failure{op: "readdir", path: path, verb: verb}
	s.tap.startListing(verb)
	list, err := s.c.List(arg)
	tripped := s.tap.endListing(verb)
	s.clearDeadline()
	if err == nil {
		return list, nil
	}
	if ctx.Err() != nil {
		return nil, s.wrapErr(ctx, f, err)
	}
	switch {
	case tripped:
		s.kill(err)
		return nil, s.wrapErr(ctx, f, &listingError{
			msg: fmt.Sprintf("%s listing longer than %d lines or %d bytes", verb, maxListingLines, maxListingBytes)})
	case errors.Is(err, bufio.ErrTooLong):
		// jlaffaye's scanner gave up on a line; it then closed the data
		// connection and read the final reply.
		if desync(err) {
			s.kill(err)
		}
		return nil, s.wrapErr(ctx, f, &listingError{
			msg: fmt.Sprintf("%s listing with a line longer than %d bytes", verb, bufio.MaxScanTokenSize)})
	}
	return nil, s.fail(ctx, f, err)
}

// listingError reports a listing no correct server sends. It matches
// protocol.ErrProtocol.
type listingError struct{ msg string }

func (e *listingError) Error() string { return e.msg }

// Is makes a listingError match protocol.ErrProtocol.
func (e *listingError) Is(target error) bool { return target == protocol.ErrProtocol }

// dirEntries turns jlaffaye's entries into DirEntry values, dropping the
// names that are no entry of the directory. mlsd says whether the times
// are MLSD's.
func (s *Session) dirEntries(ctx context.Context, path string, list []*ftp.Entry, mlsd bool) ([]protocol.DirEntry, error) {
	f := failure{op: "readdir", path: path, verb: "LIST"}
	if mlsd {
		f.verb = "MLSD"
	}
	out := make([]protocol.DirEntry, 0, min(len(list), protocol.MaxDirEntries))
	for _, e := range list {
		if !validEntryName(e.Name) {
			continue
		}
		if len(out) == protocol.MaxDirEntries {
			return nil, s.wrapErr(ctx, f, &listingError{
				msg: fmt.Sprintf("%s listing of more than %d entries", f.verb, protocol.MaxDirEntries)})
		}
		// Cut the name loose from the line jlaffaye read it from.
		de := protocol.DirEntry{Name: strings.Clone(e.Name)}
		switch e.Type {
		case ftp.EntryTypeFolder:
			de.IsDir = true
		default:
			if e.Size > math.MaxInt64 {
				return nil, s.wrapErr(ctx, f, &sizeError{verb: f.verb,
					reply: protocol.ServerText(e.Name, s.opts.password) + ": " + strconv.FormatUint(e.Size, 10)})
			}
			de.Size = int64(e.Size)
		}
		if mlsd {
			de.ModTime = e.Time
		}
		out = append(out, de)
	}
	return out, nil
}

// validEntryName reports whether a name a server listed may be handed out
// as an entry: not empty, not "." or "..", and no slash, NUL, CR or LF.
func validEntryName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00\r\n")
}

// relabel returns err, a *protocol.Error of another operation, as one of
// op.
func relabel(err error, op string) error {
	if pe, ok := err.(*protocol.Error); ok && pe.Op != op {
		cp := *pe
		cp.Op = op
		return &cp
	}
	return err
}

// startListing and endListing frame a listing for the wiretap.
//
// jlaffaye copies a listing's data stream, like the control connection,
// to the debug output: the wiretap would take its lines for replies and
// commands. A LIST line such as "-rw-r--r-- ..." has a hyphen as its
// fourth byte, which opens a multi-line reply that nothing closes: after
// 512 lines the wiretap would end the session, and until then every later
// reply would be counted into it. The wiretap cannot tell the data stream
// from the control connection, so while a listing runs it is put in a
// multi-line reply of its own that no line can end ("000"), whose bounds
// are those of a whole listing (maxListingLines, maxListingBytes); every
// line seen meanwhile (listing lines, the commands sent, the replies) is
// counted there and logged at debug level as a reply (replies may come
// before the listing's lines: textproto reads ahead). endListing puts the
// wiretap back in step, unless the bounds were passed (its error is
// sticky: the session ends).
const listingCode = "000"

func (t *wiretap) startListing(verb string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		return
	}
	t.inMulti, t.multiCode = true, listingCode
	// line() fails once lines passes maxReplyLines or bytes passes
	// maxReplyBytes; Write once a pending line plus bytes passes
	// maxReplyBytes.
	t.lines = maxReplyLines - maxListingLines
	t.bytes = maxReplyBytes - maxListingBytes
	t.first = verb + " listing"
	t.lastVerb, t.lastCode = verb, 0
}

// endListing reports whether the listing passed the bounds.
func (t *wiretap) endListing(verb string) (tripped bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		var re *replyError
		return errors.As(t.err, &re) && re.first == verb+" listing"
	}
	t.inMulti, t.multiCode, t.lines, t.bytes, t.first = false, "", 0, 0, ""
	t.lastVerb, t.lastCode = verb, 0
	// A listing whose last line has no end leaves it pending here when
	// the final reply was read ahead with the 150 (pure-ftpd sends them
	// together): it would be taken for the start of the next command.
	// What the server sends unasked after its final reply is lost to
	// the log, not to the session.
	t.buf = nil
	return false
}

// Mkdir creates the directory path with MKD (any 2xx reply is success).
//
// vsftpd answers every failed MKD with the same "550 Create directory
// operation failed.", and proftpd and pure-ftpd use 550 for an existing
// path as for a missing parent; so a refused MKD (5xx but 500/502/504/530)
// is explained with Stat: a path that exists yields an error matching
// fs.ErrExist, a missing parent fs.ErrNotExist, a parent that is no
// directory protocol.ErrInvalidPath; otherwise the refusal stands (550:
// fs.ErrPermission).
func (s *Session) Mkdir(ctx context.Context, path string) error {
	f := failure{op: "mkdir", path: path, verb: "MKD"}
	if err := protocol.CheckPath(path); err != nil {
		return err
	}
	if err := s.begin(ctx, f); err != nil {
		return err
	}
	err := s.c.MakeDir(path)
	code := replyCode(err)
	if err == nil || code >= 200 && code < 300 {
		s.end()
		return nil
	}
	refusal := s.fail(ctx, f, err)
	s.end()
	if code < 500 || unsupported(err) || code == 530 || ctx.Err() != nil {
		return refusal
	}
	return s.mkdirRefused(ctx, path, refusal)
}

// mkdirRefused explains a refused MKD of path (see Mkdir).
func (s *Session) mkdirRefused(ctx context.Context, path string, refusal error) error {
	pe, ok := refusal.(*protocol.Error)
	if !ok {
		return refusal
	}
	_, err := s.Stat(ctx, path)
	switch {
	case err == nil:
		return reclassify(pe, fs.ErrExist, "it already exists")
	case protocol.IsRetryable(err) || ctx.Err() != nil || s.isDead():
		return relabel(err, "mkdir")
	}
	// Not there, or not to be seen: a parent that is missing or no
	// directory explains both.
	parent := protocol.ParentDir(path)
	if parent == "" {
		return refusal // the login directory or the root
	}
	fi, err := s.Stat(ctx, parent)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return reclassify(pe, fs.ErrNotExist, fmt.Sprintf("the parent directory %q does not exist", parent))
	case err == nil && !fi.IsDir:
		return reclassify(pe, protocol.ErrInvalidPath, fmt.Sprintf("the parent %q is not a directory", parent))
	case err != nil && (protocol.IsRetryable(err) || ctx.Err() != nil || s.isDead()):
		return relabel(err, "mkdir")
	}
	return refusal
}

// reclassify returns the refusal pe as an error of kind, its cause noted.
// The server's words stay in the text; the cause is wrapped only when it
// carries no kind of its own, so that the error matches kind alone.
func reclassify(pe *protocol.Error, kind error, note string) error {
	var cause error
	if pe.Err != nil && protocol.Classify(pe.Err) == nil {
		cause = fmt.Errorf("%s (the server said: %w)", note, pe.Err)
	} else {
		cause = fmt.Errorf("%s (the server said: %v)", note, pe.Err)
	}
	return &protocol.Error{Op: pe.Op, Path: pe.Path, Code: pe.Code, Kind: kind, Err: cause}
}
