package transfer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openhaul/haul/protocol"
)

// Job is one file of a batch: a local path and a remote path. The
// direction is the call's (UploadFiles or DownloadFiles).
type Job struct {
	Local  string
	Remote string
}

// SkipPolicy says which files a batch leaves alone because the destination
// already holds them.
type SkipPolicy int

// The skip policies.
const (
	// SkipVerified (the zero value) skips a file that an earlier batch
	// verified, according to the journal, when neither side changed
	// since: the source has the size and modification time it had then,
	// and the destination still has the size and modification time it was
	// left with. Without a journal record nothing is skipped.
	SkipVerified SkipPolicy = iota
	// SkipNever transfers every file.
	SkipNever
	// SkipChecksum skips a file whose destination has the source's size
	// and, by a hash the server computes, its content; where the server
	// cannot hash, it acts as SkipVerified.
	SkipChecksum
)

// String returns "verified", "never" or "checksum".
func (p SkipPolicy) String() string {
	switch p {
	case SkipVerified:
		return "verified"
	case SkipNever:
		return "never"
	case SkipChecksum:
		return "checksum"
	}
	return fmt.Sprintf("SkipPolicy(%d)", int(p))
}

// ParseSkipPolicy parses "verified" (or ""), "never" (or "none") and
// "checksum".
func ParseSkipPolicy(s string) (SkipPolicy, error) {
	switch strings.ToLower(s) {
	case "", "verified":
		return SkipVerified, nil
	case "never", "none":
		return SkipNever, nil
	case "checksum":
		return SkipChecksum, nil
	}
	return 0, fmt.Errorf("unknown skip policy %q: want verified, never or checksum", s)
}

// BatchOptions configures one batch call. The zero value is the default.
type BatchOptions struct {
	// Parallel is how many files move at once, each over its own pooled
	// session. Zero means Config.MaxConns; more than Config.MaxConns waits
	// for sessions. When the server refuses a connection for having too
	// many (FTP 421), the Client lowers its session cap to what the server
	// accepted and the batch carries on with fewer.
	Parallel int
	// Skip says which files are left alone; see SkipPolicy.
	Skip SkipPolicy
	// Journal records each file of the batch (verified, with both sides'
	// fingerprints; or partial) so that a rerun, even after the process
	// was killed, skips what was verified and resumes what was partial.
	// Nil means a FileStore in Config.StateDir's "journal" directory
	// (by default under os.UserCacheDir()), unless NoJournal.
	Journal Store
	// NoJournal disables the journal: SkipVerified then skips nothing.
	NoJournal bool
	// Progress, when set, is called with the remote path of a file, the
	// bytes at its destination and its size, after every chunk. It must
	// return quickly. Config.Progress is not called for a batch.
	Progress func(remote string, done, total int64)
	// SyncEach makes every downloaded file durable (fsync) before it is
	// verified and renamed, as Download does. By default a batch leaves
	// that to the kernel's writeback, as rsync, rclone and lftp do: it
	// costs a third of a download's time on a fast link (measured on a
	// 923 MB tree). A process killed at any moment loses nothing either
	// way (the page cache keeps what was written); a power cut may lose
	// the data of files finished in the last seconds, which file systems
	// that write data before the size naming it (ext4's default
	// data=ordered, XFS) show as a size the journal does not match: such
	// a file is downloaded again, never skipped.
	SyncEach bool
	// OnFile, when set, is called once per file when it is done
	// (transferred, skipped or failed), from the worker that moved it. It
	// must return quickly.
	OnFile func(FileResult)
}

// FileResult is the outcome of one file of a batch.
type FileResult struct {
	// Result names the file (Remote, Local) and says what happened.
	Result
	// Err is nil when the file was transferred and verified, or skipped;
	// else a *Error.
	Err error
}

// BatchStats sums up a batch.
type BatchStats struct {
	// Files is the number of files in the batch.
	Files int
	// Done counts files transferred and verified; Skipped files the skip
	// policy left alone (or that were not regular files); Failed the rest.
	Done, Skipped, Failed int
	// Bytes is the size of the files transferred (Done), Sent the bytes
	// moved over the wire (re-sent bytes included).
	Bytes, Sent int64
	// Duration is the batch's wall time.
	Duration time.Duration
	// Failures counts the failed files by kind (see FailureKind).
	Failures map[string]int
}

