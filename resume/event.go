package resume

import "time"

// EventKind says what happened.
type EventKind int

// The events a transfer reports through Config.OnEvent.
const (
	// EventAttempt: an attempt starts at Offset.
	EventAttempt EventKind = iota + 1
	// EventFailed: an attempt failed with Err after moving Bytes.
	EventFailed
	// EventBackoff: the engine waits Wait before the next attempt.
	EventBackoff
	// EventRestart: the transfer starts again from zero (Reason says why).
	EventRestart
	// EventVerified: the result was verified by Method.
	EventVerified
	// EventSingleStream: a segmented upload was asked for, but the server
	// cannot take one file over several connections (Reason says why); the
	// upload goes over one stream.
	EventSingleStream
	// EventVerifying: a verification that reads the whole file (Method: a
	// hash algorithm or "readback") starts; EventVerified follows when it
	// succeeds. A check of sizes alone reports only EventVerified.
	EventVerifying
)

// String returns the event kind's name.
func (k EventKind) String() string {
	switch k {
	case EventAttempt:
		return "attempt"
	case EventFailed:
		return "failed"
	case EventBackoff:
		return "backoff"
	case EventRestart:
		return "restart"
	case EventVerified:
		return "verified"
	case EventSingleStream:
		return "single-stream"
	case EventVerifying:
		return "verifying"
	}
	return "unknown"
}

// Event is one step of a transfer, for logging and monitoring.
type Event struct {
	Kind    EventKind
	Attempt int           // 1-based attempt number
	Offset  int64         // where the attempt starts (EventAttempt)
	Bytes   int64         // bytes moved by the attempt (EventFailed)
	Wait    time.Duration // EventBackoff
	Err     error         // EventFailed
	Reason  string        // EventRestart, EventSingleStream
	Method  string        // EventVerifying, EventVerified
}

// Result describes a finished transfer.
type Result struct {
	// Size is the file's size.
	Size int64
	// StartOffset is where the first attempt started (non-zero when an
	// earlier run left a partial file).
	StartOffset int64
	// Transferred counts every byte moved over the wire, all attempts
	// together.
	Transferred int64
	// Attempts is 1 plus the number of failed attempts, over all the
	// connections of a segmented transfer (1 when nothing failed).
	Attempts int
	// Segments is how many byte ranges moved at once over their own
	// connections (0 for a single stream).
	Segments int
	// Resumes counts attempts that continued from a non-zero offset after
	// an earlier attempt of this transfer failed.
	Resumes int
	// Restarts counts times the transfer started again from zero.
	Restarts int
	// ResentBytes is Transferred minus the bytes the transfer had to
	// move: what faults cost.
	ResentBytes int64
	// Duration is the wall time of the whole transfer.
	Duration time.Duration
	// Verified names how the result was checked: "size", or a hash
	// algorithm such as "sha256".
	Verified string
	// RemoteModTime is the remote file's modification time as the server
	// reported it once the transfer was verified (zero when unknown).
	RemoteModTime time.Time
}
