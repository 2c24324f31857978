// Command batch uploads a directory tree with haul's library, the way a
// batch upload service would: 8 files at a time over one pool of logged-in
// sessions, a line per file, a journal so that a rerun (even after
// kill -9) skips what was verified and resumes what was partial, and a
// summary. The exit status is 1 when any file failed.
//
//	HAUL_PASSWORD=secret go run ./examples/batch ./outbox sftp://user@host/inbox
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/openhaul/haul/transfer"
)

func main() {
	parallel := flag.Int("parallel", 8, "files at once")
	knownHosts := flag.String("known-hosts", "", "known_hosts file for sftp:// (default ~/.ssh/known_hosts)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: batch [-parallel N] [-known-hosts FILE] LOCALDIR URL")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	ep, err := transfer.ParseURL(flag.Arg(1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	c, err := transfer.Open(flag.Arg(1), transfer.Config{
		Password:       os.Getenv("HAUL_PASSWORD"),
		KnownHostsFile: *knownHosts,
		MaxConns:       *parallel, // one session per worker
		OnEvent: func(e transfer.Event) {
			if e.Kind == transfer.EventFailed {
				fmt.Printf("  %s: connection lost (%v), resuming\n", e.Path, e.Err)
			}
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer c.Close()

	res, err := c.UploadTree(ctx, flag.Arg(0), ep.Path, transfer.BatchOptions{
		Parallel: *parallel,
		OnFile: func(f transfer.FileResult) {
			switch {
			case f.Err != nil:
				fmt.Printf("FAIL %s: %v\n", f.Remote, f.Err)
			case f.Skipped:
				fmt.Printf("skip %s (%s)\n", f.Remote, f.SkipReason)
			default:
				fmt.Printf("ok   %s %d bytes, verified by %s, %d resume(s)\n", f.Remote, f.Size, f.Verified, f.Resumes)
			}
		},
	})
	s := res.Stats
	fmt.Printf("%d files: %d sent (%.1f MB/s), %d skipped, %d failed %v in %v\n",
		s.Files, s.Done, s.Rate()/1e6, s.Skipped, s.Failed, s.Failures, s.Duration.Round(1e6))
	if err != nil {
		os.Exit(1)
	}
}
