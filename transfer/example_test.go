package transfer_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/openhaul/haul/transfer"
)

// Upload a file over SFTP, checking the server against known_hosts (the
// default), and report what the faults cost.
func ExampleOpen() {
	t, err := transfer.Open("sftp://backup@files.example.com", transfer.Config{
		IdentityFile: os.ExpandEnv("$HOME/.ssh/id_ed25519"),
		StallTimeout: 30 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	res, err := t.Upload(context.Background(), "db.dump", "incoming/db.dump")
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
