package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDemoTable runs haul demo in-process, as a user would (haul demo
// --size 16M: more than an SFTP upload keeps in flight unacknowledged,
// so that a cut at 30 % always finds acknowledged bytes to resume at),
// and checks its table: four rows (FTP and SFTP, put and get),
// each with at least one cut, at least one resume and a verification; and
// that it wrote nothing outside its temporary directory, which it removed.
// The link's faults fire on byte counts, so the outcome does not depend on
// timing (a spurious stall under load only adds a resume).
func TestDemoTable(t *testing.T) {
	home := isolate(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	t.Setenv("XDG_CACHE_HOME", "")
	var stdout, stderr bytes.Buffer
	code := run([]string{"demo", "--size", "16M"}, strings.NewReader(""), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("haul demo exited %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	rows := parseDemoTable(t, stdout.String())
	want := []string{"FTP put", "FTP get", "SFTP put", "SFTP get"}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d:\n%s", len(rows), len(want), &stdout)
	}
	for i, r := range rows {
		if r.name != want[i] {
			t.Errorf("row %d is %q, want %q", i, r.name, want[i])
		}
		if r.cuts < 1 || r.resumes < 1 || r.verified == "" || strings.Contains(r.verified, "DIFFERS") {
			t.Errorf("%s: %d cuts, %d resumes, verified by %q: want at least one cut and one resume, verified",
				r.name, r.cuts, r.resumes, r.verified)
		}
	}
	wantVerify := map[string]string{"FTP": "sha256", "SFTP": "size"}
	for _, r := range rows {
		proto, _, _ := strings.Cut(r.name, " ")
		if r.verified != wantVerify[proto] {
			t.Errorf("%s verified by %q, want %q", r.name, r.verified, wantVerify[proto])
		}
	}
	for _, line := range []string{"link: connection reset after", "link: connection blackholed after"} {
		if n := strings.Count(stderr.String(), line); n != 4 {
			t.Errorf("stderr says %q %d times, want 4 (one per transfer):\n%s", line, n, &stderr)
		}
	}
	// Each transfer's section of stderr ("== FTP upload ...") shows a resume
	// as the server saw it.
	sections := strings.Split(stderr.String(), "\n== ")[1:]
	if len(sections) != 4 {
		t.Errorf("stderr has %d sections, want 4:\n%s", len(sections), &stderr)
	}
	for _, s := range sections {
		if !strings.Contains(s, "server: haul resumed the") {
			t.Errorf("no resume seen by the server in:\n%s", s)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("the demo left %v in its temporary directory's parent", left)
	}
	if _, err := os.Stat(filepath.Join(home, ".cache")); err == nil {
		t.Errorf("the demo wrote to the user's cache directory %s", filepath.Join(home, ".cache"))
	}
}

type demoRow struct {
	name           string // "FTP put"
	cuts, resumes  int
	verified, time string
}

// parseDemoTable reads the rows of the demo's table: PROTOCOL DIRECTION
// SIZE (a number and a unit) CUTS RESUMES RE-SENT (a number and a unit)
// VERIFIED BY TIME.
func parseDemoTable(t *testing.T, out string) []demoRow {
	t.Helper()
	var rows []demoRow
	header := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "PROTOCOL":
			header = true
		case !header || len(f) == 0:
		case len(f) < 10:
			t.Fatalf("table row %q: want 10 fields", line)
		default:
			cuts, err1 := strconv.Atoi(f[4])
			resumes, err2 := strconv.Atoi(f[5])
			if err1 != nil || err2 != nil {
				t.Fatalf("table row %q: cuts or resumes not a number", line)
			}
			rows = append(rows, demoRow{name: f[0] + " " + f[1], cuts: cuts, resumes: resumes,
				verified: strings.Join(f[8:len(f)-1], " "), time: f[len(f)-1]})
		}
	}
	if !header {
		t.Fatalf("no table in the output:\n%s", out)
	}
	return rows
}
