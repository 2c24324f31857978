package main

import (
	"bytes"
	"errors"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/openhaul/haul/transfer"
)

func TestUnitsFor(t *testing.T) {
	for _, tc := range []struct {
		limit string
		si    bool
	}{
		{"", false}, {"500K", false}, {"1.5M", false}, {"100MiB", false}, {"2g", false}, {"100", false}, {"100B", false},
		{"100MB", true}, {"500kb", true}, {"1.5GB", true}, {"2TB", true},
	} {
		if got := unitsFor(tc.limit).si; got != tc.si {
			t.Errorf("%q: si %v, want %v", tc.limit, got, tc.si)
		}
	}
}

func TestUnitsSize(t *testing.T) {
	iec, si := units{}, units{si: true}
	for _, tc := range []struct {
		u    units
		n    int64
		want string
	}{
		{iec, 0, "0 B"},
		{iec, 512, "512 B"},
		{iec, 1536, "1.50 KiB"},
		{iec, 3 << 19, "1.50 MiB"},
		{iec, 43 << 20, "43.0 MiB"},
		{iec, 587 << 20, "587 MiB"},
		{iec, 1 << 30, "1.00 GiB"},
		{si, 999, "999 B"},
		{si, 1000, "1.00 kB"},
		{si, 95_300_000, "95.3 MB"},
		{si, 315_000_000, "315 MB"},
	} {
		if got := tc.u.size(tc.n); got != tc.want {
			t.Errorf("size(%d, si=%v) = %q, want %q", tc.n, tc.u.si, got, tc.want)
		}
	}
	if got := iec.rateOf(40<<20, time.Second); got != "40.0 MiB/s" {
		t.Errorf("rate %q", got)
	}
	if got := si.rateOf(100e6, 2*time.Second); got != "50.0 MB/s" {
		t.Errorf("rate %q", got)
	}
	if got := iec.rateOf(1, 0); got != "-" {
		t.Errorf("rate over 0s %q", got)
	}
}

// clock is a fake time source for the display.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// events feeds a display without a terminal the callbacks of a transfer
// that loses its connection twice in a row, resumes and verifies; it
// prints one line for the reconnect and none for the rest.
func TestDisplayLinePerReconnect(t *testing.T) {
	var out bytes.Buffer
	c := &clock{t: time.Unix(1e9, 0)}
	d := newDisplay(&out, false, units{}, 0, false)
	d.now = c.now
	v := d.file("big.iso")
	total := int64(760 << 20)
	v.event(transfer.Event{Kind: transfer.EventAttempt, Attempt: 1})
	v.progress(426<<20, total)
	cause := errors.Join(errors.New("read: connection reset by peer"), errors.New(`426 "Failure"`))
	v.event(transfer.Event{Kind: transfer.EventFailed, Attempt: 1, Err: cause})
	v.event(transfer.Event{Kind: transfer.EventBackoff, Attempt: 1, Wait: time.Second})
	c.t = c.t.Add(time.Second)
	v.event(transfer.Event{Kind: transfer.EventFailed, Attempt: 2, Err: errors.New("dial: connection refused")})
	v.event(transfer.Event{Kind: transfer.EventBackoff, Attempt: 2, Wait: 2 * time.Second})
	if s := v.status(); !strings.HasPrefix(s, "reconnecting in 2s") {
		t.Errorf("status during a backoff: %q", s)
	}
	c.t = c.t.Add(2 * time.Second)
	v.event(transfer.Event{Kind: transfer.EventAttempt, Attempt: 3, Offset: 420 << 20})
	v.progress(total, total)
	if s := v.status(); s != "verifying" {
		t.Errorf("status at 100 %%: %q", s)
	}
	v.event(transfer.Event{Kind: transfer.EventVerifying, Attempt: 3, Method: "sha256"})
	if s := v.status(); s != "verifying (sha256)" {
		t.Errorf("status while hashing: %q", s)
	}
	v.event(transfer.Event{Kind: transfer.EventVerified, Attempt: 3, Method: "sha256"})
	v.finish(true)
	d.close()
	want := "haul: connection lost at 56 % (426 MiB of 760 MiB): read: connection reset by peer; 426 \"Failure\"; resuming at 420 MiB after 2 failed attempts in 3s\n"
	if out.String() != want {
		t.Errorf("lines:\n%s\nwant:\n%s", out.String(), want)
	}
}

