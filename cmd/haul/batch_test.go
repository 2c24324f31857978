package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vbauerster/mpb/v8"

	"github.com/openhaul/haul/transfer"
)

// The precedence is total, and the help lists it in the same order.
func TestExitPrecedence(t *testing.T) {
	order := exitPrecedence
	for i := range order {
		for j := range order {
			if got := worse(order[i], order[j]); got != (i < j) {
				t.Errorf("worse(%d, %d) = %v", order[i], order[j], got)
			}
		}
		if !worse(order[i], exitOK) || worse(exitOK, order[i]) {
			t.Errorf("%d against success", order[i])
		}
	}
	_, out, _ := runOut("--help")
	want := "in this order: "
	for i, c := range order {
		if i > 0 {
			want += ", "
		}
		want += fmt.Sprint(c)
	}
	if !strings.Contains(strings.Join(strings.Fields(out), " "), want) {
		t.Errorf("the help does not say %q", want)
	}
}

// The files of a batch are classified as single transfers are, except a
// remote name refused, which is no usage error.
func TestClassifyFile(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
		kind string
	}{
		{&transfer.Error{Op: "download", Path: "../x", Err: fmt.Errorf("%w: remote name ..: refused", transfer.ErrInvalidPath)}, exitOther, "refused_name"},
		{&transfer.Error{Op: "download", Path: "x", Err: fs.ErrNotExist}, exitNotFound, "not_found"},
		{&transfer.Error{Op: "upload", Path: "x", Err: transfer.ErrAuth}, exitAuth, "auth"},
		{&transfer.Error{Op: "upload", Path: "x", Err: errors.Join(transfer.ErrRetriesExhausted, errors.New("reset"))}, exitExhausted, "retries_exhausted"},
		{&transfer.Error{Op: "upload", Path: "x", Err: context.Canceled}, exitInterrupted, "interrupted"},
	} {
		code, kind := classifyFile(tc.err)
		if code != tc.code || kind != tc.kind {
			t.Errorf("%v: %d %s, want %d %s", tc.err, code, kind, tc.code, tc.kind)
		}
	}
	bf := &batchFailure{code: exitNoSpace, kind: "no_space", failed: 2, files: 9}
	if code, kind := classify(fmt.Errorf("wrapped: %w", bf)); code != exitNoSpace || kind != "no_space" {
		t.Errorf("batch failure: %d %s", code, kind)
	}
}

func TestPlanPut(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"a.bin", "b.bin", "tree/sub/c.bin"} {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a, b, tree := filepath.Join(dir, "a.bin"), filepath.Join(dir, "b.bin"), filepath.Join(dir, "tree")
	for _, tc := range []struct {
		name    string
		locals  []string
		urlPath string
		r       bool
		jobs    []transfer.Job
		trees   []transfer.Job
		err     string
	}{
		{name: "files into a directory", locals: []string{a, b}, urlPath: "in/",
			jobs: []transfer.Job{{Local: a, Remote: "in/a.bin"}, {Local: b, Remote: "in/b.bin"}}},
		{name: "files into the login directory", locals: []string{a, b}, urlPath: "",
			jobs: []transfer.Job{{Local: a, Remote: "a.bin"}, {Local: b, Remote: "b.bin"}}},
		{name: "absolute", locals: []string{a, b}, urlPath: "/srv/",
			jobs: []transfer.Job{{Local: a, Remote: "/srv/a.bin"}, {Local: b, Remote: "/srv/b.bin"}}},
		{name: "one file with -r", locals: []string{a}, urlPath: "x.bin", r: true,
			jobs: []transfer.Job{{Local: a, Remote: "x.bin"}}},
		{name: "tree under its name", locals: []string{tree}, urlPath: "in/", r: true,
			trees: []transfer.Job{{Local: tree, Remote: "in/tree"}}},
		{name: "tree with a slash", locals: []string{tree + "/"}, urlPath: "in/", r: true,
			trees: []transfer.Job{{Local: tree + "/", Remote: "in/tree"}}},
		{name: "tree as the copy", locals: []string{tree}, urlPath: "copy", r: true,
			trees: []transfer.Job{{Local: tree, Remote: "copy"}}},
		{name: "tree and a file", locals: []string{tree, a}, urlPath: "/srv/", r: true,
			jobs:  []transfer.Job{{Local: a, Remote: "/srv/a.bin"}},
			trees: []transfer.Job{{Local: tree, Remote: "/srv/tree"}}},
		{name: "several into a file", locals: []string{a, b}, urlPath: "x", err: "end the URL with /"},
		{name: "a directory without -r", locals: []string{tree, a}, urlPath: "in/", err: "add -r"},
		{name: "stdin", locals: []string{"-", a}, urlPath: "in/", err: "single file"},
		{name: "missing", locals: []string{filepath.Join(dir, "nope"), a}, urlPath: "in/", err: "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl, err := planPut(tc.locals, transfer.Endpoint{Path: tc.urlPath}, tc.r)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(pl.jobs, tc.jobs) || !reflect.DeepEqual(pl.trees, tc.trees) {
				t.Errorf("jobs %v trees %v", pl.jobs, pl.trees)
			}
		})
	}
}

