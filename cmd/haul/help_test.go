package main

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// runOut runs haul and returns its exit code, stdout and stderr.
func runOut(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// Every command's help has examples; the root's says what holds for all.
func TestHelpSaysWhatAUserNeeds(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"Exit codes", "The path rule", "sftp://h//srv/data/f is /srv/data/f",
			"ftps+implicit://", "HAUL_PASSWORD", "XDG_CACHE_HOME", "TMPDIR", "~/.netrc", "haul completion bash",
			"-vv", "--version", "reconnect", "summary line"}},
		{[]string{"put", "--help"}, []string{"Examples:", "haul put ", "haul put - sftp://", "--limit-rate", "powers of 1024",
			"powers of 1000", "--direct", "--json", "-v, --verbose", ".part"}},
		{[]string{"get", "--help"}, []string{"Examples:", "haul get ", " - | ", "--known-hosts", "--limit-rate", ".part"}},
		{[]string{"help", "get"}, []string{"Examples:"}},
		{[]string{"completion", "--help"}, []string{"bash", "zsh", "fish"}},
	} {
		code, out, errb := runOut(tc.args...)
		if code != exitOK || errb != "" {
			t.Errorf("%v: exit %d, stderr %q", tc.args, code, errb)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: the help does not say %q", tc.args, w)
			}
		}
	}
	// --direct is put's: get's help does not offer it.
	if _, out, _ := runOut("get", "--help"); strings.Contains(out, "--direct") {
		t.Errorf("get --help offers --direct")
	}
}

// The exit codes the help lists are the ones classify returns.
func TestHelpListsEveryExitCode(t *testing.T) {
	_, out, _ := runOut("--help")
	sec := out[strings.Index(out, "Exit codes"):]
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  (\d+) `).FindAllStringSubmatch(sec, -1) {
		listed[m[1]] = true
	}
	for _, c := range []int{exitOK, exitOther, exitUsage, exitAuth, exitNotFound, exitNoSpace, exitVerify, exitExhausted, exitInterrupted} {
		if !listed[fmt.Sprint(c)] {
			t.Errorf("exit code %d is not in the help", c)
		}
	}
	if len(listed) != 9 {
		t.Errorf("the help lists %d exit codes: %v", len(listed), listed)
	}
}

func TestVersionFlag(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"--json", "--version"}} {
		code, out, errb := runOut(args...)
		if code != exitOK || !strings.HasPrefix(out, "haul ") || !strings.Contains(out, "go1.") || strings.Count(out, "\n") != 1 || errb != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errb)
		}
	}
}

// Transfer flags belong to put and get (an old name still works after the
// command); -v counts; the output flags work before or after the command.
func TestFlagsPerCommand(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		verbose int
		json    bool
		limit   string
		direct  bool
		err     string
	}{
		{args: []string{"put", "-v", "a", "b"}, verbose: 1},
		{args: []string{"put", "-vv", "a", "b"}, verbose: 2},
		{args: []string{"-v", "put", "--verbose", "a", "b"}, verbose: 2},
		{args: []string{"--json", "get", "--limit-rate", "1.5M", "a", "b"}, json: true, limit: "1.5M"},
		{args: []string{"put", "--direct", "--json", "a", "b"}, json: true, direct: true},
		{args: []string{"--limit-rate", "100MB", "put", "a", "b"}, limit: "100MB"},
		{args: []string{"get", "--direct", "a", "b"}, direct: true}, // refused later, with the reason
		{args: []string{"put", "--parallel-nonsense", "a", "b"}, err: "unknown flag"},
	} {
		a := &app{}
		root := a.commands()
		cmd, rest, err := root.Find(tc.args)
		if err == nil {
			err = cmd.ParseFlags(rest)
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				// Flags before the command are parsed by the root.
				err2 := root.ParseFlags(tc.args)
				if err2 == nil || !strings.Contains(err2.Error(), tc.err) {
					t.Errorf("%v: %v / %v, want %q", tc.args, err, err2, tc.err)
				}
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		f := a.f
		if f.verbose != tc.verbose || f.jsonOut != tc.json || f.limitRate != tc.limit || f.direct != tc.direct {
			t.Errorf("%v: %+v", tc.args, f)
		}
	}
}

// A flag of put and get still works before the command, as it did when
// every flag was global; on its own it is a usage error.
func TestTransferFlagBeforeCommand(t *testing.T) {
	code, _, errb := runOut("--retries", "0", "put", "a", "ftp://h/b")
	if code != exitUsage || !strings.Contains(errb, "--retries 0: want at least 1") {
		t.Errorf("exit %d: %s", code, errb)
	}
	code, _, errb = runOut("--retries", "3")
	if code != exitUsage || !strings.Contains(errb, "unknown flag: --retries") {
		t.Errorf("exit %d: %s", code, errb)
	}
}
