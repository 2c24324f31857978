package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/openhaul/haul/transfer"
)

// A batch: several sources, or -r. The files named go through one
// UploadFiles (DownloadFiles) call, each directory through its own
// UploadTree (DownloadTree), all on one Client, so on one pool of
// sessions. A directory source lands where a file would: at the
// destination itself when it names no directory (no trailing "/"), else
// under the source's base name in it.

// exitPrecedence orders the exit codes of a batch's files, worst first:
// the batch exits with the first one any file has. An interruption first
// (the batch did not finish), then what no rerun fixes (usage,
// authentication), a result that did not verify, a full disk, a missing
// file or permission, an unknown failure, and last what a rerun resumes
// (retries exhausted, stalled, --timeout). A skipped file is a success.
var exitPrecedence = []int{exitInterrupted, exitUsage, exitAuth, exitVerify, exitNoSpace, exitNotFound, exitOther, exitExhausted}

// worse says whether exit code a is worse than b under exitPrecedence.
func worse(a, b int) bool {
	rank := func(c int) int {
		for i, p := range exitPrecedence {
			if p == c {
				return len(exitPrecedence) - i
			}
		}
		return 0 // exitOK
	}
	return rank(a) > rank(b)
}

// classifyFile is classify for one file of a batch: a remote name refused
// (one that could land outside the target) is no usage error.
func classifyFile(err error) (int, string) {
	var te *transfer.Error
	if errors.As(err, &te) && errors.Is(err, transfer.ErrInvalidPath) {
		return exitOther, "refused_name"
	}
	return classify(err)
}

// notTried says whether a failed file of a batch was never attempted
// because the batch stopped before it: interrupted, out of time, or a
// login or host key refused. Such files get no line of their own.
func notTried(fr transfer.FileResult) bool {
	return errors.Is(fr.Err, transfer.ErrNotTried)
}

// batchFailure is the error of a batch in which files failed: the exit
// code is the worst file's.
type batchFailure struct {
	code   int
	kind   string
	failed int
	files  int
	first  error // the first failure with the worst code
}

func (e *batchFailure) Error() string {
	return fmt.Sprintf("%d of %d files failed; the exit code is for the worst (%s)", e.failed, e.files, e.kind)
}

// batchReport is the last JSON line of a batch.
type batchReport struct {
	Type        string         `json:"type"` // "summary"
	OK          bool           `json:"ok"`
	Op          string         `json:"op"`
	Files       int            `json:"files"`
	Done        int            `json:"files_done"`
	Skipped     int            `json:"files_skipped"`
	Failed      int            `json:"files_failed"`
	Bytes       int64          `json:"bytes"`
	SentBytes   int64          `json:"sent_bytes"`
	DurationMS  int64          `json:"duration_ms"`
	Failures    map[string]int `json:"failures,omitempty"`
	ExitCode    int            `json:"exit_code"`
	Error       *reportError   `json:"error,omitempty"`
	Destination string         `json:"destination"`
}

// batchPlan is what a batch moves: files in one call, trees one by one.
type batchPlan struct {
	jobs  []transfer.Job
	trees []transfer.Job // Local and Remote are directories
	dest  string         // the destination as the user gave it (URL redacted)
	base  string         // prefix stripped from remote paths for display
}

// isDirURL says whether a URL path names a directory.
func isDirURL(p string) bool { return p == "" || strings.HasSuffix(p, "/") }

// sameServer says whether two endpoints name one server and login.
func sameServer(a, b transfer.Endpoint) bool {
	return a.Scheme == b.Scheme && a.Host == b.Host && a.Port == b.Port && a.User == b.User
}