func TestPlanGet(t *testing.T) {
	dir := t.TempDir()
	stat := func(_ context.Context, p string) (transfer.FileInfo, error) {
		switch p {
		case "srv/photos", "/abs/tree":
			return transfer.FileInfo{IsDir: true}, nil
		case "a.bin", "srv/b.bin":
			return transfer.FileInfo{Size: 1}, nil
		}
		return transfer.FileInfo{}, fs.ErrNotExist
	}
	for _, tc := range []struct {
		name    string
		remotes []string
		local   string
		r       bool
		jobs    []transfer.Job
		trees   []transfer.Job
		err     string
	}{
		{name: "files into a directory", remotes: []string{"a.bin", "srv/b.bin"}, local: dir,
			jobs: []transfer.Job{{Local: filepath.Join(dir, "a.bin"), Remote: "a.bin"}, {Local: filepath.Join(dir, "b.bin"), Remote: "srv/b.bin"}}},
		{name: "tree by a slash", remotes: []string{"srv/photos/"}, local: dir, r: true,
			trees: []transfer.Job{{Local: filepath.Join(dir, "photos"), Remote: "srv/photos"}}},
		{name: "tree by stat", remotes: []string{"srv/photos"}, local: dir, r: true,
			trees: []transfer.Job{{Local: filepath.Join(dir, "photos"), Remote: "srv/photos"}}},
		{name: "tree as the copy", remotes: []string{"/abs/tree"}, local: filepath.Join(dir, "copy"), r: true,
			trees: []transfer.Job{{Local: filepath.Join(dir, "copy"), Remote: "/abs/tree"}}},
		{name: "the login directory", remotes: []string{""}, local: dir, r: true,
			trees: []transfer.Job{{Local: dir, Remote: ""}}},
		{name: "a file with -r", remotes: []string{"a.bin"}, local: dir, r: true,
			jobs: []transfer.Job{{Local: filepath.Join(dir, "a.bin"), Remote: "a.bin"}}},
		{name: "several into no directory", remotes: []string{"a.bin", "srv/b.bin"}, local: filepath.Join(dir, "nodir"), err: "is none"},
		{name: "a directory without -r", remotes: []string{"srv/photos/", "a.bin"}, local: dir, err: "add -r"},
		{name: "stdout", remotes: []string{"a.bin", "srv/b.bin"}, local: "-", err: "is none"},
		{name: "missing with -r", remotes: []string{"nope"}, local: dir, r: true, err: "does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl, err := planGet(context.Background(), tc.remotes, tc.local, tc.r, stat)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(pl.jobs, tc.jobs) || !reflect.DeepEqual(pl.trees, tc.trees) {
				t.Errorf("jobs %v trees %v", pl.jobs, pl.trees)
			}
		})
	}
}

