package transfer

import (
	"context"
	"errors"
	"io/fs"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/openhaul/haul/protocol"
)

// FileInfo describes a remote file or directory, as the server reports it.
type FileInfo struct {
	// Size is the size in bytes. For a directory it is whatever the
	// server says (often 0 or a block size).
	Size int64
	// ModTime is the modification time, or the zero time when the server
	// reports none. Its precision is the server's (FTP's MDTM and listings
	// often give whole seconds, or minutes for old files in a LIST).
	ModTime time.Time
	// IsDir reports whether the path is a directory. A symbolic link is
	// reported as the server describes it: in a listing, a link is not a
	// directory (whatever it points to); Stat describes its target.
	IsDir bool
}

// DirEntry is one entry of a remote directory listing.
type DirEntry struct {
	// Name is the entry's base name: never empty, "." or "..", and never
	// with a slash, NUL, CR or LF (such names from a server are dropped).
	Name string
	FileInfo
}

// MaxWalkDepth bounds how many directory levels below its root Walk
// descends. A server can present a tree without end (a directory linked
// into itself that the server follows, a bind mount loop); 64 is far
// deeper than real trees, whose paths would pass PATH_MAX (4096 bytes)
// long before.
const MaxWalkDepth = 64

// ErrTooDeep is reported by Walk, to its function, for a directory more
// than MaxWalkDepth levels below the root: its entries are not listed.
var ErrTooDeep = errors.New("directory more than MaxWalkDepth levels deep")

// ErrUnsupported is matched by the error of a remote operation the
// session's protocol or server cannot do (a listing where the session
// offers none).
var ErrUnsupported = protocol.ErrUnsupported

// WalkFunc is called by Walk for each file and directory, as
// fs.WalkDirFunc is by fs.WalkDir: path is the root joined with the
// entry's name (path.Join), d describes it. For the root, d is from Stat
// and d.Name is path.Base(root).
//
// err is nil, except in two cases. When the root's Stat fails, fn is
// called once with the root, a zero d and the error. When listing a
// directory fails (or it is deeper than MaxWalkDepth: ErrTooDeep), fn is
// called a second time for that directory with the error; returning nil
// then goes on with the directory's siblings.
//
// Returning fs.SkipDir for a directory skips its entries (for a file, the
// rest of its directory); fs.SkipAll ends the walk; any other error ends
// it and is returned by Walk.
type WalkFunc func(path string, d DirEntry, err error) error

// walkPath returns the remote path to send for p: the login directory
// for "".
func walkPath(p string) string {
	if p == "" {
		return "."
	}
	return p
}

// remote runs op on a pooled session as one call: it waits for a slot
// (honouring ctx), checks or dials a session, and hands it back, fit or
// not. A dial error is returned as the dialer gave it.
func (c *Client) remote(ctx context.Context, op, p string, fn func(ctx context.Context, s protocol.Session) error) error {
	return c.remoteCall(ctx, op, p, false, fn)
}

// remoteAgain is remote for a call that may be made twice (a Stat, a
// listing, a mkdir that tolerates an existing directory): a session handed
// back healthy within recentUse is used without a health check, and if the
// call then fails with its connection, it is made once more on a checked
// or new session.
func (c *Client) remoteAgain(ctx context.Context, op, p string, fn func(ctx context.Context, s protocol.Session) error) error {
	return c.remoteCall(ctx, op, p, true, fn)
}

func (c *Client) remoteCall(ctx context.Context, op, p string, again bool, fn func(ctx context.Context, s protocol.Session) error) error {
	ctx, end, err := c.begin(ctx)
	if err != nil {
		return &protocol.Error{Op: op, Path: p, Err: err}
	}
	defer end()
	acquire := c.pool.acquire
	if again {
		acquire = c.pool.acquireShort
	}
	sl, err := acquire(ctx)
	if err != nil {
		return &protocol.Error{Op: op, Path: p, Err: err}
	}
	for {
		s, err := c.pool.sessionFor(ctx, sl, true, again)
		if err != nil {
			c.pool.put(sl, false)
			return err
		}
		err = fn(ctx, s)
		ok := fit(ctx, err)
		if ok || !sl.unchecked || ctx.Err() != nil {
			c.pool.put(sl, ok)
			return err
		}
		// The session had died while idle: drop it, keep the slot.
		c.pool.log.Debug("a pooled session failed a call without a health check: calling again", "op", op, "err", err)
		_ = s.Close()
		sl.s, sl.idleSince, again = nil, time.Time{}, false
	}
}