// planPut plans `put LOCAL... URL`.
func planPut(locals []string, ep transfer.Endpoint, recursive bool) (batchPlan, error) {
	pl := batchPlan{base: ep.Path}
	several := len(locals) > 1
	if several && !isDirURL(ep.Path) {
		return pl, &usageError{msg: "several sources go into a directory: end the URL with /"}
	}
	for _, l := range locals {
		if l == "-" {
			return pl, &usageError{msg: "- (stdin) is for a single file, not a batch"}
		}
		fi, err := os.Stat(l)
		if err != nil {
			return pl, err
		}
		name := filepath.Base(filepath.Clean(l))
		switch {
		case fi.IsDir() && !recursive:
			return pl, &usageError{msg: fmt.Sprintf("%s is a directory: add -r to upload it with its contents", l)}
		case fi.IsDir():
			remote := ep.Path
			if isDirURL(ep.Path) && name != "." && name != string(filepath.Separator) {
				remote = path.Join(ep.Path, name)
			}
			pl.trees = append(pl.trees, transfer.Job{Local: l, Remote: strings.TrimSuffix(remote, "/")})
		default:
			remote, err := transfer.RemotePath(l, ep.Path)
			if err != nil {
				return pl, &usageError{msg: err.Error(), err: err}
			}
			pl.jobs = append(pl.jobs, transfer.Job{Local: l, Remote: remote})
		}
	}
	if !isDirURL(pl.base) {
		pl.base = path.Dir(pl.base)
	}
	return pl, nil
}

// planGet plans `get URL... LOCAL`; stat tells a remote directory apart
// (with -r).
func planGet(ctx context.Context, remotes []string, local string, recursive bool, stat func(context.Context, string) (transfer.FileInfo, error)) (batchPlan, error) {
	pl := batchPlan{}
	lfi, lerr := os.Stat(local)
	localIsDir := lerr == nil && lfi.IsDir() || strings.HasSuffix(local, string(filepath.Separator))
	if len(remotes) > 1 && !localIsDir {
		return pl, &usageError{msg: fmt.Sprintf("several sources go into a directory: %s is none (end it with / to create it)", local)}
	}
	if local == "-" {
		return pl, &usageError{msg: "- (stdout) is for a single file, not a batch"}
	}
	for i, r := range remotes {
		dir := isDirURL(r)
		if !dir && recursive {
			fi, err := stat(ctx, r)
			if err != nil {
				return pl, err
			}
			dir = fi.IsDir
		}
		name := path.Base(strings.TrimSuffix(r, "/"))
		if r == "" || r == "/" || name == "." || name == "~" {
			name = ""
		}
		if i == 0 {
			pl.base = strings.TrimSuffix(r, "/")
			if !dir || len(remotes) > 1 {
				pl.base = path.Dir(pl.base)
			}
		}
		switch {
		case dir && !recursive:
			return pl, &usageError{msg: fmt.Sprintf("%s names a directory: add -r to download it with its contents", r)}
		case dir:
			to := local
			if localIsDir && name != "" {
				to = filepath.Join(local, name)
			}
			pl.trees = append(pl.trees, transfer.Job{Local: to, Remote: strings.TrimSuffix(r, "/")})
		default:
			to, err := transfer.LocalPath(local, r)
			if err != nil {
				return pl, err
			}
			pl.jobs = append(pl.jobs, transfer.Job{Local: to, Remote: r})
		}
	}
	if pl.base == "." {
		pl.base = ""
	}
	return pl, nil
}

// batchFlagsSet names a batch-only flag given to a single transfer.
func batchFlagsSet(cmd *cobra.Command) string {
	for _, n := range []string{"parallel", "skip", "no-journal", "sync"} {
		if cmd.Flags().Changed(n) {
			return n
		}
	}
	return ""
}

