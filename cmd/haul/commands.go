package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/openhaul/haul/transfer"
)

// The help: what a user needs without the README. The root's says what
// holds for every command (URLs, passwords, environment, exit codes,
// output); each command's says what it does, with examples.

const rootLong = `haul moves large files over FTP, FTPS and SFTP and finishes them: it reconnects
after a dropped connection, resumes at the exact byte offset, and reports success
only once the result is verified (a hash computed by the server where it offers
one, else the size).

URLs
  ftp://[USER[:PASSWORD]@]HOST[:PORT]/PATH     FTP (port 21; USER defaults to anonymous)
  ftps://USER@HOST[:PORT]/PATH                 FTP with explicit TLS, AUTH TLS (port 21)
  ftps+implicit://USER@HOST[:PORT]/PATH        FTP over implicit TLS (port 990)
  sftp://USER@HOST[:PORT]/PATH                 SFTP over SSH (port 22)
  IPv6 hosts go in brackets (ftp://[::1]:2121/f); other characters in a name are
  percent-encoded (%20 for a space).

The path rule
  PATH is relative to the login directory: ftp://h/dir/f is dir/f there.
  A PATH that starts with // is absolute: sftp://h//srv/data/f is /srv/data/f.
  /~/ also means the login directory (as curl reads it).
  A PATH ending in / names a directory: put writes LOCAL's name in it.

Passwords, first found: the URL (visible to every local user while haul runs:
avoid), --password-file FILE, $HAUL_PASSWORD, ~/.netrc (machine HOST login USER
password PASSWORD). They are never printed. SFTP also logs in with --identity KEY.
A server is checked: SFTP against ~/.ssh/known_hosts (--known-hosts FILE), FTPS
against the system's CAs (--ca-file FILE).

Environment
  HAUL_PASSWORD    the password, when the URL has none and no --password-file
  HOME             where ~/.netrc and ~/.ssh/known_hosts are
  TMPDIR           where LOCAL "-" (stdin, stdout) is staged
  XDG_CACHE_HOME   where an upload records what a resume may trust
                   ($XDG_CACHE_HOME/haul, default ~/.cache/haul)

Output
  On a terminal: a bar (file, bytes done and total, rate, ETA, or what haul waits
  for: reconnecting, verifying); on stderr whatever it is: a line for each
  reconnect and each restart from zero, and one summary line on success
  (-q: none of these, only errors). --json: one JSON object on stdout at the end;
  for a batch, one line per file as it ends ("type": "file") and a last one with
  the totals ("type": "summary").
  -v adds each attempt, the verification and the engine's log; -vv the protocol
  trace (commands and replies; passwords masked).

Exit codes
  0    success: the destination holds the source's bytes, verified
  1    any other failure
  2    usage: a bad command line, flag or URL, or a LOCAL that is not a regular file
  3    authentication rejected, or the server's identity (host key, certificate)
       not verified
  4    not found, or permission denied
  5    no space left on the destination
  6    verification failed: the destination differs from the source
  7    retries exhausted, stalled for good, or --timeout reached: run the same
       command again and it resumes
  130  interrupted (Ctrl-C, SIGTERM): run it again and it resumes
  A batch exits with the worst code of its files, in this order: 130, 2, 3, 6,
  5, 4, 1, 7 (a skipped file is a success); its summary counts each kind.

Shell completion: haul completion bash|zsh|fish|powershell (see its --help).`

const putLong = `Upload LOCAL to the file URL names, or, when URL ends in /, to LOCAL's name in
that directory (see "haul --help" for the path rule).

The data goes to NAME.part (--part-suffix) and is renamed to NAME once it
verified, replacing any NAME there; --direct writes NAME itself. An upload that
fails or is interrupted resumes where the server's copy ends when the same command
runs again. LOCAL "-" reads stdin to its end into $TMPDIR first (resumable from
there), so URL must then name the file.

Several LOCALs, or -r, make a batch: --parallel files at once over one pool of
logged-in sessions. URL must then end in / (the files go under their names);
with -r a directory goes there with its subdirectories, under its own name (a
URL without the final / names the copy itself). A journal of what verified lets
a rerun skip those files (--skip) and resume the others, even after a crash.`

