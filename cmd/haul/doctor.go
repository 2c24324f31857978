package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/openhaul/haul/doctor"
	"github.com/openhaul/haul/transfer"
)

// newDoctorCmd returns `haul doctor [flags] URL`. It prints its own report
// (text, or one JSON object with --json) and errors, and stores the exit
// code in *exit: 0 when no finding fails, 1 when one does, 3 when the login
// was rejected or the server's identity not verified, 2 for usage errors.
// *exit stays negative when the command did not run (cobra refused its
// flags), so that the caller handles that error as usual.
func newDoctorCmd(f *flags, stdout, stderr io.Writer, exit *int) *cobra.Command {
	var opts doctor.Options
	cmd := &cobra.Command{
		Use:   "doctor [flags] URL",
		Short: "Diagnose why transfers to URL's server fail: login, features, data channel, TLS, resume, timeouts, limits (read-only unless asked)",
		Long: `Connects as a transfer would (same login, host-key and certificate checks; one login
attempt per connection, never a retry after a rejection) and reports one line per finding:
ok / warn / fail, the evidence, and the fix (a server setting or a haul flag).
Read-only by default. --write-test DIR writes, resumes, renames and removes a small file in
DIR; --probe-idle D holds connections idle up to D to find idle timeouts; --probe-limit N
opens up to N connections to find the server's limit. Exit: 0 nothing failed, 1 a finding
failed, 3 login rejected or server identity not verified, 2 usage.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return &usageError{msg: fmt.Sprintf("doctor wants one URL, got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, a []string) error {
			*exit = runDoctor(cmd, f, opts, a[0], stdout, stderr)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.SortFlags = false
	// Login and server identity, as for put and get.
	fl.StringVar(&f.passwordFile, "password-file", "", "read the password from this file (when the URL has none; before HAUL_PASSWORD, then ~/.netrc)")
	fl.StringVar(&f.identity, "identity", "", "SSH private key file (sftp:// only)")
	fl.StringVar(&f.knownHosts, "known-hosts", "", "known_hosts file (sftp:// only; default ~/.ssh/known_hosts)")
	fl.BoolVar(&f.acceptNewKey, "accept-new-host-key", false, "trust and record the host key of a server the known_hosts file does not know yet (sftp:// only; a changed key is still refused)")
	fl.BoolVar(&f.insecureHostKey, "insecure-host-key", false, "accept any SSH host key (sftp:// only; unsafe: the report says so)")
	fl.StringVar(&f.caFile, "ca-file", "", "PEM file of CA certificates trusted (ftps:// and ftps+implicit:// only; default: system roots)")
	fl.BoolVar(&f.noExecHash, "no-exec-hash", false, "never run a hash command over SSH (sftp:// only; the report then says what verification remains)")
	fl.DurationVar(&f.timeout, "timeout", 0, "give up after this long in total, positive (default: no limit beyond each probe's own bounds)")
	// The probes.
	fl.StringVar(&opts.WriteDir, "write-test", "", "write, resume, rename and remove a small test file in this remote directory (the only probe that writes)")
	fl.StringVar(&opts.ReadPath, "read-file", "", "remote file to read for the resume and throughput probes (default: the largest file of the login directory)")
	fl.DurationVar(&opts.ProbeIdle, "probe-idle", 0, fmt.Sprintf("hold connections idle up to this long (at most %v) to find the server's and the path's idle timeouts", doctor.MaxProbeIdle))
	fl.IntVar(&opts.ProbeLimit, "probe-limit", 0, fmt.Sprintf("open up to this many connections at once (at most %d) to find how many the server accepts", doctor.MaxProbeLimit))
	return cmd
}

func runDoctor(cmd *cobra.Command, f *flags, opts doctor.Options, rawURL string, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		code, _ := classify(err)
		fmt.Fprintf(stderr, "haul: doctor: %v\n", err)
		if code == exitUsage {
			fmt.Fprintln(stderr, "usage: haul doctor [--write-test DIR] [--probe-idle D] [--probe-limit N] [--json] URL")
		}
		return code
	}
	ep, err := transfer.ParseURL(rawURL)
	if err != nil {
		return fail(err)
	}
	if err := f.check(cmd, "doctor", ep, ""); err != nil {
		return fail(err)
	}
	if cmd.Flags().Changed("probe-idle") && (opts.ProbeIdle < 2*time.Second || opts.ProbeIdle > doctor.MaxProbeIdle) {
		return fail(&usageError{msg: fmt.Sprintf("--probe-idle %v: want 2s to %v", opts.ProbeIdle, doctor.MaxProbeIdle)})
	}
	if cmd.Flags().Changed("probe-limit") && (opts.ProbeLimit < 1 || opts.ProbeLimit > doctor.MaxProbeLimit) {
		return fail(&usageError{msg: fmt.Sprintf("--probe-limit %d: want 1 to %d", opts.ProbeLimit, doctor.MaxProbeLimit)})
	}
	if f.verify == "" {
		f.verify = "auto"
	}
	cfg, err := f.config(stderr)
	if err != nil {
		return fail(err)
	}
	warn := func(msg string) { fmt.Fprintf(stderr, "haul: warning: %s\n", msg) }
	if ep.HasPassword() {
		warn("the password in the URL is visible to every local user (ps, /proc) while haul runs: use HAUL_PASSWORD or --password-file instead")
	} else if cfg.Password == "" {
		login, pw, err := readNetrc(netrcPath(), ep.Host, ep.User, warn)
		if err != nil {
			return fail(&usageError{msg: err.Error(), err: err})
		}
		cfg.Password = pw
		if ep.User == "" {
			cfg.User = login
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.timeout)
		defer cancel()
	}
	rep, err := doctor.Run(ctx, rawURL, cfg, opts)
	if err != nil {
		if code, _ := classify(err); code == exitOther {
			return fail(&usageError{msg: err.Error(), err: err})
		}
		return fail(err)
	}
	if f.jsonOut {
		_ = rep.WriteJSON(stdout)
	} else {
		_ = rep.WriteText(stdout)
	}
	switch {
	case rep.Err != nil:
		code, _ := classify(rep.Err)
		if code == exitOK || code == exitUsage {
			code = exitOther
		}
		return code
	case ctx.Err() != nil:
		return exitInterrupted
	case rep.Failed():
		return exitOther
	}
	return exitOK
}
