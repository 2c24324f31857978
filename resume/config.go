package resume

import (
	"log/slog"
	"time"

	"golang.org/x/time/rate"
)

// Defaults applied by Config for its zero-valued fields.
const (
	// DefaultMaxAttempts is the number of attempts in a row without
	// progress after which a transfer gives up.
	DefaultMaxAttempts = 6
	// DefaultStallTimeout is how long an attempt may move no byte (and
	// finish no step) before it is aborted and resumed on a new
	// connection. It catches blackholed connections (a NAT that forgot
	// the flow) that TCP would otherwise sit on for many minutes.
	DefaultStallTimeout = 60 * time.Second
	// DefaultInitialBackoff is the first wait before a reconnection.
	DefaultInitialBackoff = time.Second
	// DefaultOverlap is how many bytes before the resume point are
	// compared with the source before appending.
	DefaultOverlap = 64 << 10
	// maxSourceChanges bounds restarts caused by a changing source.
	maxSourceChanges = 3
	// DefaultMaxBackoff caps the wait between reconnections.
	DefaultMaxBackoff = 60 * time.Second
)

// Config tunes the engine. The zero value is ready to use: every zero
// field means the documented default.
type Config struct {
	// MaxAttempts is how many attempts in a row may fail without moving
	// a byte before the transfer gives up with ErrRetriesExhausted. An
	// attempt that made progress resets the count (and the backoff), so a
	// long transfer over a flaky link never runs out of attempts while it
	// advances. Zero means DefaultMaxAttempts.
	MaxAttempts int

	// StallTimeout aborts an attempt that moved no byte and completed no
	// step for this long. Zero means DefaultStallTimeout; a negative
	// value disables the watchdog.
	StallTimeout time.Duration

	// InitialBackoff and MaxBackoff bound the exponential backoff (with
	// ±50% jitter, factor 2, no elapsed-time cap) between attempts. Zero
	// means DefaultInitialBackoff and DefaultMaxBackoff.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration

	// Overlap is how many bytes before the resume point are compared
	// with the source before a resumed transfer appends: a partial that
	// does not end with the source's bytes (written in ASCII mode,
	// zero-filled by the server, another writer) is not resumed but
	// restarted from zero. Zero means DefaultOverlap; negative disables.
	Overlap int64

	// Verify says how the finished file is proven identical. The zero
	// value, VerifyAuto, uses a server-side hash where the server offers
	// one and sizes otherwise.
	Verify VerifyPolicy

	// TempPath, for uploads, is where the data goes until it is complete
	// and verified; then it is renamed to the remote path, replacing any
	// file there. Empty means the remote path itself (no rename).
	TempPath string

	// Segments is how many connections a transfer uses at once, each
	// moving its own byte range and resuming it on its own: downloads on
	// every protocol, uploads over range writers (SFTP always; FTP when a
	// probe shows the server writes past the end of a file and lets
	// several connections write it, as vsftpd with lock_upload_files=NO;
	// otherwise the upload falls back to one stream). Zero means auto:
	// one, unless the server's round trip is at least 10 ms and the file
	// holds several MinSegmentSize ranges, then up to 4; FTP uploads
	// segment only when Segments asks for it. More than MaxSegments means
	// MaxSegments. The extra connections log in only after a first login
	// succeeded, and only as many as the ranges need. Segmented transfers
	// need StatePath.
	Segments int
	// MinSegmentSize is the smallest range worth its own connection. Zero
	// means DefaultMinSegmentSize.
	MinSegmentSize int64
	// StatePath is the local file where a segmented transfer records how
	// far each range got, so that an interrupted run resumes every range.
	// Empty disables segmented transfers. Segmented uploads also need
	// TempPath and a session that implements protocol.RangeWriter (SFTP);
	// they write to TempPath + ".seg", which may hold holes until every
	// range is written.
	StatePath string

	// RateLimit caps the transfer's throughput, in bytes per second, all
	// segments together (golang.org/x/time/rate). Zero means no limit.
	RateLimit int64
	// Limiter, when set, paces the transfer instead of RateLimit: one
	// limiter shared by several transfers caps them all together (a
	// batch's workers).
	Limiter *rate.Limiter
	// limiter is the shared limiter built from RateLimit.
	limiter func() *rate.Limiter

	// NoSync skips the fsync of a single-stream download's data before
	// it is verified: the caller makes the data durable itself (a batch
	// syncs its file system once at its end). State records still sync
	// what they claim.
	NoSync bool

	// Logger receives one record per attempt, failure and backoff. Nil
	// means no logging.
	Logger *slog.Logger

	// Progress, when set, is called from the copying goroutine after
	// every chunk with the bytes now present at the destination and the
	// total. It must return quickly: it runs on the transfer's hot path.
	Progress func(done, total int64)

	// OnEvent, when set, is called synchronously for every Event. It must
	// return quickly.
	OnEvent func(Event)
}

func (c Config) maxAttempts() int {
	if c.MaxAttempts <= 0 {
		return DefaultMaxAttempts
	}
	return c.MaxAttempts
}

func (c Config) stallTimeout() time.Duration {
	if c.StallTimeout == 0 {
		return DefaultStallTimeout
	}
	return c.StallTimeout
}

func (c Config) initialBackoff() time.Duration {
	if c.InitialBackoff <= 0 {
		return DefaultInitialBackoff
	}
	return c.InitialBackoff
}

func (c Config) maxBackoff() time.Duration {
	if c.MaxBackoff <= 0 {
		return DefaultMaxBackoff
	}
	return c.MaxBackoff
}

func (c Config) overlap() int64 {
	switch {
	case c.Overlap == 0:
		return DefaultOverlap
	case c.Overlap < 0:
		return 0
	}
	return c.Overlap
}

// withLimiter returns c with the rate limiter built once, so that every
// runner of one transfer (all its segments) shares it.
func (c Config) withLimiter() Config {
	if c.Limiter != nil && c.limiter == nil {
		l := c.Limiter
		c.limiter = func() *rate.Limiter { return l }
		return c
	}
	if c.RateLimit <= 0 || c.limiter != nil {
		return c
	}
	burst := int(min(max(c.RateLimit/10, 32<<10), 1<<20))
	l := rate.NewLimiter(rate.Limit(c.RateLimit), burst)
	c.limiter = func() *rate.Limiter { return l }
	return c
}

func (c Config) limiterOrNil() *rate.Limiter {
	if c.limiter == nil {
		return nil
	}
	return c.limiter()
}

func (c Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}
