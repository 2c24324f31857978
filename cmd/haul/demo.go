package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/openhaul/haul/internal/demo"
)

// demoError is a failure of haul demo (a transfer that failed, an
// interrupt): not a usage error, whatever run makes of errors from commands
// other than put and get. Its exit code is its cause's (130 for an
// interrupt, else 1).
type demoError struct{ err error }

func (e *demoError) Error() string { return "demo: " + e.err.Error() }
func (e *demoError) Unwrap() error { return e.err }

// newDemoCmd returns the demo command: in-process FTP and SFTP servers on
// loopback behind a link that cuts and blackholes connections, four
// transfers through it with this very CLI (run), and a table of what
// happened. stdout gets the table (and, with --keep-running, how to reach
// the servers), stderr the progress of each transfer.
func newDemoCmd(stdout, stderr io.Writer) *cobra.Command {
	var size string
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo [--size SIZE] [--keep-running]",
		Short: "Watch haul resume: FTP and SFTP servers in this process, a link that cuts, four transfers and a table",
		Long: `haul demo starts an FTP and an SFTP server inside this process, on 127.0.0.1
and random ports, behind a link (a fault-injecting TCP proxy on another
loopback address) that resets the connection at 30 % of each transfer and
blackholes it at 70 %, where only haul's stall watchdog gets it moving again.
It then uploads and downloads a generated file over both protocols with this
very command line (haul put/get --json), and ends with a table: cuts, resumes,
re-sent bytes, and how each result was verified.

Nothing is installed and root is not needed. Everything is written under one
temporary directory, removed at the end; the SFTP host key is generated at
start and handed to haul in a temporary known_hosts file (host keys are
checked as always).

With --keep-running the servers stay up after the table, until Ctrl-C, and
their URLs, login and known_hosts file are printed to try haul put and haul
get by hand.`,
		Example: `  haul demo
  haul demo --size 256M
  haul demo --keep-running`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n := int64(demo.DefaultSize)
			if size != "" {
				var err error
				if n, err = parseSize(size); err != nil {
					return &usageError{msg: fmt.Sprintf("--size %q: %v", size, err)}
				}
				if n < demo.MinSize {
					return &usageError{msg: fmt.Sprintf("--size %q: less than the smallest the demo cuts sensibly, 1M", size)}
				}
			}
			if err := runDemo(demo.Options{Size: n}, keep, stdout, stderr); err != nil {
				return &demoError{err: err}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&size, "size", "", "size of the file moved each way: 64M, 1G, 100MB (units as --limit-rate; default 64M)")
	cmd.Flags().BoolVar(&keep, "keep-running", false, "leave the servers up after the table, until Ctrl-C, and print how to reach them")
	return cmd
}

// runDemo runs the demo's scenario with opts and prints its table.
func runDemo(opts demo.Options, keep bool, stdout, stderr io.Writer) (err error) {
	// SIGHUP too: a closed terminal still removes the lab (after the
	// transfer under way, which haul itself does not stop for it).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	lab, err := demo.Start(opts)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := lab.Close(); err == nil {
			err = cerr
		}
	}()
	// haul keeps upload state in its cache directory, and the command line
	// has no flag for another: point it into the lab's directory for the
	// demo's own transfers, so that nothing is written outside it.
	restore := setenv("XDG_CACHE_HOME", lab.CacheDir())
	if _, ok := stderr.(*os.File); !ok {
		// Both haul and the lab write progress to stderr, from several
		// goroutines. A file is safe for that (and must stay a file for
		// haul's progress bar); anything else is serialized here.
		stderr = &lockedWriter{w: stderr}
	}
	haul := func(args []string, out io.Writer) int {
		return run(args, strings.NewReader(""), out, stderr)
	}
	rows, err := lab.Run(ctx, haul, stderr)
	restore()
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted (%w)", ctx.Err())
	}
	fmt.Fprintln(stdout)
	if werr := demo.WriteTable(stdout, rows); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	for _, r := range rows {
		if !r.Ok() {
			return fmt.Errorf("%s %s: %d cut(s), %d resume(s), verified by %q, identical %v: not what the demo shows",
				r.Protocol, r.Direction, r.Cuts, r.Resumes, r.VerifiedBy, r.Identical)
		}
	}
	if !keep {
		return nil
	}
	fmt.Fprintf(stdout, `
The servers stay up until Ctrl-C (the link no longer cuts):
  FTP   %s
  SFTP  %s
  user %s, password %s (also in %s)
  SFTP host key %s, in %s
Try:
  haul put --password-file %s FILE %s
  haul get --password-file %s --known-hosts %s %s%s .
`, lab.FTPURL, lab.SFTPURL, lab.User, lab.Password, lab.PasswordFile, lab.HostKeyFingerprint(), lab.KnownHostsFile,
		lab.PasswordFile, lab.FTPURL, lab.PasswordFile, lab.KnownHostsFile, lab.SFTPURL, lab.SampleFile)
	<-ctx.Done()
	fmt.Fprintln(stderr, "haul: demo: stopping the servers and removing", lab.Dir)
	return nil
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (lw *lockedWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.w.Write(p)
}

// setenv sets an environment variable and returns what puts it back.
func setenv(key, value string) (restore func()) {
	old, had := os.LookupEnv(key)
	_ = os.Setenv(key, value)
	return func() {
		if had {
			_ = os.Setenv(key, old)
		} else {
			_ = os.Unsetenv(key)
		}
	}
}