// keys returns the JSON keys of v, sorted.
func keys(t *testing.T, v any) []string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// The JSON lines of a batch: what scripts parse.
func TestBatchJSONShape(t *testing.T) {
	ep, err := transfer.ParseURL("sftp://u@h:2222//srv/")
	if err != nil {
		t.Fatal(err)
	}
	ok := transfer.FileResult{Result: transfer.Result{Local: "tree/a.bin", Remote: "/srv/tree/a.bin", Op: "upload", Size: 5, Committed: 5, Transferred: 5, Attempts: 1, Duration: time.Second, Verified: "sha256"}}
	r := fileReport("put", ep, ok)
	if r.Type != "file" || !r.OK || r.URL != "sftp://u@h:2222//srv/tree/a.bin" || r.Local != "tree/a.bin" || r.DurationMS != 1000 || r.Error != nil {
		t.Errorf("%+v", r)
	}
	want := []string{"attempts", "bytes", "committed_bytes", "duration_ms", "local", "ok", "op", "resent_bytes", "restarts", "resumes",
		"segments", "start_offset", "transferred_bytes", "type", "url", "verified"}
	if got := keys(t, r); !reflect.DeepEqual(got, want) {
		t.Errorf("file keys %v, want %v", got, want)
	}
	skipped := ok
	skipped.Skipped, skipped.SkipReason, skipped.Verified = true, "verified by sha256 in an earlier run", ""
	if r := fileReport("put", ep, skipped); !r.Skipped || r.SkipReason == "" || !r.OK {
		t.Errorf("skipped %+v", r)
	}
	failed := ok
	failed.Err = &transfer.Error{Op: "upload", Path: "/srv/tree/a.bin", Committed: 3, Err: transfer.ErrNoSpace}
	failed.Committed = 3
	r = fileReport("put", ep, failed)
	if r.OK || r.Error == nil || r.Error.Kind != "no_space" || r.Error.Committed != 3 || r.Committed != 3 {
		t.Errorf("failed %+v %+v", r, r.Error)
	}
	sum := batchReport{Type: "summary", Op: "put", Files: 3, Done: 1, Skipped: 1, Failed: 1, Failures: map[string]int{"no_space": 1}, ExitCode: exitNoSpace}
	want = []string{"bytes", "destination", "duration_ms", "exit_code", "failures", "files", "files_done", "files_failed", "files_skipped", "ok", "op", "sent_bytes", "type"}
	if got := keys(t, sum); !reflect.DeepEqual(got, want) {
		t.Errorf("summary keys %v, want %v", got, want)
	}
	// A single transfer's JSON has no type, skipped or skip_reason.
	if got := keys(t, report{}); strings.Contains(strings.Join(got, " "), "type") || strings.Contains(strings.Join(got, " "), "skip") {
		t.Errorf("single report keys %v", got)
	}
}

func TestBatchSummary(t *testing.T) {
	s := transfer.BatchStats{Files: 300, Done: 295, Skipped: 3, Failed: 2, Bytes: 924 << 20, Sent: 924 << 20, Duration: 4 * time.Second,
		Failures: map[string]int{"not_found": 1, "no_space": 1}}
	got := batchSummary(units{}, "put", "ftp://u@h/in/", s, 1)
	want := "put 300 files into ftp://u@h/in/ in 4s: 295 done (924 MiB, 231 MiB/s), 3 skipped, 2 failed (1 no_space, 1 not_found, 1 of them not tried)"
	if got != want {
		t.Errorf("\n%s\nwant\n%s", got, want)
	}
	got = batchSummary(units{}, "get", "dst/", transfer.BatchStats{Files: 1, Skipped: 1, Duration: time.Second}, 0)
	if want := "got 1 file into dst/ in 1s: 0 done, 1 skipped"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}

// Batch flags: refused on a single transfer, checked before any
// connection.
func TestBatchFlagsRefused(t *testing.T) {
	isolate(t)
	l := newListener(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "a.bin")
	if err := os.WriteFile(src, []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	url := "ftp://u@" + l.ln.Addr().String() + "/"
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"put", "--parallel", "8", src, url}, "--parallel applies to a batch"},
		{[]string{"get", "--skip", "never", url + "a.bin", dir}, "--skip applies to a batch"},
		{[]string{"put", "--no-journal", src, url}, "--no-journal applies to a batch"},
		{[]string{"put", "-r", "--parallel", "0", dir, url}, "--parallel 0: want 1 to 64"},
		{[]string{"put", "-r", "--parallel", "65", dir, url}, "--parallel 65"},
		{[]string{"put", "-r", "--skip", "sometimes", dir, url}, "--skip:"},
		{[]string{"get", url + "a", "sftp://u@" + l.ln.Addr().String() + "/b", dir}, "different servers"},
		{[]string{"put", "-r", "--direct", "--identity", src, dir, url}, "--identity applies to sftp:// URLs only"},
	} {
		code, _, errb := runOut(tc.args...)
		if code != exitUsage || !strings.Contains(errb, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q, want %q", tc.args, code, errb, tc.msg)
		}
	}
	if n := l.accepted.Load(); n != 0 {
		t.Errorf("%d connections", n)
	}
}

