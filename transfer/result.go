package transfer

import (
	"errors"
	"fmt"
	"time"

	"github.com/openhaul/haul/resume"
)

// Result describes a finished transfer of one file.
type Result struct {
	// Op is "upload" or "download".
	Op string
	// Remote is the remote path of the file (its final name).
	Remote string
	// Local is the local path ("" for an upload from a reader or a
	// download into a writer).
	Local string
	// Size is the file's size in bytes.
	Size int64
	// StartOffset is where this run started: the bytes an earlier run
	// (an interrupted one, or a crash) had left at the destination and
	// that this run proved and kept. Non-zero means the run resumed.
	StartOffset int64
	// Transferred counts every byte moved over the wire, all attempts
	// together.
	Transferred int64
	// Committed is how many bytes the destination holds: Size after a
	// success.
	Committed int64
	// Attempts is 1 plus the number of failed attempts, over all the
	// connections of a segmented transfer.
	Attempts int
	// Segments is how many byte ranges moved at once over their own
	// connections (0 for a single stream).
	Segments int
	// Resumes counts the times the transfer continued from a non-zero
	// offset: after a failed attempt of this run, and once more when the
	// run itself started from an earlier run's bytes (StartOffset > 0).
	Resumes int
	// Restarts counts the times the transfer started again from zero.
	Restarts int
	// ResentBytes is Transferred minus the bytes the transfer had to
	// move: what faults cost.
	ResentBytes int64
	// Duration is the wall time of the call, logins and waiting for a
	// pooled session included.
	Duration time.Duration
	// Verified names how the result was proven: "size", a hash algorithm
	// such as "sha256" or "md5", "readback", or "" when it was not (a
	// failure, or a skipped file: see Skipped).
	Verified string
	// Skipped reports a file a batch did not transfer because its skip
	// policy found it already complete at the destination; SkipReason
	// says on what evidence.
	Skipped    bool
	SkipReason string
	// RemoteModTime is the remote file's modification time as the server
	// reported it once the transfer was verified (zero when unknown).
	RemoteModTime time.Time
}

// resultOf converts the engine's result of one call.
func resultOf(op, remote, local string, r resume.Result, start time.Time) Result {
	res := Result{
		Op: op, Remote: remote, Local: local,
		Size: r.Size, StartOffset: r.StartOffset, Transferred: r.Transferred,
		Attempts: r.Attempts, Segments: r.Segments, Resumes: r.Resumes, Restarts: r.Restarts,
		ResentBytes: r.ResentBytes, Duration: time.Since(start), Verified: r.Verified,
		RemoteModTime: r.RemoteModTime,
	}
	if r.StartOffset > 0 {
		res.Resumes++
	}
	if r.Verified != "" {
		res.Committed = r.Size
	}
	return res
}

// EventKind says what an Event reports.
type EventKind int

// The kinds of Event.
const (
	// EventAttempt: an attempt starts at Offset.
	EventAttempt = EventKind(resume.EventAttempt)
	// EventFailed: an attempt failed with Err after moving Bytes; a
	// retry follows unless the error is final.
	EventFailed = EventKind(resume.EventFailed)
	// EventBackoff: the transfer waits Wait before the next attempt.
	EventBackoff = EventKind(resume.EventBackoff)
	// EventRestart: the transfer starts again from zero (Reason says why).
	EventRestart = EventKind(resume.EventRestart)
	// EventVerified: the result was proven by Method.
	EventVerified = EventKind(resume.EventVerified)
	// EventSingleStream: a segmented transfer goes over one stream
	// instead (Reason says why), said once.
	EventSingleStream = EventKind(resume.EventSingleStream)
	// EventVerifying: a verification that reads the whole file (Method: a
	// hash algorithm or "readback") starts.
	EventVerifying = EventKind(resume.EventVerifying)
)

// String returns the kind's name: "attempt", "failed", "backoff",
// "restart", "verified", "single-stream", "verifying".
func (k EventKind) String() string { return resume.EventKind(k).String() }

// Event is one step of a transfer, delivered to Config.OnEvent.
type Event struct {
	Kind EventKind
	// Path is the remote path of the file the event is about.
	Path    string
	Attempt int           // 1-based attempt number
	Offset  int64         // where the attempt starts (EventAttempt)
	Bytes   int64         // bytes moved by the attempt (EventFailed)
	Wait    time.Duration // EventBackoff
	Err     error         // EventFailed
	Reason  string        // EventRestart, EventSingleStream
	Method  string        // EventVerifying, EventVerified
}

func eventOf(path string, e resume.Event) Event {
	return Event{Kind: EventKind(e.Kind), Path: path, Attempt: e.Attempt, Offset: e.Offset,
		Bytes: e.Bytes, Wait: e.Wait, Err: e.Err, Reason: e.Reason, Method: e.Method}
}

// Error is the error of a failed transfer: it carries the operation, the
// remote path, the bytes committed at the destination and the number of
// attempts, and wraps the cause. Test the cause with errors.Is against the
// sentinels below, fs.ErrNotExist and fs.ErrPermission.
type Error struct {
	// Op is "upload" or "download".
	Op string
	// Path is the remote path.
	Path string
	// Committed is how many bytes the destination holds (the partial
	// file): a later run resumes from what of it it can prove.
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

// errorOf converts an engine error; other errors are wrapped as the
// call's.
func errorOf(op, path string, err error) error {
	if err == nil {
		return nil
	}
	var te *Error
	if errors.As(err, &te) {
		return err
	}
	var re *resume.Error
	if errors.As(err, &re) {
		return &Error{Op: re.Op, Path: re.Path, Committed: re.Committed, Attempts: re.Attempts, Err: re.Err}
	}
	return &Error{Op: op, Path: path, Err: err}
}