// Rate returns Bytes per second of Duration.
func (s BatchStats) Rate() float64 {
	if s.Duration <= 0 {
		return 0
	}
	return float64(s.Bytes) / s.Duration.Seconds()
}

// BatchResult is the outcome of a batch: a result per file, in the
// order of the jobs (a tree's in walk order), and the totals.
type BatchResult struct {
	Files []FileResult
	Stats BatchStats
}

// BatchError is the error of a batch in which some files failed. Unwrap
// returns every file's error, so errors.Is(err, ErrAuth) and the like
// tell whether any file failed so.
type BatchError struct {
	// Failed files of Files.
	Failed, Files int
	// Errs holds each failed file's error, in the order of the files.
	Errs []error
}

func (e *BatchError) Error() string {
	if len(e.Errs) == 0 {
		return fmt.Sprintf("%d of %d files failed", e.Failed, e.Files)
	}
	return fmt.Sprintf("%d of %d files failed; first: %v", e.Failed, e.Files, e.Errs[0])
}

// Unwrap returns the files' errors.
func (e *BatchError) Unwrap() []error { return e.Errs }

// FailureKind names the kind of a transfer error, for counting:
// "auth", "host-key", "not-found", "permission", "no-space", "verify",
// "invalid", "not-regular", "source-changed", "stalled", "retries",
// "cancelled", "closed", "protocol" or "other".
func FailureKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrAuth):
		return "auth"
	case errors.Is(err, ErrHostKey):
		return "host-key"
	case errors.Is(err, ErrNoSpace):
		return "no-space"
	case errors.Is(err, ErrVerify):
		return "verify"
	case errors.Is(err, ErrInvalidPath), errors.Is(err, ErrInvalidURL):
		return "invalid"
	case errors.Is(err, ErrNotRegular):
		return "not-regular"
	case errors.Is(err, fs.ErrNotExist):
		return "not-found"
	case errors.Is(err, fs.ErrPermission):
		return "permission"
	case errors.Is(err, ErrSourceChanged):
		return "source-changed"
	case errors.Is(err, ErrStalled):
		return "stalled"
	case errors.Is(err, ErrRetriesExhausted):
		return "retries"
	case errors.Is(err, ErrClosed):
		return "closed"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "cancelled"
	case errors.Is(err, ErrProtocol):
		return "protocol"
	}
	return "other"
}

// ErrNotTried is matched by the error of a file of a batch that was never
// attempted because the batch stopped first (a rejected login or host
// key, the context's end); the error also matches that cause.
var ErrNotTried = errors.New("not tried: the batch stopped")