// Stat describes the remote path ("" is the login directory). A missing
// path yields an error matching fs.ErrNotExist.
func (c *Client) Stat(ctx context.Context, p string) (FileInfo, error) {
	if err := protocol.CheckPath(walkPath(p)); err != nil {
		return FileInfo{}, err
	}
	var fi protocol.FileInfo
	err := c.remoteAgain(ctx, "stat", p, func(ctx context.Context, s protocol.Session) error {
		var err error
		fi, err = s.Stat(ctx, walkPath(p))
		return err
	})
	if err != nil {
		return FileInfo{}, err
	}
	return fileInfo(fi), nil
}

// modTime returns the remote file's modification time, by the session's
// ModTimer where it has one (else an error matching ErrUnsupported).
func (c *Client) modTime(ctx context.Context, p string) (time.Time, error) {
	var t time.Time
	err := c.remoteAgain(ctx, "stat", p, func(ctx context.Context, s protocol.Session) error {
		mt, ok := s.(protocol.ModTimer)
		if !ok {
			return &protocol.Error{Op: "stat", Path: p, Kind: protocol.ErrUnsupported, Err: errors.New("no modification time alone")}
		}
		var err error
		t, err = mt.ModTime(ctx, p)
		return err
	})
	return t, err
}

func fileInfo(fi protocol.FileInfo) FileInfo {
	return FileInfo{Size: fi.Size, ModTime: fi.ModTime, IsDir: fi.IsDir}
}

