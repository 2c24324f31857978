// Command haul moves large files over FTP, FTPS and SFTP and finishes
// them: it reconnects after dropped connections, resumes at the exact byte
// offset, and verifies the result.
//
//	haul put [flags] LOCAL URL
//	haul get [flags] URL LOCAL
//
// A LOCAL that is a directory or ends in "/" means the remote base name in
// it, a URL path ending in "/" LOCAL's base name there; "-" is stdout
// (get) or stdin (put), through a private temporary file (see stdio.go).
// Only regular files are written or replaced. The password comes from the
// URL (a warning says that every local user can read it there),
// --password-file, HAUL_PASSWORD or ~/.netrc; it is never printed. With
// --json, exactly one JSON object is printed on stdout at the end. Exit
// codes: 0 success, 2 usage (also a LOCAL that is not a regular file), 3
// authentication (or server identity), 4 not found or permission, 5 no
// space, 6 verification failed, 7 retries exhausted, stalled or --timeout
// reached, 130 interrupted, 1 anything else.
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
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
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
	verbose         bool
	partSuffix      string
	verify          string
	direct          bool
	segments        int
	limitRate       string
	minSegmentSize  string
	noExecHash      bool
}

// report is the --json output.
type report struct {
	OK          bool         `json:"ok"`
	Op          string       `json:"op"`
	URL         string       `json:"url"`
	Local       string       `json:"local"`
	Bytes       int64        `json:"bytes"`
	Attempts    int          `json:"attempts"`
	Resumes     int          `json:"resumes"`
	Restarts    int          `json:"restarts"`
	Segments    int          `json:"segments"`
	ResentBytes int64        `json:"resent_bytes"`
	DurationMS  int64        `json:"duration_ms"`
	Verified    string       `json:"verified"`
	Error       *reportError `json:"error,omitempty"`
}

