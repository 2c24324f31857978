package resume

import (
	"context"
	"errors"
	"fmt"

	"github.com/openhaul/haul/protocol"
)

var (
	// ErrRetriesExhausted is matched by the error of a transfer that gave
	// up after Config.MaxAttempts attempts in a row without progress. The
	// last cause is wrapped too.
	ErrRetriesExhausted = errors.New("retries exhausted")

	// ErrStalled is matched by the error of an attempt that moved no byte
	// for Config.StallTimeout. It is transient: the engine resumes on a
	// new connection.
	ErrStalled = &protocol.Error{Op: "watchdog", Kind: protocol.ErrTransient, Err: errors.New("transfer stalled")}

	// ErrVerify is matched by the error of a transfer whose result did not
	// verify (sizes or hashes differ). Nothing is deleted.
	ErrVerify = errors.New("verification failed")

	// ErrSourceChanged is matched by the error of an upload whose local
	// source changed size while it was being sent.
	ErrSourceChanged = errors.New("source changed during transfer")
)

var errStorageRepeated = errors.New("the server failed to store data twice without progress (probably a full disk)")

// Error is the error of a failed transfer. It says what was being done,
// where, how far it got and how many attempts were made, and wraps the
// last cause, so errors.Is(err, protocol.ErrAuth) and the like work on it.
type Error struct {
	// Op is "upload" or "download".
	Op string
	// Path is the remote path.
	Path string
	// Committed is the number of bytes known to be at the destination
	// when the transfer gave up: a later run resumes from there.
	Committed int64
	// Attempts is the number of attempts made.
	Attempts int
	// Err is the cause.
	Err error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %q: %v (%d bytes committed, %d attempts)", e.Op, e.Path, e.Err, e.Committed, e.Attempts)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// retryable decides whether an attempt that failed with err may be tried
// again on a new connection. It is the one place the engine decides that.
func retryable(err error) bool {
	return errors.Is(err, protocol.ErrTransient)
}

// attemptErr picks the error to report for a failed attempt: the stall
// watchdog's cause wins over the connection error it provoked, and a
// cancelled parent context wins over both.
func attemptErr(parent, attempt context.Context, err error) error {
	if parent.Err() != nil {
		return context.Cause(parent)
	}
	if cause := context.Cause(attempt); errors.Is(cause, ErrStalled) {
		return ErrStalled
	}
	return err
}