// A batch's display without a terminal: a line per failed file, per
// reconnect (named), nothing for a success unless -v.
func TestBatchViewLines(t *testing.T) {
	var out bytes.Buffer
	d := newDisplay(&out, false, units{}, 0, false)
	d.multi = true
	b := d.batch()
	b.plan(4, 40, "in/")
	b.progress("in/a", 5, 10)
	b.event(transfer.Event{Kind: transfer.EventFailed, Path: "in/a", Attempt: 1, Err: errors.New("reset")})
	b.event(transfer.Event{Kind: transfer.EventAttempt, Path: "in/a", Attempt: 2, Offset: 4})
	b.progress("in/a", 10, 10)
	b.fileDone(transfer.FileResult{Result: transfer.Result{Remote: "in/a", Size: 10, Verified: "size"}})
	b.fileDone(transfer.FileResult{Result: transfer.Result{Remote: "in/b", Size: 10, Skipped: true, SkipReason: "verified"}})
	b.progress("in/sub/c", 2, 10)
	b.fileDone(transfer.FileResult{Result: transfer.Result{Remote: "in/sub/c", Size: 10, Attempts: 1}, Err: errors.New("550 no")})
	// Not tried after an interruption: no line.
	b.fileDone(transfer.FileResult{Result: transfer.Result{Remote: "in/d", Size: 10},
		Err: &transfer.Error{Op: "upload", Path: "in/d", Err: fmt.Errorf("%w: %w", transfer.ErrNotTried, context.Canceled)}})
	if s := b.status(); !strings.HasPrefix(s, "4/4 files  2 failed  40 B / 40 B") {
		t.Errorf("status %q", s)
	}
	b.finish(false)
	d.close()
	want := "haul: a: connection lost at 50 % (5 B of 10 B): reset; resuming at 4 B\nhaul: FAILED sub/c: 550 no\n"
	if out.String() != want {
		t.Errorf("lines:\n%s\nwant:\n%s", out.String(), want)
	}
}

// lockedBuffer is a buffer safe for the display's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// The bars drawn every millisecond while workers report progress, events
// and ends of files: no deadlock between the bars' decorators (which take
// the views' locks) and calls on the bars, and every bar ends.
func TestDisplayBarsUnderLoad(t *testing.T) {
	var w lockedBuffer
	d := newDisplay(&w, true, units{}, 1, false, mpb.WithAutoRefresh(), mpb.WithRefreshRate(time.Millisecond))
	d.multi = true
	b := d.batch()
	b.plan(8*5, 8*5*1000, "in")
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for f := range 5 {
					remote := fmt.Sprintf("in/w%d/f%d", g, f)
					b.event(transfer.Event{Kind: transfer.EventAttempt, Path: remote, Attempt: 1})
					for i := int64(0); i <= 1000; i += 10 {
						b.progress(remote, i, 1000)
						if i == 500 {
							b.event(transfer.Event{Kind: transfer.EventFailed, Path: remote, Attempt: 1, Err: errors.New("reset")})
							b.event(transfer.Event{Kind: transfer.EventBackoff, Path: remote, Attempt: 1, Wait: time.Millisecond})
							b.event(transfer.Event{Kind: transfer.EventAttempt, Path: remote, Attempt: 2, Offset: 480})
						}
					}
					b.event(transfer.Event{Kind: transfer.EventVerifying, Path: remote, Attempt: 2, Method: "sha256"})
					b.event(transfer.Event{Kind: transfer.EventVerified, Path: remote, Attempt: 2, Method: "sha256"})
					fr := transfer.FileResult{Result: transfer.Result{Remote: remote, Op: "upload", Size: 1000, Verified: "sha256"}}
					if f == 4 {
						fr.Err = errors.New("550 denied")
					}
					b.fileDone(fr)
				}
			}()
		}
		wg.Wait()
		// One transfer of a single file as well, on its own display.
		d1 := newDisplay(&w, true, units{}, 0, false, mpb.WithAutoRefresh(), mpb.WithRefreshRate(time.Millisecond))
		v := d1.file("one")
		for i := int64(0); i <= 1000; i++ {
			v.progress(i, 1000)
		}
		v.finish(true)
		d1.close()
		b.finish(false)
		d.close()
	}()
	select {
	case <-finished:
	case <-time.After(60 * time.Second):
		t.Fatal("the display did not finish in 60 s: deadlock")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.b.String()
	// A reconnect line per file, a FAILED line per worker (the bars
	// also say "connection lost": count the lines).
	n, m := strings.Count(out, "): reset; resuming at 480 B\n"), strings.Count(out, ": 550 denied\n")
	if n != 40 || m != 8 {
		t.Errorf("%d reconnect and %d failure lines in %d bytes", n, m, len(out))
	}
}