const putExample = `  # into alice's login directory, under the same name
  HAUL_PASSWORD=secret haul put backup.tar ftp://alice@files.example.com/

  # to an absolute path over SFTP, logging in with a key
  haul put --identity ~/.ssh/id_ed25519 backup.tar sftp://alice@files.example.com//srv/backups/

  # FTPS with a private CA, at most 20 MiB/s, giving up after two hours
  haul put --ca-file ca.pem --limit-rate 20M --timeout 2h disk.img ftps://alice@files.example.com/images/disk.img

  # a stream
  pg_dump shop | haul put - sftp://alice@files.example.com/dumps/shop.sql

  # in a script: no bar, one JSON object on stdout, the exit code says what failed
  haul put -q --json backup.tar ftp://alice@files.example.com/ | jq .resumes

  # a directory tree, 8 files at once: photos/ lands in /srv/photos on the server
  haul put -r --parallel 8 photos sftp://alice@files.example.com//srv/

  # several files; files the server already holds (by its hash) are left alone
  haul put --skip checksum *.tar ftp://alice@files.example.com/backups/`

const getLong = `Download the file URL names to LOCAL, or, when LOCAL is a directory or ends in
/, to the remote name in it (see "haul --help" for the path rule).

The data goes to LOCAL.part (--part-suffix) and is renamed to LOCAL once it
verified. A download that fails or is interrupted resumes from LOCAL.part when
the same command runs again. LOCAL "-" writes stdout, once the file is complete
and verified (it is staged in $TMPDIR). Only regular files are written: a LOCAL
that is a link, a device or a fifo is refused.

Several URLs (of one server and login), or -r, make a batch: --parallel files at
once over one pool of logged-in sessions. LOCAL must then be a directory (ending
it in / creates it); with -r a URL that names a directory comes with its
subdirectories, under its own name in LOCAL (a LOCAL that does not exist and
does not end in / names the copy itself). A remote name that could land outside
LOCAL (.., an absolute path, a backslash) is refused, and no link is followed.`

const getExample = `  # into the current directory, under the remote name
  HAUL_PASSWORD=secret haul get ftp://alice@files.example.com/images/disk.img .

  # from an absolute path over SFTP, with another known_hosts file
  haul get --known-hosts ./known_hosts sftp://alice@files.example.com//srv/backups/backup.tar backup.tar

  # at most 500 KiB/s, the verification by reading the file back
  haul get --limit-rate 500K --verify readback ftps://alice@files.example.com/big.iso /data/

  # into a pipe, once complete and verified
  haul get sftp://alice@files.example.com/dumps/shop.sql - | psql shop

  # a directory tree, 8 files at once, into ./photos
  haul get -r --parallel 8 sftp://alice@files.example.com//srv/photos/ ./

  # a batch in a script: the totals are the last JSON line
  haul get -q --json ftp://alice@h/a.iso ftp://alice@h/b.iso /data/ | tail -n 1 | jq .failed`

// commands builds the command tree of a run.
func (a *app) commands() *cobra.Command {
	f := &a.f
	root := &cobra.Command{
		Use:           "haul",
		Short:         "Move large files over FTP, FTPS and SFTP, and finish them",
		Long:          rootLong,
		Version:       version(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return &usageError{msg: "no command given"}
		},
	}
	root.SetVersionTemplate("haul {{.Version}}\n")
	pf := root.PersistentFlags()
	pf.BoolVar(&f.jsonOut, "json", false, "print the result as JSON on stdout (the bar, on a terminal, stays on stderr): one object; a batch, one line per file and a summary line")
	pf.BoolVarP(&f.quiet, "quiet", "q", false, "no bar, no reconnect or summary lines: errors only")
	pf.CountVarP(&f.verbose, "verbose", "v", "-v: also each attempt, the verification and the engine's log; -vv: also the protocol trace")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })

	put := &cobra.Command{
		Use:     "put [flags] LOCAL... URL",
		Short:   "Upload LOCAL to URL (LOCAL - reads stdin; a URL ending in / means under LOCAL's name; several, or -r: a batch)",
		Long:    putLong,
		Example: putExample,
		Args:    minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n := len(args) - 1
			if n == 1 && !f.recursive {
				if name := batchFlagsSet(cmd); name != "" {
					return &usageError{msg: fmt.Sprintf("--%s applies to a batch: several sources, or -r", name)}
				}
				return a.transfer(cmd, "put", args[0], args[1])
			}
			return a.batch(cmd, "put", args[:n], args[n])
		},
	}
	f.transferFlags(put.Flags())
	f.batchFlags(put.Flags(), "put")
	put.Flags().BoolVar(&f.direct, "direct", false, "upload straight to the target name, without the .part file and rename (for servers that refuse renames)")

	get := &cobra.Command{
		Use:     "get [flags] URL... LOCAL",
		Short:   "Download URL to LOCAL (LOCAL - writes stdout; a directory means under the remote name; several, or -r: a batch)",
		Long:    getLong,
		Example: getExample,
		Args:    minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n := len(args) - 1
			if n == 1 && !f.recursive {
				if name := batchFlagsSet(cmd); name != "" {
					return &usageError{msg: fmt.Sprintf("--%s applies to a batch: several sources, or -r", name)}
				}
				return a.transfer(cmd, "get", args[1], args[0])
			}
			return a.batch(cmd, "get", args[:n], args[n])
		},
	}
	f.transferFlags(get.Flags())
	f.batchFlags(get.Flags(), "get")
	// Accepted so that the mistake gets its explanation (check), not
	// "unknown flag".
	get.Flags().BoolVar(&f.direct, "direct", false, "")
	_ = get.Flags().MarkHidden("direct")

	root.AddCommand(put, get)
	return root
}

