// Command get downloads one file with haul's library, resuming a partial
// left by an earlier run, with a progress line on stderr.
//
//	go run ./examples/get sftp://user@host/big.iso big.iso
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/openhaul/haul/transfer"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: get URL LOCAL")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var last int64
	cfg := transfer.Config{
		Password: os.Getenv("HAUL_PASSWORD"),
		Progress: func(done, total int64) {
			if done-last >= 16<<20 || done == total {
				last = done
				fmt.Fprintf(os.Stderr, "\r%d / %d MiB", done>>20, total>>20)
			}
		},
	}
	res, err := transfer.Get(ctx, os.Args[1], os.Args[2], cfg)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "get:", err)
		os.Exit(1)
	}
	fmt.Printf("ok: %d bytes, %d resumes, verified by %s\n", res.Size, res.Resumes, res.Verified)
}
