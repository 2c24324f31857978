// Command haul moves large files over FTP, FTPS and SFTP and finishes
// them: it reconnects after dropped connections, resumes at the exact byte
// offset, and verifies the result.
//
//	haul put [flags] LOCAL URL
//	haul get [flags] URL LOCAL
//
// The password comes from HAUL_PASSWORD, --password-file or the URL; it is
// never printed. With --json, exactly one JSON object is printed on stdout
// at the end. Exit codes: 0 success, 2 usage, 3 authentication (or server
// identity), 4 not found or permission, 5 no space, 6 verification failed,
// 7 retries exhausted, stalled or --timeout reached, 130 interrupted, 1
// anything else.
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/openhaul/haul/transfer"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type flags struct {
	passwordFile    string
	identity        string
	knownHosts      string
	insecureHostKey bool
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
	Committed int64  `json:"committed_bytes"`
}

func run(args []string, stdout, stderr io.Writer) int {
	var f flags
	code := exitOK
	root := &cobra.Command{
		Use:           "haul",
		Short:         "Move large files over FTP, FTPS and SFTP, and finish them",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return &usageError{"no command given"}
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&f.passwordFile, "password-file", "", "read the password from this file (else HAUL_PASSWORD, else the URL)")
	pf.StringVar(&f.identity, "identity", "", "SSH private key file for SFTP")
	pf.StringVar(&f.knownHosts, "known-hosts", "", "known_hosts file for SFTP (default ~/.ssh/known_hosts)")
	pf.BoolVar(&f.insecureHostKey, "insecure-host-key", false, "accept any SFTP host key (unsafe)")
	pf.StringVar(&f.caFile, "ca-file", "", "PEM file of CA certificates trusted for FTPS (default: system roots)")
	pf.IntVar(&f.retries, "retries", 0, "attempts in a row without progress before giving up (default 6)")
	pf.DurationVar(&f.stallTimeout, "stall-timeout", 0, "abort and resume an attempt that moves no byte for this long (default 60s)")
	pf.DurationVar(&f.timeout, "timeout", 0, "give up after this long in total (default: no limit)")
	pf.BoolVar(&f.jsonOut, "json", false, "print one JSON object with the result on stdout")
	pf.BoolVarP(&f.quiet, "quiet", "q", false, "no progress bar")
	pf.BoolVarP(&f.verbose, "verbose", "v", false, "log each attempt to stderr")
	pf.StringVar(&f.partSuffix, "part-suffix", "", "suffix of the partial file while a transfer is incomplete (default .part)")
	pf.StringVar(&f.verify, "verify", "auto", "how to prove the result: auto (server hash if offered, else size), size, hash, readback")
	pf.IntVar(&f.segments, "segments", 0, "connections per transfer, each moving its own byte range (default auto: 1 on a fast link, up to 4 on a long one; FTP uploads only when asked, and only to servers that allow it)")
	pf.StringVar(&f.limitRate, "limit-rate", "", "cap throughput, in bytes per second (suffixes K, M, G: powers of 1024)")
	pf.BoolVar(&f.noExecHash, "no-exec-hash", false, "never run a hash command (sha256sum) over SSH to verify SFTP transfers")
	pf.BoolVar(&f.direct, "direct", false, "upload straight to the target name, without the .part file and rename")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err.Error()} })

	var rep report
	do := func(op, local, rawURL string) error {
		rep = report{Op: op, URL: transfer.Redact(rawURL), Local: local}
		cfg, err := f.config(stderr)
		if err != nil {
			return err
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
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if f.timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, f.timeout)
			defer cancel()
		}
		var res transfer.Result
		if op == "put" {
			res, err = transfer.Put(ctx, local, rawURL, cfg)
		} else {
			res, err = transfer.Get(ctx, rawURL, local, cfg)
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
		Short: "Upload LOCAL to URL",
		Args:  exactArgs(2),
		RunE:  func(_ *cobra.Command, a []string) error { return do("put", a[0], a[1]) },
	}, &cobra.Command{
		Use:   "get [flags] URL LOCAL",
		Short: "Download URL to LOCAL",
		Args:  exactArgs(2),
		RunE:  func(_ *cobra.Command, a []string) error { return do("get", a[1], a[0]) },
	})
	root.SetArgs(args)
	root.SetOut(stderr)
	root.SetErr(stderr)
	err := root.Execute()
	if err != nil && rep.Op == "" && !isUsage(err) {
		err = &usageError{err.Error()} // unknown command and the like
	}
	code, kind := classify(err)
	if err != nil {
		fmt.Fprintf(stderr, "haul: %v\n", err)
		if code == exitUsage {
			fmt.Fprintln(stderr, "usage: haul put [flags] LOCAL URL | haul get [flags] URL LOCAL (haul --help)")
		}
		var te *transfer.Error
		rep.Error = &reportError{Kind: kind, Message: err.Error()}
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
			return &usageError{fmt.Sprintf("want %d arguments, got %d", n, len(args))}
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
		MaxAttempts:           f.retries,
		StallTimeout:          f.stallTimeout,
		PartSuffix:            f.partSuffix,
		Password:              os.Getenv("HAUL_PASSWORD"),
	}
	v, err := transfer.ParseVerifyPolicy(f.verify)
	if err != nil {
		return cfg, &usageError{"--verify: " + err.Error()}
	}
	cfg.Verify, cfg.DirectUpload, cfg.Segments, cfg.NoExecHash = v, f.direct, f.segments, f.noExecHash
	if f.segments < 0 {
		return cfg, &usageError{"--segments must not be negative"}
	}
	if f.limitRate != "" {
		n, err := parseSize(f.limitRate)
		if err != nil || n <= 0 {
			return cfg, &usageError{fmt.Sprintf("--limit-rate %q: want a positive number of bytes per second such as 500K or 20M", f.limitRate)}
		}
		cfg.RateLimit = n
	}
	if f.retries < 0 {
		return cfg, &usageError{"--retries must not be negative"}
	}
	if f.passwordFile != "" {
		b, err := os.ReadFile(f.passwordFile)
		if err != nil {
			return cfg, &usageError{fmt.Sprintf("--password-file: %v", err)}
		}
		cfg.Password = strings.TrimRight(string(b), "\r\n")
	}
	if f.caFile != "" {
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return cfg, &usageError{fmt.Sprintf("--ca-file: %v", err)}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return cfg, &usageError{"--ca-file: no PEM certificate found"}
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

// parseSize parses a byte count with an optional K, M or G suffix (powers
// of 1024).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, err
	}
	return n * mult, nil
}
