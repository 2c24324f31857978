// Command put uploads one file with haul's library and prints every event,
// so that you can watch a transfer survive a fault.
//
//	HAUL_PASSWORD=secret go run ./examples/put -rate 10 big.iso ftp://user@host/big.iso
//
// On a fast link (or to a server on the same machine) a file is done
// before you can do anything to it: -rate caps the upload, in MiB/s, which
// leaves time. While it runs, cause a fault and watch the upload resume
// where the server's copy ends:
//   - cut the connection: `sudo ss -K dst HOST` (Linux);
//   - blackhole it: `sudo iptables -I OUTPUT -d HOST -j DROP`, and after a
//     while `sudo iptables -D OUTPUT -d HOST -j DROP`: nothing fails, nothing
//     moves, until the stall watchdog (-stall) aborts the silent attempt;
//   - turn Wi-Fi off for a few seconds, or pull the network cable and plug
//     it back in.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/openhaul/haul/transfer"
)

func main() {
	rate := flag.Int64("rate", 0, "cap the upload at this many MiB/s (0: no cap)")
	stall := flag.Duration("stall", 10*time.Second, "abort and resume an attempt that moves no byte for this long")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: put [-rate MiB/s] [-stall 10s] LOCAL URL")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var next int64 // the next progress line, every tenth of the file
	cfg := transfer.Config{
		Password:     os.Getenv("HAUL_PASSWORD"),
		RateLimit:    *rate << 20,
		StallTimeout: *stall,
		Progress: func(done, total int64) {
			if done >= next && total > 0 {
				fmt.Fprintf(os.Stderr, "%3d %%  %d of %d MiB\n", done*100/total, done>>20, total>>20)
				next = done + total/10
			}
		},
		OnEvent: func(e transfer.Event) {
			switch e.Kind {
			case transfer.EventAttempt:
				fmt.Fprintf(os.Stderr, "attempt %d starts at byte %d\n", e.Attempt, e.Offset)
				next = 0
			case transfer.EventFailed:
				fmt.Fprintf(os.Stderr, "attempt %d failed after %d bytes: %v\n", e.Attempt, e.Bytes, e.Err)
			case transfer.EventBackoff:
				fmt.Fprintf(os.Stderr, "reconnecting in %v\n", e.Wait.Round(time.Millisecond))
			case transfer.EventRestart:
				fmt.Fprintf(os.Stderr, "starting again from zero: %s\n", e.Reason)
			case transfer.EventVerifying:
				fmt.Fprintf(os.Stderr, "verifying by %s\n", e.Method)
			case transfer.EventVerified:
				fmt.Fprintf(os.Stderr, "verified by %s\n", e.Method)
			}
		},
	}
	res, err := transfer.Put(ctx, flag.Arg(0), flag.Arg(1), cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "put:", err)
		os.Exit(1)
	}
	fmt.Printf("ok: %d bytes in %v, %d attempts, %d resumes, %d bytes sent again, verified by %s\n",
		res.Size, res.Duration.Round(time.Millisecond), res.Attempts, res.Resumes, res.ResentBytes, res.Verified)
}
