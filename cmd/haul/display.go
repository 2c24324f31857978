package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/openhaul/haul/transfer"
)

// The display shows what a run does, on stderr. On a terminal each file
// has a bar (github.com/vbauerster/mpb: it keeps any number of bars at the
// bottom of the screen and prints lines above them, which a batch needs)
// with its name, bytes done and total, rate and ETA, or what it is doing
// instead (reconnecting, verifying); elsewhere the same lines are printed
// without bars. Lines: one per reconnect, one per restart from zero, the
// summary of a success; with -v every attempt and verification too.

// display is the output of one run on stderr.
type display struct {
	w       io.Writer
	u       units
	verbose int
	quiet   bool          // -q: no reconnect or restart lines
	multi   bool          // several files: lines name theirs
	p       *mpb.Progress // the bars, nil when stderr is no terminal (or -q, --json)
	mu      sync.Mutex    // serializes writes when p is nil or done
	closed  bool          // p was waited for
	now     func() time.Time
}

// newDisplay returns the display of a run; bars only when tty (opts
// are for tests).
func newDisplay(w io.Writer, tty bool, u units, verbose int, quiet bool, opts ...mpb.ContainerOption) *display {
	d := &display{w: w, u: u, verbose: verbose, quiet: quiet, now: time.Now}
	if tty {
		opts = append([]mpb.ContainerOption{mpb.WithOutput(w), mpb.WithWidth(100), mpb.WithRefreshRate(150 * time.Millisecond)}, opts...)
		d.p = mpb.New(opts...)
	}
	return d
}

// isTerminal says whether w is an interactive terminal (not merely a
// character device such as /dev/null): bars need one, with a size.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return false
	}
	_, _, err := term.GetSize(int(f.Fd()))
	return err == nil
}

// Write prints b above the bars (or straight to stderr without them): the
// logger of -v and -vv writes here.
func (d *display) Write(b []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.p != nil && !d.closed {
		if n, err := d.p.Write(b); err == nil {
			return n, nil
		}
	}
	return d.w.Write(b)
}

// linef prints one line, "haul: " and the text.
func (d *display) linef(format string, args ...any) {
	_, _ = io.WriteString(d, "haul: "+fmt.Sprintf(format, args...)+"\n")
}

// close completes the display: every bar is drawn one last time.
func (d *display) close() {
	d.mu.Lock()
	p := d.p
	d.mu.Unlock()
	if p != nil {
		p.Wait()
	}
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
}

// fileView is one file on the display: its progress callback and events.
type fileView struct {
	d    *display
	name string // as the bar and lines show it
	bar  *mpb.Bar

	mu     sync.Mutex
	done   int64
	total  int64 // -1 until known
	meter  meter
	pushed time.Time
	state  string    // what the file waits for, instead of rate and ETA
	until  time.Time // end of a backoff, for a countdown
	lost   *loss     // the failure a reconnect line will name
	method string    // verification method, once known
	last   time.Time // last progress
}

// loss is a connection lost, until the attempt that resumes after it.
type loss struct {
	done, total int64
	err         error
	failures    int
	at          time.Time
}

// file adds a file to the display; name is what the user knows it by.
func (d *display) file(name string) *fileView {
	v := &fileView{d: d, name: name, total: -1, last: d.now()}
	if d.p != nil {
		v.bar = d.p.New(0, mpb.BarStyle().Lbound("[").Filler("=").Tip(">").Padding("-").Rbound("]"),
			// In a batch a file's bar goes when the file is done: the
			// total stays, and a failure gets its line.
			mpb.BarOptional(mpb.BarRemoveOnComplete(), d.multi),
			mpb.PrependDecorators(decor.Name(shorten(name, 32), decor.WC{C: decor.DSyncWidthR | decor.DextraSpace})),
			mpb.AppendDecorators(
				decor.Any(func(decor.Statistics) string { return v.counters() }, decor.WC{C: decor.DextraSpace}),
				decor.Any(func(decor.Statistics) string { return v.status() }, decor.WC{C: decor.DindentRight | decor.DextraSpace}),
			),
		)
	}
	return v
}

// shorten keeps the end of a long name, which tells files apart.
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return "…" + string(r[len(r)-n+1:])
}