// fatal reports errors after which no other file of the batch is tried:
// every login would be rejected the same way (and servers lock accounts
// after a few), or the call is over.
func fatal(err error) bool {
	return errors.Is(err, ErrAuth) || errors.Is(err, ErrHostKey) || errors.Is(err, ErrClosed) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// UploadFiles uploads each job's local file to its remote path, with
// o.Parallel workers over the Client's pooled sessions. Every file keeps
// the guarantees of Upload (resume, verification, the atomic rename); a
// file goes over one connection unless Config.Segments asks for more.
// Remote directories must exist (see UploadTree). The error is a
// *BatchError when some files failed, the per-file errors being in the
// result; a rejected login or host key stops the batch: the files not
// tried yet fail with the same error, no login is tried again.
func (c *Client) UploadFiles(ctx context.Context, jobs []Job, o BatchOptions) (BatchResult, error) {
	b, err := c.newBatch("upload", o)
	if err != nil {
		return BatchResult{}, err
	}
	return b.run(ctx, jobs, nil)
}

// DownloadFiles downloads each job's remote file to its local path, with
// o.Parallel workers, as UploadFiles does uploads. Local directories must
// exist (see DownloadTree).
func (c *Client) DownloadFiles(ctx context.Context, jobs []Job, o BatchOptions) (BatchResult, error) {
	b, err := c.newBatch("download", o)
	if err != nil {
		return BatchResult{}, err
	}
	return b.run(ctx, jobs, nil)
}

// UploadTree uploads the local directory tree at localDir into remoteDir
// (created with its subdirectories as needed), as UploadFiles does. Only
// regular files and directories are sent: a symbolic link (never
// followed) or a special file is reported as skipped, with its reason.
// A remote directory is made just before the first file that goes into
// it, and those no file went into (empty ones, or holding only files
// skipped as complete) after the files; one that cannot be made fails its
// files, or is reported as a failed entry of its own. Files are started
// largest first.
func (c *Client) UploadTree(ctx context.Context, localDir, remoteDir string, o BatchOptions) (BatchResult, error) {
	b, err := c.newBatch("upload", o)
	if err != nil {
		return BatchResult{}, err
	}
	if err := checkRemote(remoteDir); err != nil {
		return BatchResult{}, &Error{Op: "upload", Path: remoteDir, Err: err}
	}
	var jobs []Job
	var early []FileResult
	dirs := []string{remoteDir}
	b.localSize = make(map[string]int64)
	err = filepath.WalkDir(localDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, rerr := filepath.Rel(localDir, p)
		if rerr != nil {
			return rerr
		}
		remote := path.Join(remoteDir, filepath.ToSlash(rel))
		switch {
		case d.IsDir():
			if rel != "." {
				dirs = append(dirs, remote)
			}
		case d.Type().IsRegular():
			jobs = append(jobs, Job{Local: p, Remote: remote})
			if fi, err := d.Info(); err == nil {
				b.localSize[remote] = fi.Size()
			}
		default:
			early = append(early, FileResult{
				Result: Result{Op: "upload", Remote: remote, Local: p, Skipped: true,
					SkipReason: "not a regular file (" + describeMode(d.Type()) + "): not followed"}})
		}
		return nil
	})
	if err != nil {
		return BatchResult{}, &Error{Op: "upload", Path: remoteDir, Err: err}
	}
	// Directories are made when a file is about to go into one (a rerun
	// that sends nothing makes none), the others after the files.
	b.treeDirs = make(map[string]*treeDir, len(dirs))
	for _, d := range dirs {
		if d != "" && d != "." {
			b.treeDirs[d] = &treeDir{}
		}
	}
	res, err := b.run(ctx, jobs, early)
	b.mu.Lock()
	stopped := b.stopErr != nil
	b.mu.Unlock()
	if stopped || ctx.Err() != nil {
		return res, err
	}
	// A directory that holds files was made for them, or failed them.
	holds := make(map[string]bool, len(dirs))
	for _, j := range jobs {
		holds[path.Dir(j.Remote)] = true
	}
	var failed []FileResult
	for _, d := range dirs {
		if holds[d] {
			continue
		}
		if err := b.ensureDir(ctx, d); err != nil {
			failed = append(failed, FileResult{Result: Result{Op: "upload", Remote: d},
				Err: &Error{Op: "upload", Path: d, Err: err}})
		}
	}
	if len(failed) == 0 {
		return res, err
	}
	res.Files = append(res.Files, failed...)
	res.Stats.Files += len(failed)
	res.Stats.Failed += len(failed)
	var errs []error
	if be, ok := err.(*BatchError); ok {
		errs = be.Errs
	}
	for _, f := range failed {
		res.Stats.Failures[FailureKind(f.Err)]++
		errs = append(errs, f.Err)
	}
	return res, &BatchError{Failed: res.Stats.Failed, Files: res.Stats.Files, Errs: errs}
}

// treeDir is a remote directory of an upload tree.
type treeDir struct {
	made atomic.Bool
}

// ensureDir makes the remote directory d of an upload tree unless it is
// known to exist: it or a directory below it was made, or holds a file
// found complete. Workers that need one at once each make it (MkdirAll
// accepts a directory made meanwhile): none waits for another's login.
// Directories that are not the tree's need nothing.
func (b *batch) ensureDir(ctx context.Context, d string) error {
	td := b.treeDirs[d]
	if td == nil || td.made.Load() {
		return nil
	}
	if err := b.c.MkdirAll(ctx, d); err != nil {
		return err
	}
	b.dirExists(d)
	return nil
}

