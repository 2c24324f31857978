// Command haul moves large files over FTP, FTPS and SFTP and finishes
// them: it reconnects after dropped connections, resumes at the exact byte
// offset, and verifies the result.
//
//	haul put [flags] LOCAL... URL
//	haul get [flags] URL... LOCAL
//
// "haul --help" (commands.go) is the manual: URLs and the path rule,
// passwords, environment, output and exit codes; each command's help has
// examples. A single source is one transfer (main.go): a LOCAL that is a
// directory or ends in "/" means the remote base name in it, a URL path
// ending in "/" LOCAL's base name there; "-" is stdout (get) or stdin
// (put), through a private temporary file (stdio.go). Several sources, or
// -r, are a batch over one Client's pool of sessions (batch.go). What a
// run shows on stderr, bars on a terminal and lines everywhere, is in
// display.go; --json prints one object for a transfer, a line per file
// and a summary for a batch. Only regular files are written or replaced.
// Exit codes are in exitcode.go, a batch's precedence in batch.go.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/openhaul/haul/transfer"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

type flags struct {
	passwordFile    string
	identity        string
	knownHosts      string
	insecureHostKey bool
	acceptNewKey    bool
	caFile          string
	retries         int
	stallTimeout    time.Duration
	timeout         time.Duration
	jsonOut         bool
	quiet           bool
	verbose         int
	partSuffix      string
	verify          string
	direct          bool
	segments        int
	limitRate       string
	minSegmentSize  string
	noExecHash      bool
	recursive       bool
	parallel        int
	skip            string
	noJournal       bool
	syncEach        bool
}

// report is the --json output.
type report struct {
	Type        string       `json:"type,omitempty"` // "file" in a batch
	OK          bool         `json:"ok"`
	Op          string       `json:"op"`
	URL         string       `json:"url"`
	Local       string       `json:"local"`
	Bytes       int64        `json:"bytes"`
	Committed   int64        `json:"committed_bytes"`
	StartOffset int64        `json:"start_offset"`
	Transferred int64        `json:"transferred_bytes"`
	Attempts    int          `json:"attempts"`
	Resumes     int          `json:"resumes"`
	Restarts    int          `json:"restarts"`
	Segments    int          `json:"segments"`
	ResentBytes int64        `json:"resent_bytes"`
	DurationMS  int64        `json:"duration_ms"`
	Verified    string       `json:"verified"`
	Skipped     bool         `json:"skipped,omitempty"`
	SkipReason  string       `json:"skip_reason,omitempty"`
	Error       *reportError `json:"error,omitempty"`
}

type reportError struct {
	Kind      string `json:"kind"`
	Message   string `json:"message"`
	Hint      string `json:"hint,omitempty"`
	Committed int64  `json:"committed_bytes"`
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.commands()
	root.AddCommand(newDemoCmd(stdout, stderr))
	doctorExit := -1
	root.AddCommand(newDoctorCmd(&a.f, stdout, stderr, &doctorExit))
	root.SetArgs(args)
	root.SetOut(stdout) // help, --version, completion scripts
	root.SetErr(stderr)
	err := root.Execute()
	if doctorExit >= 0 {
		return doctorExit
	}
	if err != nil && a.rep.Op == "" && !isUsage(err) && !errors.As(err, new(*demoError)) {
		err = &usageError{msg: err.Error()} // unknown command and the like
	}
	code, kind := classify(err)
	rep := &a.rep
	if err != nil {
		fmt.Fprintf(stderr, "haul: %v\n", err)
		h := ""
		if rep.Op != "" {
			h = hint(err, a.hc)
		}
		if h != "" {
			fmt.Fprintf(stderr, "haul: hint: %s\n", h)
		}
		if code == exitUsage && !errors.Is(err, transfer.ErrNotRegular) {
			fmt.Fprintln(stderr, "usage: haul put [flags] LOCAL... URL | haul get [flags] URL... LOCAL (haul --help)")
		}
		var te *transfer.Error
		rep.Error = &reportError{Kind: kind, Message: err.Error(), Hint: h}
		if errors.As(err, &te) {
			rep.Error.Committed = te.Committed
			rep.Committed = te.Committed
		}
	}
	rep.OK = err == nil
	// Help, --version and completion print no report.
	if a.f.jsonOut && (rep.Op != "" || err != nil) && !a.batchReported {
		enc := json.NewEncoder(stdout)
		_ = enc.Encode(rep)
	}
	return code
}