// progress is the transfer's Progress callback: it runs on the hot path,
// so the bar is told at most every 100 ms.
//
// Locks: the bar's decorators take v.mu while mpb draws, and a call on a
// bar waits for the drawing to end: no bar (nor the display) is called
// with v.mu held.
func (v *fileView) progress(done, total int64) {
	now := v.d.now()
	v.mu.Lock()
	v.done, v.total, v.last = done, total, now
	v.meter.sample(now, done)
	if done == total && v.state == "" {
		v.state = "verifying"
	}
	push := v.bar != nil && (now.Sub(v.pushed) >= 100*time.Millisecond || done == total)
	if push {
		v.pushed = now
	}
	v.mu.Unlock()
	if push {
		v.bar.SetTotal(total, false)
		v.bar.SetCurrent(done)
	}
}

// counters is the bar's "426 MiB / 760 MiB  56 %".
func (v *fileView) counters() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.total < 0 {
		return ""
	}
	return fmt.Sprintf("%s / %s  %s  ", v.d.u.size(v.done), v.d.u.size(v.total), percent(v.done, v.total))
}

// status is the bar's rate and ETA, or what the file waits for.
func (v *fileView) status() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.d.now()
	switch {
	case v.state == "reconnecting" && v.until.After(now):
		return fmt.Sprintf("reconnecting in %s", v.until.Sub(now).Round(time.Second))
	case v.state == "verifying" && v.method != "":
		return "verifying (" + v.method + ")"
	case v.state != "":
		return v.state
	case v.total < 0:
		return "connecting"
	case now.Sub(v.last) >= 3*time.Second:
		return fmt.Sprintf("no data for %s", now.Sub(v.last).Round(time.Second))
	}
	return v.meter.rateETA(v.d.u, v.total-v.done)
}

// meter estimates a rate from samples of a growing count of bytes.
type meter struct {
	sampled  time.Time
	sampleAt int64   // bytes at sampled
	rate     float64 // bytes per second, a moving average
}

// sample records that done bytes were reached at now.
func (m *meter) sample(now time.Time, done int64) {
	if m.sampled.IsZero() || done < m.sampleAt {
		m.sampled, m.sampleAt = now, done
		return
	}
	dt := now.Sub(m.sampled)
	if dt < 500*time.Millisecond {
		return
	}
	inst := float64(done-m.sampleAt) / dt.Seconds()
	if m.rate == 0 {
		m.rate = inst
	} else {
		m.rate = 0.4*inst + 0.6*m.rate
	}
	m.sampled, m.sampleAt = now, done
}

// reset forgets the samples (a new attempt starts elsewhere).
func (m *meter) reset() { *m = meter{} }

// rateETA is "61.8 MiB/s  ETA 5s" for left bytes to go (no ETA when
// left is negative: unknown).
func (m *meter) rateETA(u units, left int64) string {
	if m.rate <= 0 {
		return "" // not measured yet
	}
	if left < 0 {
		return u.rate(m.rate)
	}
	eta := time.Duration(float64(left) / m.rate * float64(time.Second)).Round(time.Second)
	return fmt.Sprintf("%s  ETA %s", u.rate(m.rate), eta)
}

// percent is done of total as "56 %" (rounded down: 100 % means all).
func percent(done, total int64) string {
	if total <= 0 {
		return "100 %"
	}
	return fmt.Sprintf("%d %%", done*100/total)
}

// prefix is how lines about this file start: its name in a batch.
func (v *fileView) prefix() string {
	if v.d.multi {
		return v.name + ": "
	}
	return ""
}

// event is the transfer's OnEvent callback. Lines are printed after the
// lock is released: the bars' decorators take it while the display waits.
func (v *fileView) event(e transfer.Event) {
	if line := v.apply(e); line != "" && (!v.d.quiet || v.d.verbose > 0) {
		v.d.linef("%s%s", v.prefix(), line)
	}
}

