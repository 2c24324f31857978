// Command put uploads one file with haul's library and prints every event:
// run it against a server, pull the network cable, plug it back in, and
// watch it resume.
//
//	HAUL_PASSWORD=secret go run ./examples/put big.iso ftp://user@host/big.iso
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"github.com/openhaul/haul/transfer"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: put LOCAL URL")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cfg := transfer.Config{
		Password: os.Getenv("HAUL_PASSWORD"),
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, nil)),
		OnEvent: func(e transfer.Event) {
			fmt.Fprintf(os.Stderr, "event %s attempt=%d offset=%d err=%v\n", e.Kind, e.Attempt, e.Offset, e.Err)
		},
	}
	res, err := transfer.Put(ctx, os.Args[1], os.Args[2], cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "put:", err)
		os.Exit(1)
	}
	fmt.Printf("ok: %d bytes in %v, %d attempts, %d resumes, %d bytes re-sent, verified by %s\n",
		res.Size, res.Duration, res.Attempts, res.Resumes, res.ResentBytes, res.Verified)
}