// app is one run of the command: its flags, streams and report.
type app struct {
	// batchMode: several sources or -r; batchReported: the batch printed
	// its own JSON lines.
	batchMode, batchReported bool
	f                        flags
	stdin                    io.Reader
	stdout, stderr           io.Writer
	rep                      report
	hc                       hintContext
}

// transfer runs one put or get of local and rawURL.
func (a *app) transfer(cmd *cobra.Command, op, local, rawURL string) error {
	f, stderr, rep := &a.f, a.stderr, &a.rep
	*rep = report{Op: op, URL: transfer.Redact(rawURL), Local: local}
	hc := &a.hc
	hc.op, hc.local = op, local
	ep, err := transfer.ParseURL(rawURL)
	if err != nil {
		return err
	}
	hc.ep = ep
	if err := f.check(cmd, op, ep, local); err != nil {
		return err
	}
	u := unitsFor(f.limitRate)
	disp := newDisplay(stderr, !f.quiet && isTerminal(stderr), u, f.verbose, f.quiet)
	cfg, err := a.login(f, ep, disp)
	if err != nil {
		return err
	}
	remote := ep.Path
	var stdio string // the temporary directory of "-"
	switch {
	case local == "-":
		if stdio, err = stdioDir(op); err != nil {
			return err
		}
		defer os.RemoveAll(stdio)
		cfg.StateDir = stdio
	case op == "get":
		if local, err = transfer.LocalPath(local, remote); err != nil {
			return err
		}
		rep.Local = local
	case op == "put":
		if remote, err = transfer.RemotePath(local, remote); err != nil {
			return &usageError{msg: err.Error(), err: err}
		}
		ep.Path = remote
		rep.URL = ep.String()
	}
	name := local
	if local == "-" {
		name = path.Base(remote)
	}
	view := disp.file(filepath.Base(name))
	cfg.Progress = view.progress
	cfg.OnEvent = func(e transfer.Event) {
		if e.Kind == transfer.EventSingleStream && !f.quiet {
			disp.linef("one stream instead of --segments %d: %s", f.segments, e.Reason)
		}
		view.event(e)
	}
	t, err := transfer.Open(rawURL, cfg)
	if err != nil {
		view.finish(false)
		disp.close()
		// Everything Open checks is a setting: the URL, the identity file.
		return &usageError{msg: err.Error(), err: err}
	}
	defer t.Close() // QUIT on the pooled session
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.timeout)
		defer cancel()
	}
	var res transfer.Result
	switch {
	case op == "put" && stdio != "":
		res, err = putFromStdin(ctx, t, remote, stdio, a.stdin)
	case op == "put":
		res, err = t.Upload(ctx, local, remote)
	case stdio != "":
		res, err = getToStdout(ctx, t, remote, stdio, a.stdout)
	default:
		res, err = t.Download(ctx, remote, local)
	}
	view.finish(err == nil)
	disp.close()
	rep.Bytes, rep.Attempts, rep.Resumes, rep.Restarts, rep.Segments = res.Size, res.Attempts, res.Resumes, res.Restarts, res.Segments
	rep.ResentBytes, rep.DurationMS, rep.Verified = res.ResentBytes, res.Duration.Milliseconds(), res.Verified
	rep.Committed, rep.StartOffset, rep.Transferred = res.Committed, res.StartOffset, res.Transferred
	if err == nil && !f.quiet {
		fmt.Fprintf(stderr, "haul: %s\n", summaryLine(u, op, displayLocal(local), rep.URL, res))
	}
	return err
}

