// Command get downloads one file with haul's library, resuming a partial
// left by an earlier run, with a progress line on stderr.
//
//	go run ./examples/get sftp://user@host/big.iso big.iso
//	go run ./examples/get -known-hosts ./known_hosts sftp://user@host/big.iso big.iso
//
// An SFTP server's key is checked against ~/.ssh/known_hosts, or the file
// -known-hosts names; a server it does not list is refused.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"

	"github.com/openhaul/haul/transfer"
)

func main() {
	knownHosts := flag.String("known-hosts", "", "known_hosts file for sftp:// (default ~/.ssh/known_hosts)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: get [-known-hosts FILE] URL LOCAL")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	url := flag.Arg(0)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var last int64
	cfg := transfer.Config{
		Password:       os.Getenv("HAUL_PASSWORD"),
		KnownHostsFile: *knownHosts,
		Progress: func(done, total int64) {
			if done-last >= 16<<20 || done == total {
				last = done
				fmt.Fprintf(os.Stderr, "\r%d / %d MiB", done>>20, total>>20)
			}
		},
	}
	res, err := transfer.Get(ctx, url, flag.Arg(1), cfg)
	fmt.Fprintln(os.Stderr)
	if errors.Is(err, transfer.ErrHostKey) && errors.Is(err, fs.ErrNotExist) {
		// No known_hosts file at all: say how to make one.
		file := *knownHosts
		if file == "" {
			file = "~/.ssh/known_hosts"
		}
		ep, _ := transfer.ParseURL(url)
		fmt.Fprintf(os.Stderr, "get: there is no %s to check the server's key against: after checking its fingerprint with the server's administrator, record it with\n\tssh-keyscan -p %s %s >> %s\nor name another file with -known-hosts FILE\n",
			file, ep.Port, ep.Host, file)
		os.Exit(1)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "get:", err)
		os.Exit(1)
	}
	fmt.Printf("ok: %d bytes, %d resumes, verified by %s\n", res.Size, res.Resumes, res.Verified)
}