// dirExists notes that the remote directory d, and so every parent,
// exists.
func (b *batch) dirExists(d string) {
	for {
		if td := b.treeDirs[d]; td != nil {
			td.made.Store(true)
		}
		up := path.Dir(d)
		if up == d {
			return
		}
		d = up
	}
}

// DownloadTree downloads the remote directory tree at remoteDir into
// localDir (created with its subdirectories as needed), as DownloadFiles
// does. A remote name that could land outside localDir or that this
// system could read differently (one with "..", a backslash, NUL, CR or
// LF, or an absolute path) is refused and reported as a failed file, and
// nothing is written through a symbolic link found below localDir: such
// a directory fails its files with ErrNotRegular.
func (c *Client) DownloadTree(ctx context.Context, remoteDir, localDir string, o BatchOptions) (BatchResult, error) {
	b, err := c.newBatch("download", o)
	if err != nil {
		return BatchResult{}, err
	}
	var jobs []Job
	var early []FileResult
	refuse := func(remote, why string) {
		early = append(early, FileResult{
			Result: Result{Op: "download", Remote: remote},
			Err:    &Error{Op: "download", Path: remote, Err: fmt.Errorf("%w: remote name %s: refused", ErrInvalidPath, why)}})
	}
	b.remoteInfo = make(map[string]FileInfo)
	err = c.Walk(ctx, remoteDir, func(p string, d DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == remoteDir {
			if !d.IsDir {
				return &Error{Op: "download", Path: remoteDir, Err: notDir(remoteDir)}
			}
			return nil
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, strings.TrimSuffix(remoteDir, "/")), "/")
		if remoteDir == "" || remoteDir == "." {
			rel = p
		}
		if why := unsafeName(d.Name); why != "" {
			refuse(p, why)
			if d.IsDir {
				return fs.SkipDir
			}
			return nil
		}
		local := filepath.Join(localDir, filepath.FromSlash(rel))
		if !filepath.IsLocal(filepath.FromSlash(rel)) {
			refuse(p, "outside the target directory")
			return nil
		}
		if d.IsDir {
			return nil
		}
		jobs = append(jobs, Job{Local: local, Remote: p})
		b.remoteInfo[p] = d.FileInfo
		return nil
	})
	if err != nil {
		return BatchResult{}, errorOf("download", remoteDir, err)
	}
	// Directories are made before any file, never through a link.
	made := make(map[string]error)
	var ready []Job
	for _, j := range jobs {
		dir := filepath.Dir(j.Local)
		err, ok := made[dir]
		if !ok {
			err = mkdirNoFollow(localDir, dir)
			made[dir] = err
		}
		if err != nil {
			early = append(early, FileResult{Result: Result{Op: "download", Remote: j.Remote, Local: j.Local},
				Err: &Error{Op: "download", Path: j.Remote, Err: err}})
			continue
		}
		ready = append(ready, j)
	}
	return b.run(ctx, ready, early)
}

// unsafeName says why a remote name must not become a local one, or "".
func unsafeName(name string) string {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Sprintf("%q", name)
	case strings.ContainsAny(name, "/\\"):
		return fmt.Sprintf("%q holds a path separator", name)
	case strings.ContainsAny(name, "\x00\r\n"):
		return fmt.Sprintf("%q holds NUL, CR or LF", name)
	}
	return ""
}

// mkdirNoFollow makes dir and its parents below root, refusing to go
// through anything below root that is not a directory (a symbolic link
// planted there would send the files elsewhere). root itself is the
// caller's choice and may be a link; it is made if missing.
func mkdirNoFollow(root, dir string) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(root, dir)
	if err != nil || !filepath.IsLocal(rel) {
		if rel == "." {
			return nil
		}
		return fmt.Errorf("%w: %s is outside %s", ErrInvalidPath, dir, root)
	}
	cur := root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			if err := os.Mkdir(cur, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			if fi, err = os.Lstat(cur); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		if !fi.IsDir() {
			return &fs.PathError{Op: "mkdir", Path: cur,
				Err: fmt.Errorf("%w (%s): not written through", ErrNotRegular, describeMode(fi.Mode()))}
		}
	}
	return nil
}