// batch runs a put or get of several files or trees.
func (a *app) batch(cmd *cobra.Command, op string, sources []string, dest string) error {
	f := &a.f
	a.batchMode = true
	var rawURL string
	if op == "put" {
		rawURL = dest
	} else {
		rawURL = sources[0]
	}
	a.rep = report{Op: op, URL: transfer.Redact(rawURL)}
	ep, err := transfer.ParseURL(rawURL)
	if err != nil {
		return err
	}
	a.hc.op, a.hc.ep = op, ep
	var remotes []string // get: the sources' paths
	if op == "get" {
		for _, s := range sources {
			e, err := transfer.ParseURL(s)
			if err != nil {
				return err
			}
			if !sameServer(e, ep) {
				return &usageError{msg: fmt.Sprintf("the sources name different servers (%s, %s): one batch works with one server and login", transfer.Redact(sources[0]), transfer.Redact(s))}
			}
			remotes = append(remotes, e.Path)
		}
	}
	local := dest
	if op == "put" {
		local = sources[0]
	}
	if err := f.check(cmd, op, ep, local); err != nil {
		return err
	}
	if f.parallel < 1 || f.parallel > maxParallel {
		return &usageError{msg: fmt.Sprintf("--parallel %d: want 1 to %d (servers cap connections per client: vsftpd max_per_ip, OpenSSH MaxStartups 10)", f.parallel, maxParallel)}
	}
	skip, err := transfer.ParseSkipPolicy(f.skip)
	if err != nil {
		return &usageError{msg: "--skip: " + err.Error()}
	}
	u := unitsFor(f.limitRate)
	disp := newDisplay(a.stderr, !f.quiet && isTerminal(a.stderr), u, f.verbose, f.quiet)
	disp.multi = true
	cfg, err := a.login(f, ep, disp)
	if err != nil {
		disp.close()
		return err
	}
	cfg.MaxConns = f.parallel
	bv := disp.batch()
	cfg.OnEvent = func(e transfer.Event) {
		if e.Kind == transfer.EventSingleStream && !f.quiet {
			disp.linef("%s: one stream instead of --segments %d: %s", bv.name(e.Path), f.segments, e.Reason)
		}
		bv.event(e)
	}
	c, err := transfer.Open(rawURL, cfg)
	if err != nil {
		disp.close()
		return &usageError{msg: err.Error(), err: err}
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.timeout)
		defer cancel()
	}
	if op == "get" && strings.HasSuffix(dest, string(filepath.Separator)) {
		// A directory to create, as the "/" says.
		if err := os.MkdirAll(dest, 0o755); err != nil {
			bv.finish(false)
			disp.close()
			return err
		}
	}
	var pl batchPlan
	if op == "put" {
		pl, err = planPut(sources, ep, f.recursive)
		pl.dest = a.rep.URL
	} else {
		pl, err = planGet(ctx, remotes, dest, f.recursive, c.Stat)
		pl.dest = dest
	}
	if err != nil {
		bv.finish(false)
		disp.close()
		return err
	}
	var files, bytes int64 = -1, -1
	if disp.p != nil {
		files, bytes = a.measure(ctx, op, pl, c)
	}
	bv.plan(files, bytes, pl.base)
	var (
		jsonMu sync.Mutex
		enc    = json.NewEncoder(a.stdout)
		worst  = exitOK
		wkind  string
		werr   error
	)
	note := func(code int, kind string, err error) {
		if worse(code, worst) {
			worst, wkind, werr = code, kind, err
		}
	}
	opts := transfer.BatchOptions{
		Parallel:  f.parallel,
		Skip:      skip,
		NoJournal: f.noJournal,
		SyncEach:  f.syncEach,
		Progress:  bv.progress,
		OnFile: func(fr transfer.FileResult) {
			bv.fileDone(fr)
			if f.jsonOut {
				r := fileReport(op, ep, fr)
				jsonMu.Lock()
				_ = enc.Encode(r)
				jsonMu.Unlock()
			}
		},
	}
	var total transfer.BatchStats
	total.Failures = map[string]int{}
	untried := 0
	began := time.Now()
	run := func(res transfer.BatchResult, err error) {
		for _, fr := range res.Files {
			if fr.Err != nil {
				code, kind := classifyFile(fr.Err)
				note(code, kind, fr.Err)
				total.Failures[kind]++
			}
			if notTried(fr) {
				untried++
			}
		}
		var be *transfer.BatchError
		if err != nil && !errors.As(err, &be) {
			// The batch itself failed (a tree that cannot be listed...).
			code, kind := classify(err)
			note(code, kind, err)
			total.Failed++
			total.Files++
			total.Failures[kind]++
			disp.linef("FAILED %v", err)
		}
		s := res.Stats
		total.Files += s.Files
		total.Done += s.Done
		total.Skipped += s.Skipped
		total.Failed += s.Failed
		total.Bytes += s.Bytes
		total.Sent += s.Sent
	}
	if len(pl.jobs) > 0 {
		if op == "put" {
			run(c.UploadFiles(ctx, pl.jobs, opts))
		} else {
			run(c.DownloadFiles(ctx, pl.jobs, opts))
		}
	}
	for _, t := range pl.trees {
		if ctx.Err() != nil {
			code, kind := classify(context.Cause(ctx))
			note(code, kind, context.Cause(ctx))
			break
		}
		if op == "put" {
			run(c.UploadTree(ctx, t.Local, t.Remote, opts))
		} else {
			run(c.DownloadTree(ctx, t.Remote, t.Local, opts))
		}
	}
	total.Duration = time.Since(began)
	bv.finish(worst == exitOK)
	disp.close()
	if !f.quiet || worst != exitOK {
		fmt.Fprintf(a.stderr, "haul: %s\n", batchSummary(u, op, pl.dest, total, untried))
	}
	var ferr error
	if worst != exitOK {
		ferr = &batchFailure{code: worst, kind: wkind, failed: total.Failed, files: total.Files, first: werr}
	}
	if f.jsonOut {
		br := batchReport{Type: "summary", OK: ferr == nil, Op: op, Files: total.Files, Done: total.Done, Skipped: total.Skipped,
			Failed: total.Failed, Bytes: total.Bytes, SentBytes: total.Sent, DurationMS: total.Duration.Milliseconds(),
			Failures: total.Failures, ExitCode: worst, Destination: pl.dest}
		if len(br.Failures) == 0 {
			br.Failures = nil
		}
		if ferr != nil {
			br.Error = &reportError{Kind: wkind, Message: ferr.Error()}
		}
		jsonMu.Lock()
		_ = enc.Encode(br)
		jsonMu.Unlock()
	}
	a.batchReported = true
	return ferr
}