// apply records e and returns the line it prints, if any.
func (v *fileView) apply(e transfer.Event) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	d := v.d
	switch e.Kind {
	case transfer.EventAttempt:
		v.state, v.last = "", d.now()
		v.meter.reset()
		if l := v.lost; l != nil {
			v.lost = nil
			return reconnectLine(d.u, l, e.Offset, d.now())
		}
		if d.verbose > 0 {
			return fmt.Sprintf("attempt %d starts at %s", e.Attempt, d.u.size(e.Offset))
		}
	case transfer.EventFailed:
		if v.lost == nil {
			// The line names what lost the connection, not what later
			// attempts to reconnect ran into.
			v.lost = &loss{done: v.done, total: v.total, err: e.Err, at: d.now()}
		}
		v.lost.failures++
		v.state = "connection lost"
	case transfer.EventBackoff:
		v.state, v.until = "reconnecting", d.now().Add(e.Wait)
	case transfer.EventRestart:
		return "restarting from zero: " + e.Reason
	case transfer.EventVerifying:
		v.state, v.method = "verifying", e.Method
		if d.verbose > 0 {
			return "verifying by " + e.Method
		}
	case transfer.EventVerified:
		v.state, v.method = "verified by "+e.Method, e.Method
		if d.verbose > 0 {
			return "verified by " + e.Method
		}
	}
	return ""
}

// finish ends the file's bar: complete on success, kept as it stands on a
// failure.
func (v *fileView) finish(ok bool) {
	if v.bar == nil {
		return
	}
	v.mu.Lock()
	done, total := v.done, v.total
	if !ok && !strings.HasPrefix(v.state, "verified") {
		v.state = "failed"
	}
	v.mu.Unlock()
	v.bar.SetTotal(total, false)
	v.bar.SetCurrent(done)
	if ok {
		v.bar.SetTotal(-1, true)
	} else {
		v.bar.Abort(v.d.multi)
	}
}

// reconnectLine is the line a reconnect shows: where the connection was
// lost, why, and where the transfer resumes.
func reconnectLine(u units, l *loss, offset int64, now time.Time) string {
	var b strings.Builder
	if l.total >= 0 {
		fmt.Fprintf(&b, "connection lost at %s (%s of %s): %v", percent(l.done, l.total), u.size(l.done), u.size(l.total), oneLine(l.err))
	} else {
		fmt.Fprintf(&b, "could not start: %v", oneLine(l.err))
	}
	fmt.Fprintf(&b, "; resuming at %s", u.size(offset))
	if l.failures > 1 {
		fmt.Fprintf(&b, " after %d failed attempts in %s", l.failures, now.Sub(l.at).Round(time.Second))
	}
	return b.String()
}

// oneLine is err's text on one line (errors.Join puts each on its own).
func oneLine(err error) string {
	if err == nil {
		return "unknown error"
	}
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

// summaryLine is the one line a success prints: what moved where, how fast,
// what faults cost and how it was verified.
func summaryLine(u units, op, local, remote string, res transfer.Result) string {
	var b strings.Builder
	if op == "put" {
		fmt.Fprintf(&b, "put %s -> %s: ", local, remote)
	} else {
		fmt.Fprintf(&b, "got %s -> %s: ", remote, local)
	}
	b.WriteString(u.size(res.Size))
	if res.StartOffset > 0 {
		fmt.Fprintf(&b, " (resumed at %s)", u.size(res.StartOffset))
	}
	fmt.Fprintf(&b, " in %s", res.Duration.Round(time.Millisecond*100))
	if res.Transferred > 0 {
		fmt.Fprintf(&b, ", %s", u.rateOf(res.Transferred, res.Duration))
	}
	if res.Resumes > 0 {
		fmt.Fprintf(&b, ", %d %s", res.Resumes, plural(res.Resumes, "reconnect", "reconnects"))
	}
	if res.Restarts > 0 {
		fmt.Fprintf(&b, ", %d %s from zero", res.Restarts, plural(res.Restarts, "restart", "restarts"))
	}
	if res.ResentBytes > 0 {
		fmt.Fprintf(&b, ", %s sent again", u.size(res.ResentBytes))
	}
	if res.Segments > 1 {
		fmt.Fprintf(&b, ", %d segments", res.Segments)
	}
	if res.Verified != "" {
		fmt.Fprintf(&b, ", verified by %s", res.Verified)
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