// -v shows every attempt and the verification; -q no reconnect line.
func TestDisplayVerboseAndQuiet(t *testing.T) {
	run := func(verbose int, quiet bool) string {
		var out bytes.Buffer
		d := newDisplay(&out, false, units{}, verbose, quiet)
		v := d.file("f")
		v.event(transfer.Event{Kind: transfer.EventAttempt, Attempt: 1})
		v.progress(1<<20, 2<<20)
		v.event(transfer.Event{Kind: transfer.EventFailed, Attempt: 1, Err: errors.New("reset")})
		v.event(transfer.Event{Kind: transfer.EventAttempt, Attempt: 2, Offset: 1 << 20})
		v.event(transfer.Event{Kind: transfer.EventRestart, Attempt: 2, Reason: "the remote changed"})
		v.event(transfer.Event{Kind: transfer.EventVerifying, Attempt: 2, Method: "md5"})
		v.event(transfer.Event{Kind: transfer.EventVerified, Attempt: 2, Method: "md5"})
		d.close()
		return out.String()
	}
	if got, want := run(1, false), "haul: attempt 1 starts at 0 B\nhaul: connection lost at 50 % (1.00 MiB of 2.00 MiB): reset; resuming at 1.00 MiB\nhaul: restarting from zero: the remote changed\nhaul: verifying by md5\nhaul: verified by md5\n"; got != want {
		t.Errorf("-v:\n%s\nwant:\n%s", got, want)
	}
	if got := run(0, true); got != "" {
		t.Errorf("-q printed %q", got)
	}
	if got := run(0, false); strings.Count(got, "\n") != 2 {
		t.Errorf("default printed %q, want the reconnect and the restart", got)
	}
}

// A batch names the file in its lines.
func TestDisplayMultiNamesFile(t *testing.T) {
	var out bytes.Buffer
	d := newDisplay(&out, false, units{}, 0, false)
	d.multi = true
	v := d.file("dir/a.bin")
	v.event(transfer.Event{Kind: transfer.EventFailed, Attempt: 1, Err: errors.New("refused")})
	v.event(transfer.Event{Kind: transfer.EventAttempt, Attempt: 2})
	if got, want := out.String(), "haul: dir/a.bin: could not start: refused; resuming at 0 B\n"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}

func TestSummaryLine(t *testing.T) {
	res := transfer.Result{Size: 760 << 20, StartOffset: 100 << 20, Transferred: 700 << 20, Resumes: 2, Restarts: 1,
		ResentBytes: 40 << 20, Duration: 7 * time.Second, Verified: "sha256", Segments: 4}
	got := summaryLine(units{}, "put", "big.iso", "sftp://u@h/big.iso", res)
	want := "put big.iso -> sftp://u@h/big.iso: 760 MiB (resumed at 100 MiB) in 7s, 100 MiB/s, 2 reconnects, 1 restart from zero, 40.0 MiB sent again, 4 segments, verified by sha256"
	if got != want {
		t.Errorf("\n%s\nwant\n%s", got, want)
	}
	got = summaryLine(units{si: true}, "get", "f", "ftp://h/f", transfer.Result{Size: 5e6, Transferred: 5e6, Duration: time.Second, Verified: "size"})
	if want := "got ftp://h/f -> f: 5.00 MB in 1s, 5.00 MB/s, verified by size"; got != want {
		t.Errorf("\n%s\nwant\n%s", got, want)
	}
}

func TestVersionOf(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.2.0"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "4768a51d5ac70d5130eeabb57c67aa7455fb6754"},
		{Key: "vcs.time", Value: "2026-11-30T14:00:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}}
	if got, want := versionOf(bi, "linux/amd64"), "v1.2.0, commit 4768a51d5ac7+modified 2026-11-30T14:00:00Z, go1.26.0, linux/amd64"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if got, want := versionOf(&debug.BuildInfo{GoVersion: "go1.26.0"}, "linux/arm64"), "(devel), go1.26.0, linux/arm64"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}