// maxParallel bounds --parallel: more connections than this only get
// refused by servers.
const maxParallel = 64

// fileReport is the JSON line of one file of a batch.
func fileReport(op string, ep transfer.Endpoint, fr transfer.FileResult) report {
	ep.Path = fr.Remote
	r := report{Type: "file", OK: fr.Err == nil, Op: op, URL: ep.String(), Local: fr.Local, Bytes: fr.Size,
		Committed: fr.Committed, StartOffset: fr.StartOffset, Transferred: fr.Transferred, Attempts: fr.Attempts,
		Resumes: fr.Resumes, Restarts: fr.Restarts, Segments: fr.Segments, ResentBytes: fr.ResentBytes,
		DurationMS: fr.Duration.Milliseconds(), Verified: fr.Verified, Skipped: fr.Skipped, SkipReason: fr.SkipReason}
	if fr.Err != nil {
		_, kind := classifyFile(fr.Err)
		r.Error = &reportError{Kind: kind, Message: fr.Err.Error(), Committed: fr.Committed}
	}
	return r
}

// measure counts the files and bytes a batch will move, for the total's
// ETA on a terminal: a local walk for put, a remote one for get. It
// returns -1 for what it could not tell.
func (a *app) measure(ctx context.Context, op string, pl batchPlan, c *transfer.Client) (files, bytes int64) {
	for _, j := range pl.jobs {
		files++
		if op == "put" {
			if fi, err := os.Stat(j.Local); err == nil {
				bytes += fi.Size()
			}
		} else if fi, err := c.Stat(ctx, j.Remote); err == nil {
			bytes += fi.Size
		}
	}
	for _, t := range pl.trees {
		var err error
		if op == "put" {
			err = filepath.WalkDir(t.Local, func(_ string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					if fi, err := d.Info(); err == nil {
						files++
						bytes += fi.Size()
					}
				}
				return nil
			})
		} else {
			err = c.Walk(ctx, t.Remote, func(_ string, d transfer.DirEntry, err error) error {
				if err == nil && !d.IsDir {
					files++
					bytes += d.Size
				}
				return nil
			})
		}
		if err != nil {
			return -1, -1
		}
	}
	return files, bytes
}

