// Package doctor diagnoses, from the client, why large transfers to or from
// a server die: login policy, capabilities, binary mode, the data channel
// (EPSV/PASV and the address PASV announces), TLS, resume, free space,
// idle timeouts of the server and of the path, connection limits, the
// path's round trip and throughput, and this machine's TCP keepalive.
//
// Run connects exactly as a transfer would (transfer.DialerFor: the same
// credentials, known_hosts and certificate rules), with one login attempt
// per connection and a rejected login never retried. It is read-only by
// default: probes that write (Options.WriteDir), hold connections idle
// (Options.ProbeIdle) or open several connections (Options.ProbeLimit) run
// only when asked, are bounded in time and count, and remove what they
// created.
//
// Each Finding has a status (ok, warn, fail, info, skip), its evidence (what
// the server said or did) and, when something is wrong, the fix: a server
// setting or a haul flag.
package doctor

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/openhaul/haul/protocol"
	"github.com/openhaul/haul/transfer"
)

// Status is the verdict of one finding.
type Status string

// The statuses, from best to worst; Info and Skip say nothing is wrong.
const (
	OK   Status = "ok"
	Info Status = "info"
	Skip Status = "skip"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Finding is one diagnosis.
type Finding struct {
	// ID names the check ("login", "pasv-address", "idle-control", ...).
	ID string `json:"id"`
	// Status is the verdict.
	Status Status `json:"status"`
	// Summary says what was found, in one line.
	Summary string `json:"summary"`
	// Evidence is what the server said or did (server text is escaped).
	Evidence string `json:"evidence,omitempty"`
	// Fix is the server setting or haul flag that helps, when something
	// is wrong or could be better.
	Fix string `json:"fix,omitempty"`
	// Data holds the measured values, for scripts ("seconds", "count",
	// "address", ...).
	Data map[string]any `json:"data,omitempty"`
}

// Report is the result of Run.
type Report struct {
	// URL is the server's URL, without password.
	URL string `json:"url"`
	// Protocol is "ftp", "ftps", "ftps+implicit" or "sftp".
	Protocol string `json:"protocol"`
	// Started is when Run began; Duration how long it took.
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"-"`
	// Findings are in the order they were made.
	Findings []Finding `json:"findings"`
	// Err is what stopped the diagnosis early (a rejected login, an
	// unverified server identity), or nil. Its finding is in Findings.
	Err error `json:"-"`
}

// Failed reports whether any finding failed.
func (r *Report) Failed() bool {
	for _, f := range r.Findings {
		if f.Status == Fail {
			return true
		}
	}
	return false
}

// Find returns the first finding with id, and false when there is none.
func (r *Report) Find(id string) (Finding, bool) {
	for _, f := range r.Findings {
		if f.ID == id {
			return f, true
		}
	}
	return Finding{}, false
}

func (r *Report) add(f Finding) { r.Findings = append(r.Findings, f) }

// WriteText writes the human report: one line per finding (status, id,
// summary), then its evidence and fix indented.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "haul doctor %s (%s, %.1fs)\n", r.URL, r.Protocol, r.Duration.Seconds())
	for _, f := range r.Findings {
		fmt.Fprintf(&b, "%-4s  %-16s %s\n", f.Status, f.ID, f.Summary)
		if f.Evidence != "" {
			fmt.Fprintf(&b, "      %-16s evidence: %s\n", "", oneLine(f.Evidence))
		}
		if f.Fix != "" {
			fmt.Fprintf(&b, "      %-16s fix: %s\n", "", oneLine(f.Fix))
		}
	}
	counts := map[Status]int{}
	for _, f := range r.Findings {
		counts[f.Status]++
	}
	fmt.Fprintf(&b, "%d ok, %d warn, %d fail\n", counts[OK], counts[Warn], counts[Fail])
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as one JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	type out struct {
		*Report
		OK         bool  `json:"ok"`
		DurationMS int64 `json:"duration_ms"`
	}
	return json.NewEncoder(w).Encode(out{Report: r, OK: !r.Failed() && r.Err == nil, DurationMS: r.Duration.Milliseconds()})
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\r", "")
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", " | ")
}

// Bounds of the optional probes.
const (
	// MaxProbeIdle bounds Options.ProbeIdle.
	MaxProbeIdle = 10 * time.Minute
	// MaxProbeLimit bounds Options.ProbeLimit.
	MaxProbeLimit = 64
	// idleConns is how many connections the idle search holds at once.
	idleConns = 3
)

// Options selects the optional probes. The zero value runs the read-only
// checks only.
type Options struct {
	// ReadPath names a remote file to read for the resume and
	// throughput probes. Empty means the first regular file of the login
	// directory's listing, or the test file of WriteDir.
	ReadPath string
	// WriteDir, when set, is a remote directory where a small test file is
	// written, resumed (REST+STOR, SFTP offset writes), renamed and
	// removed, and whose free space is asked (SFTP statvfs, FTP AVBL).
	WriteDir string
	// ProbeIdle, when positive, measures (up to this long, at most
	// MaxProbeIdle) how long an idle control connection survives, and an
	// idle data connection where a large enough file can be read.
	ProbeIdle time.Duration
	// ProbeLimit, when positive, opens up to this many connections at
	// once (at most MaxProbeLimit) to count how many the server accepts.
	ProbeLimit int
	// Logger receives debug logs. Nil means none.
	Logger *slog.Logger
}

// ErrOptions marks invalid Options.
var ErrOptions = errors.New("doctor: invalid options")

func (o Options) validate() error {
	switch {
	case o.ProbeIdle < 0 || o.ProbeIdle > MaxProbeIdle:
		return fmt.Errorf("%w: probe-idle %v not in 0-%v", ErrOptions, o.ProbeIdle, MaxProbeIdle)
	case o.ProbeIdle > 0 && o.ProbeIdle < 2*time.Second:
		return fmt.Errorf("%w: probe-idle %v: want at least 2s", ErrOptions, o.ProbeIdle)
	case o.ProbeLimit < 0 || o.ProbeLimit > MaxProbeLimit:
		return fmt.Errorf("%w: probe-limit %d not in 0-%d", ErrOptions, o.ProbeLimit, MaxProbeLimit)
	case strings.ContainsAny(o.ReadPath+o.WriteDir, "\r\n\x00"):
		return fmt.Errorf("%w: a path contains CR, LF or NUL", ErrOptions)
	}
	return nil
}

// Run diagnoses the server named by rawURL, connecting as a transfer with
// cfg would. It returns an error only when it cannot start (a bad URL, bad
// options or configuration); a rejected login or an unverified server is a
// failed finding and Report.Err. ctx bounds everything.
func Run(ctx context.Context, rawURL string, cfg transfer.Config, opts Options) (*Report, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	ep, err := transfer.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	d := &doc{ep: ep, cfg: cfg, opts: opts, log: opts.Logger,
		rep: &Report{URL: ep.String(), Protocol: ep.Scheme, Started: time.Now()}}
	if _, err := transfer.DialerFor(ep, cfg); err != nil {
		return nil, err
	}
	d.localKeepAlive()
	switch ep.Scheme {
	case "sftp":
		d.runSFTP(ctx)
	default:
		d.runFTP(ctx)
	}
	d.rep.Duration = time.Since(d.rep.Started)
	return d.rep, nil
}

// doc is one run.
type doc struct {
	ep   transfer.Endpoint
	cfg  transfer.Config
	opts Options
	log  *slog.Logger
	rep  *Report

	mu       sync.Mutex
	tlsFirst *tls.ConnectionState // the first TLS handshake (the control connection's)

	rtt      time.Duration // median round trip of a command, 0 if unknown
	maxConns int           // connections the server accepted at once, 0 if unknown
}

// dialer returns the transfer's dialer for cfg with keepalive set to ka
// (0: the configured one).
func (d *doc) dialer(ka time.Duration) (dial func(ctx context.Context) (any, error)) {
	cfg := d.cfg
	if ka != 0 {
		cfg.KeepAlive = ka
	}
	dl, err := transfer.DialerFor(d.ep, cfg)
	return func(ctx context.Context) (any, error) {
		if err != nil {
			return nil, err
		}
		return dl(ctx)
	}
}

func seconds(t time.Duration) float64 {
	return float64(t.Round(100*time.Millisecond)) / float64(time.Second)
}

// dialBusy calls dial, and again on a new connection (up to 10 s in all)
// while the server refuses it as busy (FTP 421 "too many connections",
// or a refused TCP connect): connections the doctor just closed may still
// count against a per-address limit for a moment. A rejected login is
// never retried.
func dialBusy[T any](ctx context.Context, dial func(context.Context) (T, error)) (T, error) {
	deadline := time.Now().Add(10 * time.Second)
	wait := 100 * time.Millisecond
	for {
		s, err := dial(ctx)
		if err == nil || !busy(err) || time.Now().After(deadline) {
			return s, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return s, err
		case <-t.C:
		}
		wait = min(2*wait, time.Second)
	}
}

// busy reports a refusal that a new connection may get past soon.
func busy(err error) bool {
	var pe *protocol.Error
	if errors.Is(err, protocol.ErrAuth) || !errors.Is(err, protocol.ErrTransient) {
		return false
	}
	return errors.As(err, &pe) && (pe.Code == 421 || pe.Code == 0)
}