func checkRemote(p string) error {
	if p == "" {
		return nil
	}
	return protocol.CheckPath(p)
}

// batch is one UploadFiles/DownloadFiles/...Tree call.
type batch struct {
	c       *Client
	op      string
	o       BatchOptions
	journal *journal // nil without one
	// remoteInfo holds what a tree's listing said of each remote file,
	// for the skip policy (nil: ask the server per file).
	remoteInfo map[string]FileInfo
	// localSize holds the sizes of an upload tree's files, by remote
	// path, as the walk found them (nil: unknown).
	localSize map[string]int64
	// treeDirs holds an upload tree's remote directories (nil: not a
	// tree upload); read-only once the batch runs.
	treeDirs map[string]*treeDir

	mu       sync.Mutex
	stopErr  error // a fatal error: the remaining files are not tried
	dirCache map[string]map[string]FileInfo
}

func (c *Client) newBatch(op string, o BatchOptions) (*batch, error) {
	if o.Parallel < 0 {
		return nil, fmt.Errorf("BatchOptions.Parallel is %d: want 0 (Config.MaxConns) or more", o.Parallel)
	}
	if o.Skip < SkipVerified || o.Skip > SkipChecksum {
		return nil, fmt.Errorf("BatchOptions.Skip: unknown %v", o.Skip)
	}
	b := &batch{c: c, op: op, o: o, dirCache: make(map[string]map[string]FileInfo)}
	if !o.NoJournal {
		st := o.Journal
		if st == nil {
			dir, err := c.stateDir()
			if err == nil {
				st = &FileStore{Dir: filepath.Join(dir, "journal")}
			} else {
				c.pool.log.Warn("transfer: no state directory: the batch keeps no journal", "err", err)
			}
		}
		if st != nil {
			b.journal = &journal{st: st, ep: c.ep.Scheme + "://" + c.ep.User + "@" + c.ep.Addr()}
		}
	}
	return b, nil
}

func (b *batch) parallel() int {
	if b.o.Parallel > 0 {
		return b.o.Parallel
	}
	return b.c.cfg.maxConns()
}

// run moves jobs with the batch's workers; early holds results decided
// before (skipped links, refused names), which go first.
func (b *batch) run(ctx context.Context, jobs []Job, early []FileResult) (BatchResult, error) {
	start := time.Now()
	out := BatchResult{Files: make([]FileResult, len(early)+len(jobs))}
	copy(out.Files, early)
	for _, r := range early {
		if b.o.OnFile != nil {
			b.o.OnFile(r)
		}
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(b.parallel(), max(len(jobs), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				r := b.one(ctx, jobs[i])
				out.Files[len(early)+i] = r
				if b.o.OnFile != nil {
					b.o.OnFile(r)
				}
			}
		}()
	}
	for _, i := range b.order(jobs) {
		next <- i
	}
	close(next)
	wg.Wait()

	st := BatchStats{Files: len(out.Files), Failures: make(map[string]int)}
	var errs []error
	for _, r := range out.Files {
		st.Sent += r.Transferred
		switch {
		case r.Err != nil:
			st.Failed++
			st.Failures[FailureKind(r.Err)]++
			errs = append(errs, r.Err)
		case r.Skipped:
			st.Skipped++
		default:
			st.Done++
			st.Bytes += r.Size
		}
	}
	st.Duration = time.Since(start)
	out.Stats = st
	if st.Failed > 0 {
		return out, &BatchError{Failed: st.Failed, Files: st.Files, Errs: errs}
	}
	return out, nil
}