// batchSummary is the last line of a batch on stderr.
func batchSummary(u units, op, dest string, s transfer.BatchStats, untried int) string {
	var b strings.Builder
	verb := "put"
	if op == "get" {
		verb = "got"
	}
	fmt.Fprintf(&b, "%s %d %s into %s in %s: %d done", verb, s.Files, plural(s.Files, "file", "files"),
		dest, s.Duration.Round(100*time.Millisecond), s.Done)
	if s.Done > 0 {
		fmt.Fprintf(&b, " (%s, %s)", u.size(s.Bytes), u.rateOf(s.Sent, s.Duration))
	}
	if s.Skipped > 0 {
		fmt.Fprintf(&b, ", %d skipped", s.Skipped)
	}
	if s.Failed > 0 {
		fmt.Fprintf(&b, ", %d failed", s.Failed)
		kinds := make([]string, 0, len(s.Failures))
		for k := range s.Failures {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for i, k := range kinds {
			kinds[i] = fmt.Sprintf("%d %s", s.Failures[k], k)
		}
		if untried > 0 {
			kinds = append(kinds, fmt.Sprintf("%d of them not tried", untried))
		}
		if len(kinds) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(kinds, ", "))
		}
	}
	return b.String()
}

// batchView is a batch on the display: a bar per file moving, and the
// total below them.
type batchView struct {
	d    *display
	base string // remote prefix the names leave out
	bar  *mpb.Bar

	// Locks: the total's decorator takes mu while mpb draws, and a call
	// on a bar or a new bar waits for the drawing to end: no bar is
	// called with mu held. vmu guards views alone, and no decorator
	// takes it.
	vmu   sync.Mutex
	views map[string]*fileView // by remote path

	mu        sync.Mutex
	prev      map[string]int64 // bytes each file had reached
	done      int64            // bytes done, all files
	total     int64            // -1: unknown
	files     int64            // -1: unknown
	filesDone int64
	failed    int64
	meter     meter
	pushed    time.Time
}

// batch adds a batch's total to the display.
func (d *display) batch() *batchView {
	b := &batchView{d: d, views: map[string]*fileView{}, prev: map[string]int64{}, total: -1, files: -1}
	if d.p != nil {
		b.bar = d.p.New(0, mpb.BarStyle().Lbound("[").Filler("#").Tip("#").Padding(" ").Rbound("]"),
			mpb.BarPriority(1<<30), // below every file's bar
			mpb.PrependDecorators(decor.Name("total", decor.WC{C: decor.DSyncWidthR | decor.DextraSpace})),
			mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return b.status() }, decor.WC{C: decor.DextraSpace})),
		)
	}
	return b
}

// plan sets what the batch moves, -1 for what is unknown, and the remote
// prefix that names leave out.
func (b *batchView) plan(files, bytes int64, base string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.files, b.total, b.base = files, bytes, strings.TrimSuffix(base, "/")
}

// name is how lines and bars call a remote path.
func (b *batchView) name(remote string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.nameLocked(remote)
}

func (b *batchView) nameLocked(remote string) string {
	if b.base != "" && strings.HasPrefix(remote, b.base+"/") {
		return remote[len(b.base)+1:]
	}
	return remote
}

// view returns the file's view, adding it on first sight.
func (b *batchView) view(remote string) *fileView {
	name := b.name(remote)
	b.vmu.Lock()
	defer b.vmu.Unlock()
	v := b.views[remote]
	if v == nil {
		v = b.d.file(name)
		b.views[remote] = v
	}
	return v
}

