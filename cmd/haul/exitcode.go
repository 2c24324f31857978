package main

import (
	"context"
	"errors"
	"io/fs"

	"github.com/openhaul/haul/transfer"
)

// Exit codes: the contract that scripts rely on.
const (
	exitOK          = 0
	exitOther       = 1
	exitUsage       = 2 // bad command line, or a LOCAL that exists and is not a regular file
	exitAuth        = 3 // login rejected, or server identity (host key, certificate) not verified
	exitNotFound    = 4 // not found or permission denied
	exitNoSpace     = 5 // no space on the remote or local side
	exitVerify      = 6 // the result did not verify
	exitExhausted   = 7 // retries exhausted, stalled for good, or --timeout reached
	exitInterrupted = 130
)

// usageError marks bad command-line input; err, when set, is the cause.
type usageError struct {
	msg string
	err error
}

func (e *usageError) Error() string { return e.msg }
func (e *usageError) Unwrap() error { return e.err }

// classify maps an error to its exit code and the kind reported in JSON.
// It is the one place the CLI decides that.
func classify(err error) (code int, kind string) {
	var (
		ue *usageError
		bf *batchFailure
	)
	switch {
	case err == nil:
		return exitOK, ""
	case errors.As(err, &bf):
		return bf.code, bf.kind
	case errors.As(err, &ue), errors.Is(err, transfer.ErrInvalidURL), errors.Is(err, transfer.ErrNotRegular):
		// A LOCAL that is a device, fifo, socket or link: the command
		// names something haul will not write, and no retry changes that.
		return exitUsage, "usage"
	case errors.Is(err, context.Canceled):
		return exitInterrupted, "interrupted"
	case errors.Is(err, transfer.ErrAuth):
		return exitAuth, "auth"
	case errors.Is(err, transfer.ErrHostKey):
		return exitAuth, "host_key"
	case errors.Is(err, fs.ErrNotExist):
		return exitNotFound, "not_found"
	case errors.Is(err, fs.ErrPermission):
		return exitNotFound, "permission"
	case errors.Is(err, transfer.ErrNoSpace):
		return exitNoSpace, "no_space"
	case errors.Is(err, transfer.ErrVerify):
		return exitVerify, "verify"
	case errors.Is(err, context.DeadlineExceeded):
		return exitExhausted, "timeout"
	case errors.Is(err, transfer.ErrStalled):
		return exitExhausted, "stalled"
	case errors.Is(err, transfer.ErrRetriesExhausted):
		return exitExhausted, "retries_exhausted"
	case errors.Is(err, transfer.ErrInvalidPath), errors.Is(err, transfer.ErrUnsupportedScheme):
		return exitUsage, "usage"
	case errors.Is(err, transfer.ErrProtocol):
		return exitOther, "protocol"
	}
	return exitOther, "other"
}