// login builds the configuration of a run: the flags, then the password
// from the URL, --password-file, HAUL_PASSWORD or ~/.netrc; and what the
// hints need to know.
func (a *app) login(f *flags, ep transfer.Endpoint, disp *display) (transfer.Config, error) {
	hc := &a.hc
	cfg, err := f.config(disp)
	if err != nil {
		return cfg, err
	}
	warn := func(msg string) { fmt.Fprintf(a.stderr, "haul: warning: %s\n", msg) }
	if ep.HasPassword() {
		warn("the password in the URL is visible to every local user (ps, /proc) while haul runs: use HAUL_PASSWORD or --password-file instead")
	} else if cfg.Password == "" {
		login, pw, err := readNetrc(netrcPath(), ep.Host, ep.User, warn)
		if err != nil {
			return cfg, &usageError{msg: err.Error(), err: err} // names the file (and line)
		}
		cfg.Password = pw
		if ep.User == "" {
			cfg.User = login
		}
	}
	hc.passwordGiven = ep.HasPassword() || cfg.Password != ""
	hc.identity = f.identity != ""
	hc.knownHosts = f.knownHosts
	if hc.knownHosts == "" {
		hc.knownHosts = "~/.ssh/known_hosts"
	}
	if f.acceptNewKey {
		cfg.OnNewHostKey = func(host, fingerprint string) {
			disp.linef("warning: recorded the new host key of %s (%s) in %s; it was not verified: check its fingerprint with the server's administrator",
				host, fingerprint, hc.knownHosts)
		}
	}
	return cfg, nil
}

// displayLocal is how the summary names LOCAL.
func displayLocal(local string) string {
	if local == "-" {
		return "(stdio)"
	}
	return local
}

func isUsage(err error) bool {
	var ue *usageError
	return errors.As(err, &ue)
}

func minArgs(n int) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < n {
			return &usageError{msg: fmt.Sprintf("want at least %d arguments, got %d", n, len(args))}
		}
		return nil
	}
}

// config builds the transfer configuration from the flags and environment.
func (f *flags) config(stderr io.Writer) (transfer.Config, error) {
	cfg := transfer.Config{
		IdentityFile:          f.identity,
		KnownHostsFile:        f.knownHosts,
		InsecureIgnoreHostKey: f.insecureHostKey,
		AcceptNewHostKey:      f.acceptNewKey,
		MaxAttempts:           f.retries,
		StallTimeout:          f.stallTimeout,
		PartSuffix:            f.partSuffix,
		Password:              os.Getenv("HAUL_PASSWORD"),
		DirectUpload:          f.direct,
		Segments:              f.segments,
		NoExecHash:            f.noExecHash,
	}
	v, err := transfer.ParseVerifyPolicy(f.verify)
	if err != nil {
		return cfg, &usageError{msg: "--verify: " + err.Error()}
	}
	cfg.Verify = v
	if f.limitRate != "" {
		if cfg.RateLimit, err = parseSize(f.limitRate); err != nil {
			return cfg, &usageError{msg: fmt.Sprintf("--limit-rate %q: %v", f.limitRate, err)}
		}
	}
	if f.minSegmentSize != "" {
		if cfg.MinSegmentSize, err = parseSize(f.minSegmentSize); err != nil {
			return cfg, &usageError{msg: fmt.Sprintf("--min-segment-size %q: %v", f.minSegmentSize, err)}
		}
	}
	if f.passwordFile != "" {
		b, err := os.ReadFile(f.passwordFile)
		if err != nil {
			return cfg, &usageError{msg: fmt.Sprintf("--password-file: %v", err)}
		}
		cfg.Password = strings.TrimRight(string(b), "\r\n")
	}
	if f.caFile != "" {
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return cfg, &usageError{msg: fmt.Sprintf("--ca-file: %v", err)}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return cfg, &usageError{msg: "--ca-file: no PEM certificate found"}
		}
		cfg.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	switch {
	case f.verbose == 1:
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	case f.verbose > 1:
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return cfg, nil
}