// progress is BatchOptions.Progress.
func (b *batchView) progress(remote string, done, total int64) {
	b.view(remote).progress(done, total)
	now := b.d.now()
	b.mu.Lock()
	b.done += done - b.prev[remote]
	b.prev[remote] = done
	b.meter.sample(now, b.done)
	push := b.due(now, false)
	b.mu.Unlock()
	push()
}

// due returns what tells the total's bar, at most every 100 ms unless
// forced; call it with mu held, and what it returns without.
func (b *batchView) due(now time.Time, force bool) func() {
	if b.bar == nil || !force && now.Sub(b.pushed) < 100*time.Millisecond {
		return func() {}
	}
	b.pushed = now
	done, total := b.done, b.total
	return func() {
		if total > 0 {
			b.bar.SetTotal(total, false)
		}
		b.bar.SetCurrent(done)
	}
}

// event is Config.OnEvent for a batch: Path says which file.
func (b *batchView) event(e transfer.Event) {
	b.view(e.Path).event(e)
}

// fileDone is BatchOptions.OnFile.
func (b *batchView) fileDone(fr transfer.FileResult) {
	b.vmu.Lock()
	v := b.views[fr.Remote]
	delete(b.views, fr.Remote)
	b.vmu.Unlock()
	b.mu.Lock()
	b.filesDone++
	if fr.Err != nil {
		b.failed++
	}
	// A skipped or failed file counts as done for the total: nothing is
	// left to move for it.
	if fr.Err != nil || fr.Skipped {
		b.done += max(fr.Size-b.prev[fr.Remote], 0)
	}
	delete(b.prev, fr.Remote)
	push := b.due(b.d.now(), true)
	name := b.nameLocked(fr.Remote)
	b.mu.Unlock()
	push()
	if v != nil {
		v.finish(fr.Err == nil)
	}
	switch {
	case notTried(fr) && b.d.verbose == 0:
	case fr.Err != nil:
		b.d.linef("FAILED %s: %s", name, oneLine(fr.Err))
	case fr.Skipped && b.d.verbose > 0:
		b.d.linef("skipped %s: %s", name, fr.SkipReason)
	case b.d.verbose > 0:
		b.d.linef("%s", summaryLine(b.d.u, map[string]string{"upload": "put", "download": "get"}[fr.Op], fr.Local, name, fr.Result))
	}
}

// status is the total's "12/300 files  456 MiB / 924 MiB  89 MiB/s  ETA 10s".
func (b *batchView) status() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var s strings.Builder
	if b.files >= 0 {
		fmt.Fprintf(&s, "%d/%d files  ", b.filesDone, b.files)
	} else {
		fmt.Fprintf(&s, "%d files  ", b.filesDone)
	}
	if b.failed > 0 {
		fmt.Fprintf(&s, "%d failed  ", b.failed)
	}
	left := int64(-1)
	if b.total >= 0 {
		fmt.Fprintf(&s, "%s / %s  ", b.d.u.size(b.done), b.d.u.size(b.total))
		left = max(b.total-b.done, 0)
	} else {
		fmt.Fprintf(&s, "%s  ", b.d.u.size(b.done))
	}
	s.WriteString(b.meter.rateETA(b.d.u, left))
	return s.String()
}

// finish completes the total's bar.
func (b *batchView) finish(ok bool) {
	b.vmu.Lock()
	views := make([]*fileView, 0, len(b.views))
	for _, v := range b.views {
		views = append(views, v)
	}
	b.views = map[string]*fileView{}
	b.vmu.Unlock()
	for _, v := range views {
		v.finish(false) // never reported: the batch stopped
	}
	if b.bar == nil {
		return
	}
	b.mu.Lock()
	push := b.due(b.d.now(), true)
	b.mu.Unlock()
	push()
	b.bar.SetTotal(-1, true)
	_ = ok
}

var _ io.Writer = (*display)(nil)
