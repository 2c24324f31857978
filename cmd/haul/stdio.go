package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/openhaul/haul/transfer"
)

// "-" as LOCAL. The engine resumes into a file it can read back (the
// overlap check, hash and readback verification) and truncate (a restart),
// which a pipe is not; so "-" goes through a private temporary directory
// (in $TMPDIR, mode 0700, removed at the end of the run): a download is
// written there, resumed there after faults, verified, and only then
// copied to stdout, which therefore never sees a byte twice nor an
// unverified one; an upload first reads stdin to its end into that
// directory, then uploads the copy, resuming after faults from it. The
// cost: room for the whole file in $TMPDIR, and nothing starts flowing
// downstream (get) or upstream (put) before the other side is complete.
// Nothing survives the run: a run that gives up cannot be resumed by
// the next one, which starts from zero.

// stdioDir makes the private temporary directory for "-".
func stdioDir(op string) (string, error) {
	dir, err := os.MkdirTemp("", "haul-"+op+"-")
	if err != nil {
		return "", fmt.Errorf("temporary directory for -: %w", err)
	}
	return dir, nil
}

// getToStdout downloads remote into dir and copies it to w once verified.
func getToStdout(ctx context.Context, t transfer.Transfer, remote, dir string, w io.Writer) (transfer.Result, error) {
	tmp := filepath.Join(dir, "data")
	res, err := t.Download(ctx, remote, tmp)
	if err != nil {
		return res, err
	}
	f, err := os.Open(tmp)
	if err != nil {
		return res, err
	}
	defer f.Close()
	if _, err := io.Copy(w, f); err != nil {
		return res, fmt.Errorf("writing to stdout: %w", err)
	}
	return res, nil
}

// putFromStdin copies r to a file in dir, to its end, then uploads that
// file to remote. An interruption while r is being read returns at once.
func putFromStdin(ctx context.Context, t transfer.Transfer, remote, dir string, r io.Reader) (transfer.Result, error) {
	tmp := filepath.Join(dir, "stdin")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return transfer.Result{}, err
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		done <- err
	}()
	select {
	case <-ctx.Done():
		return transfer.Result{}, context.Cause(ctx)
	case err := <-done:
		if err != nil {
			return transfer.Result{}, fmt.Errorf("reading stdin: %w", err)
		}
	}
	return t.Upload(ctx, tmp, remote)
}