// order returns the indexes of jobs in the order they are started: the
// largest first, where a tree's walk or listing told the sizes, so that the
// last files to finish are small ones and every worker stays busy until
// near the end (a 64 MiB file started last keeps one connection working
// alone for its whole time); else as given.
func (b *batch) order(jobs []Job) []int {
	idx := make([]int, len(jobs))
	for i := range idx {
		idx[i] = i
	}
	if b.remoteInfo == nil && b.localSize == nil {
		return idx
	}
	size := make([]int64, len(jobs)) // -1: unknown, last
	for i, j := range jobs {
		size[i] = -1
		if fi, ok := b.remoteInfo[j.Remote]; ok {
			size[i] = fi.Size
		} else if n, ok := b.localSize[j.Remote]; ok {
			size[i] = n
		}
	}
	slices.SortStableFunc(idx, func(x, y int) int { return cmp.Compare(size[y], size[x]) })
	return idx
}

// one moves one file: unless the batch stopped, or the skip policy finds
// it done.
func (b *batch) one(ctx context.Context, j Job) FileResult {
	r := FileResult{Result: Result{Op: b.op, Remote: j.Remote, Local: j.Local}}
	b.mu.Lock()
	stop := b.stopErr
	b.mu.Unlock()
	if stop == nil && ctx.Err() != nil {
		stop = context.Cause(ctx)
	}
	if stop != nil {
		var te *Error
		if errors.As(stop, &te) {
			stop = te.Err // the cause, not the other file's totals
		}
		r.Err = &Error{Op: b.op, Path: j.Remote, Err: fmt.Errorf("%w: %w", ErrNotTried, stop)}
		return r
	}
	var rec *journalRecord
	if b.journal != nil {
		rec = b.journal.get(ctx, b.op, j)
	}
	if why := b.skip(ctx, j, rec); why != "" {
		r.Skipped, r.SkipReason = true, why
		if b.treeDirs != nil {
			b.dirExists(path.Dir(j.Remote))
		}
		return r
	}
	opts := callOpts{segments: 1}
	if b.c.cfg.Segments > 1 {
		opts.segments = 0
	}
	if b.o.Progress != nil {
		remote := j.Remote
		opts.progress = func(done, total int64) { b.o.Progress(remote, done, total) }
	}
	var err error
	if b.op == "upload" {
		if err = b.ensureDir(ctx, path.Dir(j.Remote)); err != nil {
			err = &Error{Op: "upload", Path: j.Remote, Err: err}
		} else {
			r.Result, err = b.c.upload(ctx, j.Local, j.Remote, opts)
		}
	} else {
		if fi, ok := b.remoteInfo[j.Remote]; ok && fi.Size < minStateSize {
			opts.small = true
		}
		opts.noSync = !b.o.SyncEach
		r.Result, err = b.c.download(ctx, j.Remote, j.Local, opts)
	}
	if err != nil {
		r.Err = err
		if fatal(err) {
			b.mu.Lock()
			if b.stopErr == nil {
				b.stopErr = err
			}
			b.mu.Unlock()
		}
		return r
	}
	if b.journal != nil {
		b.record(ctx, j, r.Result)
	}
	return r
}

// record writes a verified file's fingerprints to the journal: the
// local file's size and modification time, and the remote file's as the
// server reports them now.
func (b *batch) record(ctx context.Context, j Job, res Result) {
	rec := &journalRecord{Op: b.op, Remote: j.Remote, Local: j.Local, State: stateVerified,
		Size: res.Size, Verified: res.Verified}
	if fi, err := os.Lstat(j.Local); err == nil {
		rec.LocalMTime = fi.ModTime()
	}
	if fi, ok := b.remoteInfo[j.Remote]; ok {
		rec.RemoteMTime = fi.ModTime // what a rerun's listing will say
	}
	if rec.RemoteMTime.IsZero() {
		rec.RemoteMTime = res.RemoteModTime // the engine's last Stat, on its session
	}
	if rec.RemoteMTime.IsZero() {
		// Fresh: a listing cached by this batch may predate the file.
		if fi, err := b.c.Stat(ctx, j.Remote); err == nil {
			rec.RemoteMTime = fi.ModTime
		}
	}
	b.journal.put(ctx, rec)
}