type reportError struct {
	Kind      string `json:"kind"`
	Message   string `json:"message"`
	Hint      string `json:"hint,omitempty"`
	Committed int64  `json:"committed_bytes"`
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var f flags
	code := exitOK
	root := &cobra.Command{
		Use:           "haul",
		Short:         "Move large files over FTP, FTPS and SFTP, and finish them",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return &usageError{msg: "no command given"}
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&f.passwordFile, "password-file", "", "read the password from this file (when the URL has none; before HAUL_PASSWORD, then ~/.netrc)")
	pf.StringVar(&f.identity, "identity", "", "SSH private key file (sftp:// only)")
	pf.StringVar(&f.knownHosts, "known-hosts", "", "known_hosts file (sftp:// only; default ~/.ssh/known_hosts)")
	pf.BoolVar(&f.insecureHostKey, "insecure-host-key", false, "accept any SSH host key (sftp:// only; unsafe)")
	pf.BoolVar(&f.acceptNewKey, "accept-new-host-key", false, "trust and record the host key of a server the known_hosts file does not know yet, as OpenSSH's StrictHostKeyChecking=accept-new (sftp:// only; a changed key is still refused)")
	pf.StringVar(&f.caFile, "ca-file", "", "PEM file of CA certificates trusted (ftps:// and ftps+implicit:// only; default: system roots)")
	pf.IntVar(&f.retries, "retries", 0, "attempts in a row without progress before giving up, at least 1 (1: never retry; default 6)")
	pf.DurationVar(&f.stallTimeout, "stall-timeout", 0, "abort and resume an attempt that moves no byte for this long, positive (default 60s)")
	pf.DurationVar(&f.timeout, "timeout", 0, "give up after this long in total, positive (default: no limit)")
	pf.BoolVar(&f.jsonOut, "json", false, "print one JSON object with the result on stdout")
	pf.BoolVarP(&f.quiet, "quiet", "q", false, "no progress bar")
	pf.BoolVarP(&f.verbose, "verbose", "v", false, "log each attempt to stderr")
	pf.StringVar(&f.partSuffix, "part-suffix", "", "suffix of the partial file while a transfer is incomplete (default .part)")
	pf.StringVar(&f.verify, "verify", "auto", "how to prove the result: auto (server hash if offered, else size), size, hash, readback")
	pf.IntVar(&f.segments, "segments", 0, fmt.Sprintf("connections per transfer, each moving its own byte range, at most %d: servers cap connections per client well below that (OpenSSH MaxStartups 10, vsftpd max_per_ip) and more streams gain nothing (default auto: 1 on a fast link, up to 4 on a long one; FTP uploads only when asked, and only to servers that allow it)", transfer.MaxSegments))
	pf.StringVar(&f.limitRate, "limit-rate", "", "cap throughput, in bytes per second: 500K, 1.5M, 100MiB (K, M, G, T and KiB, MiB, GiB, TiB: powers of 1024), 100MB (KB, MB, GB, TB: powers of 1000)")
	pf.StringVar(&f.minSegmentSize, "min-segment-size", "", "smallest byte range worth its own connection with --segments (units as --limit-rate; default 32M)")
	pf.BoolVar(&f.noExecHash, "no-exec-hash", false, "never run a hash command (sha256sum) over SSH to verify (sftp:// only)")
	pf.BoolVar(&f.direct, "direct", false, "upload straight to the target name, without the .part file and rename (put only)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })

	var rep report
	hc := hintContext{}
	do := func(cmd *cobra.Command, op, local, rawURL string) error {
		rep = report{Op: op, URL: transfer.Redact(rawURL), Local: local}
		hc.op, hc.local = op, local
		ep, err := transfer.ParseURL(rawURL)
		if err != nil {
			return err
		}
		hc.ep = ep
		if err := f.check(cmd, op, ep, local); err != nil {
			return err
		}
		cfg, err := f.config(stderr)
		if err != nil {
			return err
		}
		warn := func(msg string) { fmt.Fprintf(stderr, "haul: warning: %s\n", msg) }
		if ep.HasPassword() {
			warn("the password in the URL is visible to every local user (ps, /proc) while haul runs: use HAUL_PASSWORD or --password-file instead")
		} else if cfg.Password == "" {
			login, pw, err := readNetrc(netrcPath(), ep.Host, ep.User, warn)
			if err != nil {
				return &usageError{msg: err.Error(), err: err} // names the file (and line)
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
				fmt.Fprintf(stderr, "haul: warning: recorded the new host key of %s (%s) in %s; it was not verified: check its fingerprint with the server's administrator\n",
					host, fingerprint, hc.knownHosts)
			}
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
		if !f.quiet {
			cfg.OnEvent = func(e transfer.Event) {
				if e.Kind == transfer.EventSingleStream {
					fmt.Fprintf(stderr, "haul: one stream instead of --segments %d: %s\n", f.segments, e.Reason)
				}
			}
		}
		bar := f.progress(stderr, op)
		if bar != nil {
			cfg.Progress = func(done, total int64) {
				bar.ChangeMax64(total)
				_ = bar.Set64(done)
			}
		}
		t, err := transfer.Open(rawURL, cfg)
		if err != nil {
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
			res, err = putFromStdin(ctx, t, remote, stdio, stdin)
		case op == "put":
			res, err = t.Upload(ctx, local, remote)
		case stdio != "":
			res, err = getToStdout(ctx, t, remote, stdio, stdout)
		default:
			res, err = t.Download(ctx, remote, local)
		}
		if bar != nil {
			_ = bar.Finish()
			fmt.Fprintln(stderr)
		}
		rep.Bytes, rep.Attempts, rep.Resumes, rep.Restarts, rep.Segments = res.Size, res.Attempts, res.Resumes, res.Restarts, res.Segments
		rep.ResentBytes, rep.DurationMS, rep.Verified = res.ResentBytes, res.Duration.Milliseconds(), res.Verified
		return err
	}
	root.AddCommand(&cobra.Command{
		Use:   "put [flags] LOCAL URL",
		Short: "Upload LOCAL to URL (LOCAL - reads stdin; a URL ending in / means under LOCAL's name)",
		Args:  exactArgs(2),
		RunE:  func(cmd *cobra.Command, a []string) error { return do(cmd, "put", a[0], a[1]) },
	}, &cobra.Command{
		Use:   "get [flags] URL LOCAL",
		Short: "Download URL to LOCAL (LOCAL - writes stdout; a directory means under the remote name)",
		Args:  exactArgs(2),
		RunE:  func(cmd *cobra.Command, a []string) error { return do(cmd, "get", a[1], a[0]) },
	})
	doctorExit := -1
	root.AddCommand(newDoctorCmd(&f, stdout, stderr, &doctorExit))
	root.SetArgs(args)
	root.SetOut(stderr)
	root.SetErr(stderr)
	err := root.Execute()
	if doctorExit >= 0 {
		return doctorExit
	}
	if err != nil && rep.Op == "" && !isUsage(err) {
		err = &usageError{msg: err.Error()} // unknown command and the like
	}
	code, kind := classify(err)
	if err != nil {
		fmt.Fprintf(stderr, "haul: %v\n", err)
		h := ""
		if rep.Op != "" {
			h = hint(err, hc)
		}
		if h != "" {
			fmt.Fprintf(stderr, "haul: hint: %s\n", h)
		}
		if code == exitUsage && !errors.Is(err, transfer.ErrNotRegular) {
			fmt.Fprintln(stderr, "usage: haul put [flags] LOCAL URL | haul get [flags] URL LOCAL (haul --help)")
		}
		var te *transfer.Error
		rep.Error = &reportError{Kind: kind, Message: err.Error(), Hint: h}
		if errors.As(err, &te) {
			rep.Error.Committed = te.Committed
		}
	}
	rep.OK = err == nil
	if f.jsonOut {
		enc := json.NewEncoder(stdout)
		_ = enc.Encode(rep)
	}
	return code
}

func isUsage(err error) bool {
	var ue *usageError
	return errors.As(err, &ue)
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return &usageError{msg: fmt.Sprintf("want %d arguments, got %d", n, len(args))}
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
	if f.verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return cfg, nil
}

// progress returns a progress bar on an interactive stderr, else nil.
func (f *flags) progress(stderr io.Writer, op string) *progressbar.ProgressBar {
	if f.quiet || f.jsonOut {
		return nil
	}
	file, ok := stderr.(*os.File)
	if !ok {
		return nil
	}
	if fi, err := file.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetDescription(op),
		progressbar.OptionShowBytes(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetPredictTime(true),
	)
}