// ReadDir lists the remote directory p ("" is the login directory),
// sorted by name, without "." and "..". A missing directory yields an
// error matching fs.ErrNotExist, a path that is not a directory one
// matching ErrInvalidPath, and a session that cannot list one matching
// ErrUnsupported.
func (c *Client) ReadDir(ctx context.Context, p string) ([]DirEntry, error) {
	if err := protocol.CheckPath(walkPath(p)); err != nil {
		return nil, err
	}
	var out []DirEntry
	err := c.remoteAgain(ctx, "readdir", p, func(ctx context.Context, s protocol.Session) error {
		var err error
		out, err = readDir(ctx, s, walkPath(p))
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func readDir(ctx context.Context, s protocol.Session, p string) ([]DirEntry, error) {
	dr, ok := s.(protocol.DirReader)
	if !ok {
		return nil, &protocol.Error{Op: "readdir", Path: p, Kind: protocol.ErrUnsupported,
			Err: errors.New("the session cannot list directories")}
	}
	ents, err := dr.ReadDir(ctx, p)
	if err != nil {
		return nil, err
	}
	out := make([]DirEntry, 0, len(ents))
	for _, e := range ents {
		// The protocol packages drop such names already; a name joined
		// into a path (Walk, a download of a tree) is never trusted.
		if e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsAny(e.Name, "/\x00\r\n") {
			continue
		}
		out = append(out, DirEntry{Name: e.Name, FileInfo: fileInfo(e.FileInfo)})
	}
	slices.SortFunc(out, func(a, b DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Walk walks the remote tree at root ("" is the login directory) as
// fs.WalkDir walks a file system: depth first, each directory's entries
// in name order, calling fn for root and everything below it (see
// WalkFunc). It descends only into entries the listing marks as
// directories, so it never follows what the server calls a link, and at
// most MaxWalkDepth levels. It stops when ctx ends, returning its cause,
// or when the Client is closed (ErrClosed).
//
// Each listing is one call on a pooled session; fn runs between them,
// holding none, so it may call the Client (Upload, Stat, ...) itself.
func (c *Client) Walk(ctx context.Context, root string, fn WalkFunc) error {
	info, err := c.Stat(ctx, root)
	if err != nil {
		if serr := walkStopped(ctx, err); serr != nil {
			return serr
		}
		err = fn(root, DirEntry{}, err)
	} else {
		err = c.walk(ctx, root, DirEntry{Name: path.Base(walkPath(root)), FileInfo: info}, fn, 0)
	}
	if errors.Is(err, fs.SkipDir) || errors.Is(err, fs.SkipAll) {
		return nil
	}
	return err
}

// walkStopped returns the error that ends a walk whatever fn says: ctx's
// cause once it ended, or err when it reports a closed Client. Neither
// says anything about the tree.
func walkStopped(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return context.Cause(ctx)
	case errors.Is(err, ErrClosed):
		return err
	}
	return nil
}

func (c *Client) walk(ctx context.Context, name string, d DirEntry, fn WalkFunc, depth int) error {
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	if err := fn(name, d, nil); err != nil || !d.IsDir {
		if errors.Is(err, fs.SkipDir) && d.IsDir {
			err = nil
		}
		return err
	}
	var ents []DirEntry
	var err error
	if depth >= MaxWalkDepth {
		err = &protocol.Error{Op: "readdir", Path: name, Err: ErrTooDeep}
	} else {
		ents, err = c.ReadDir(ctx, name)
	}
	if err != nil {
		if serr := walkStopped(ctx, err); serr != nil {
			return serr
		}
		// Second call, to report the failed listing.
		if err = fn(name, d, err); err != nil {
			if errors.Is(err, fs.SkipDir) {
				err = nil
			}
			return err
		}
	}
	for _, e := range ents {
		if err := c.walk(ctx, path.Join(name, e.Name), e, fn, depth+1); err != nil {
			if errors.Is(err, fs.SkipDir) {
				break
			}
			return err
		}
	}
	return nil
}

// MkdirAll creates the remote directory p and every missing parent, one
// by one from the topmost missing, as os.MkdirAll does; a directory that
// exists (already, or made meanwhile by someone else) is success. A path
// that exists and is not a directory yields an error matching
// ErrInvalidPath; a session that cannot create directories one matching
// ErrUnsupported (unless p exists already). All of it runs on one pooled
// session.
func (c *Client) MkdirAll(ctx context.Context, p string) error {
	if p == "" {
		return nil // the login directory
	}
	if err := protocol.CheckPath(p); err != nil {
		return err
	}
	return c.remote(ctx, "mkdir", p, func(ctx context.Context, s protocol.Session) error {
		return mkdirAll(ctx, s, path.Clean(p))
	})
}

func mkdirAll(ctx context.Context, s protocol.Session, p string) error {
	if p == "." || p == "/" {
		return nil
	}
	fi, err := s.Stat(ctx, p)
	switch {
	case err == nil && fi.IsDir:
		return nil
	case err == nil:
		return notDir(p)
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	m, ok := s.(protocol.DirMaker)
	if !ok {
		return &protocol.Error{Op: "mkdir", Path: p, Kind: protocol.ErrUnsupported,
			Err: errors.New("the session cannot create directories")}
	}
	if parent := path.Dir(p); parent != p {
		if err := mkdirAll(ctx, s, parent); err != nil {
			return err
		}
	}
	err = m.Mkdir(ctx, p)
	if err == nil || !errors.Is(err, fs.ErrExist) {
		return err
	}
	// Made meanwhile by someone else, or a file took the name.
	if fi, serr := s.Stat(ctx, p); serr == nil && fi.IsDir {
		return nil
	} else if serr == nil {
		return notDir(p)
	}
	return err
}

func notDir(p string) error {
	return &protocol.Error{Op: "mkdir", Path: p, Kind: protocol.ErrInvalidPath, Err: syscall.ENOTDIR}
}

// Remove deletes the remote file p. A missing file yields an error
// matching fs.ErrNotExist.
func (c *Client) Remove(ctx context.Context, p string) error {
	if err := protocol.CheckPath(p); err != nil {
		return err
	}
	return c.remote(ctx, "remove", p, func(ctx context.Context, s protocol.Session) error {
		return s.Remove(ctx, p)
	})
}

// Rename renames the remote path from to to, replacing to if it exists
// where the server allows (see protocol.Session.Rename).
func (c *Client) Rename(ctx context.Context, from, to string) error {
	for _, p := range []string{from, to} {
		if err := protocol.CheckPath(p); err != nil {
			return err
		}
	}
	return c.remote(ctx, "rename", from, func(ctx context.Context, s protocol.Session) error {
		return s.Rename(ctx, from, to)
	})
}
