package transfer_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"strings"
	"time"

	"github.com/openhaul/haul/transfer"
)

// Upload a file over SFTP, checking the server against known_hosts (the
// default), and report what the faults cost.
func ExampleOpen() {
	c, err := transfer.Open("sftp://backup@files.example.com", transfer.Config{
		IdentityFile: os.ExpandEnv("$HOME/.ssh/id_ed25519"),
		StallTimeout: 30 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	res, err := c.Upload(context.Background(), "db.dump", "incoming/db.dump")
	var terr *transfer.Error
	switch {
	case errors.Is(err, transfer.ErrAuth):
		log.Fatal("login rejected; not retried")
	case errors.As(err, &terr):
		log.Fatalf("gave up after %d attempts with %d bytes committed: %v", terr.Attempts, terr.Committed, err)
	case err != nil:
		log.Fatal(err)
	}
	fmt.Printf("%d bytes, %d attempts, %d resumes, %d bytes re-sent, verified by %s\n",
		res.Size, res.Attempts, res.Resumes, res.ResentBytes, res.Verified)
}

// Download over explicit FTPS with the password from the environment.
func ExampleGet() {
	res, err := transfer.Get(context.Background(), "ftps://alice@ftp.example.com/reports/q3.csv", "q3.csv",
		transfer.Config{Password: os.Getenv("FTP_PASSWORD")})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Size, res.Verified)
}

// Upload a few files into a directory that may not exist yet, over one
// login, then list what arrived.
func ExampleClient_MkdirAll() {
	c, err := transfer.Open("ftps://alice@ftp.example.com", transfer.Config{Password: os.Getenv("FTP_PASSWORD")})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.MkdirAll(ctx, "reports/2026/q3"); err != nil {
		log.Fatal(err)
	}
	for _, f := range []string{"sales.csv", "costs.csv"} {
		if _, err := c.Upload(ctx, f, "reports/2026/q3/"); err != nil {
			log.Fatal(err)
		}
	}
	ents, err := c.ReadDir(ctx, "reports/2026/q3")
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range ents {
		fmt.Println(e.Name, e.Size, e.ModTime)
	}
}

// Walk a remote tree, skipping hidden directories.
func ExampleClient_Walk() {
	c, err := transfer.Open("sftp://backup@files.example.com", transfer.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	err = c.Walk(context.Background(), "incoming", func(p string, d transfer.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir && strings.HasPrefix(d.Name, ".") && p != "incoming":
			return fs.SkipDir
		}
		fmt.Println(p, d.Size)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
}

// A batch: a directory tree up with 8 workers over 8 pooled sessions. A
// rerun (even after the process was killed) skips the files verified
// before and resumes the partial ones; one line per file, then totals.
func ExampleClient_UploadTree() {
	c, err := transfer.Open("sftp://alice@files.example.com", transfer.Config{MaxConns: 8})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	res, err := c.UploadTree(context.Background(), "outbox", "inbox", transfer.BatchOptions{
		Parallel: 8,
		OnFile: func(f transfer.FileResult) {
			fmt.Println(f.Remote, f.Skipped, f.Verified, f.Err)
		},
	})
	fmt.Printf("%d sent, %d skipped, %d failed %v\n", res.Stats.Done, res.Stats.Skipped, res.Stats.Failed, res.Stats.Failures)
	if err != nil {
		log.Fatal(err)
	}
}