// batchFlags are the flags of a batch.
func (f *flags) batchFlags(fs *pflag.FlagSet, op string) {
	what := "directories in LOCAL (with their contents)"
	if op == "get" {
		what = "URLs that name directories (with their contents)"
	}
	fs.BoolVarP(&f.recursive, "recursive", "r", false, "also "+what+"; runs a batch even for one source")
	fs.IntVar(&f.parallel, "parallel", 4, fmt.Sprintf("files moved at once in a batch, each over its own connection, 1 to %d", maxParallel))
	fs.StringVar(&f.skip, "skip", "verified", "which files a batch leaves alone: verified (an earlier batch verified it and neither side changed since, per the journal), checksum (the destination has the same size and, by the server's hash, content), never")
	fs.BoolVar(&f.noJournal, "no-journal", false, "keep no journal of the batch (in $XDG_CACHE_HOME/haul): a rerun then skips nothing by --skip verified")
	if op == "get" {
		fs.BoolVar(&f.syncEach, "sync", false, "make each file of a batch durable (fsync) before it is verified, as a single get does (default: the kernel's writeback, as rsync and rclone; a power cut may then lose the last seconds' files, which a rerun downloads again)")
	}
}

// transferFlags are the flags of put and get.
func (f *flags) transferFlags(fs *pflag.FlagSet) {
	fs.SortFlags = false
	// Login and server identity.
	fs.StringVar(&f.passwordFile, "password-file", "", "read the password from this file (when the URL has none; before HAUL_PASSWORD, then ~/.netrc)")
	fs.StringVar(&f.identity, "identity", "", "SSH private key file (sftp:// only)")
	fs.StringVar(&f.knownHosts, "known-hosts", "", "known_hosts file (sftp:// only; default ~/.ssh/known_hosts)")
	fs.BoolVar(&f.acceptNewKey, "accept-new-host-key", false, "trust and record the host key of a server the known_hosts file does not know yet, as OpenSSH's StrictHostKeyChecking=accept-new (sftp:// only; a changed key is still refused)")
	fs.BoolVar(&f.insecureHostKey, "insecure-host-key", false, "accept any SSH host key (sftp:// only; unsafe)")
	fs.StringVar(&f.caFile, "ca-file", "", "PEM file of CA certificates trusted (ftps:// and ftps+implicit:// only; default: system roots)")
	fs.BoolVar(&f.noExecHash, "no-exec-hash", false, "never run a hash command (sha256sum) over SSH to verify (sftp:// only)")
	// Faults.
	fs.IntVar(&f.retries, "retries", 0, "attempts in a row without progress before giving up, at least 1 (1: never retry; default 6)")
	fs.DurationVar(&f.stallTimeout, "stall-timeout", 0, "abort and resume an attempt that moves no byte for this long, positive (default 60s)")
	fs.DurationVar(&f.timeout, "timeout", 0, "give up after this long in total, positive, such as 90s or 2h (default: no limit)")
	// The transfer.
	fs.StringVar(&f.limitRate, "limit-rate", "", "cap throughput, in bytes per second, all connections together: 500K, 1.5M, 20MiB (K, M, G, T and KiB, MiB, GiB, TiB: powers of 1024, as curl) or 100MB (KB, MB, GB, TB: powers of 1000); rates are then shown in the same unit")
	fs.StringVar(&f.verify, "verify", "auto", "how to prove the result: auto (server hash if offered, else size), size, hash, readback")
	fs.StringVar(&f.partSuffix, "part-suffix", "", "suffix of the partial file while a transfer is incomplete (default .part)")
	fs.IntVar(&f.segments, "segments", 0, fmt.Sprintf("connections per transfer, each moving its own byte range, at most %d: servers cap connections per client well below that (OpenSSH MaxStartups 10, vsftpd max_per_ip) and more streams gain nothing (default auto: 1 on a fast link, up to 4 on a long one; FTP uploads only when asked, and only to servers that allow it)", transfer.MaxSegments))
	fs.StringVar(&f.minSegmentSize, "min-segment-size", "", "smallest byte range worth its own connection with --segments (units as --limit-rate; default 32M)")
}