// skip returns why the file needs no transfer, or "".
func (b *batch) skip(ctx context.Context, j Job, rec *journalRecord) string {
	if b.o.Skip == SkipNever {
		return ""
	}
	if rec != nil && rec.State == stateVerified {
		if why := b.sameAsRecord(ctx, j, rec); why != "" {
			return why
		}
	}
	if b.o.Skip == SkipChecksum {
		return b.sameByHash(ctx, j)
	}
	return ""
}

// sameAsRecord reports a file neither side of which changed since the
// journal recorded it verified.
func (b *batch) sameAsRecord(ctx context.Context, j Job, rec *journalRecord) string {
	lfi, err := os.Lstat(j.Local)
	if err != nil || !lfi.Mode().IsRegular() || lfi.Size() != rec.Size || !lfi.ModTime().Equal(rec.LocalMTime) {
		return ""
	}
	rfi, ok := b.remoteStat(ctx, j.Remote)
	if !ok || rfi.IsDir || rfi.Size != rec.Size || !sameTime(rfi.ModTime, rec.RemoteMTime) {
		return ""
	}
	return "verified by " + rec.Verified + " in an earlier run; unchanged since (size and modification time)"
}

// remoteStat describes a remote file: from the tree's listing, else from
// one listing of its directory per batch (cheaper than a Stat per file);
// by Stat where neither has it or gives no modification time (an FTP
// LIST never gives seconds: haul leaves its time out).
func (b *batch) remoteStat(ctx context.Context, p string) (FileInfo, bool) {
	fi, ok := b.remoteInfo[p]
	if !ok {
		fi, ok = b.listed(ctx, p)
	}
	if ok && (fi.IsDir || !fi.ModTime.IsZero()) {
		return fi, true
	}
	if !ok && b.listedDir(p) {
		return FileInfo{}, false // the listing has no such file
	}
	if ok {
		// The listing gave the size: the time alone is one command
		// (MDTM) where a Stat is two.
		t, err := b.c.modTime(ctx, p)
		if err == nil {
			fi.ModTime = t
			return fi, true
		}
		if !errors.Is(err, ErrUnsupported) {
			return FileInfo{}, false
		}
	}
	fi, err := b.c.Stat(ctx, p)
	return fi, err == nil
}

// listedDir reports whether p's directory was listed.
func (b *batch) listedDir(p string) bool {
	dir, _ := path.Split(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dirCache[dir] != nil
}

// listed looks p up in a listing of its directory, made once per batch.
func (b *batch) listed(ctx context.Context, p string) (FileInfo, bool) {
	dir, name := path.Split(p)
	b.mu.Lock()
	ents, ok := b.dirCache[dir]
	b.mu.Unlock()
	if !ok {
		list, err := b.c.ReadDir(ctx, strings.TrimSuffix(dir, "/"))
		switch {
		case err == nil:
			ents = make(map[string]FileInfo, len(list))
			for _, e := range list {
				ents[e.Name] = e.FileInfo
			}
		case errors.Is(err, fs.ErrNotExist):
			ents = map[string]FileInfo{}
		default:
			ents = nil // cannot list: Stat each file
		}
		b.mu.Lock()
		b.dirCache[dir] = ents
		b.mu.Unlock()
	}
	fi, ok := ents[name]
	return fi, ok
}

// sameTime compares modification times at the coarser precision of the
// two: a listing often gives whole minutes where MDTM gave seconds. A
// zero time matches nothing.
func sameTime(a, b time.Time) bool {
	if a.IsZero() || b.IsZero() {
		return false
	}
	if a.Equal(b) {
		return true
	}
	for _, p := range []time.Duration{time.Second, time.Minute} {
		if (a.Truncate(p).Equal(a) || b.Truncate(p).Equal(b)) && a.Truncate(p).Equal(b.Truncate(p)) {
			return true
		}
	}
	return false
}

// sameByHash reports a destination whose size and server-side hash equal
// the source's.
func (b *batch) sameByHash(ctx context.Context, j Job) string {
	method, same, err := b.c.sameContent(ctx, j.Remote, j.Local)
	if err != nil || !same {
		return ""
	}
	return "same size and " + method + " as the source"
}
