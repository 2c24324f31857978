package doctor

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// idleOutcome is what one idle probe saw.
type idleOutcome struct {
	wait     time.Duration
	measured bool          // the probe ran (its connection was opened)
	survived bool          // it answered after waiting wait
	closedAt time.Duration // > 0: the server closed it (or said so) after this long idle
	silent   bool          // a request after the wait got no answer: dropped on the way
	evidence string
}

// idleProbe opens a connection, leaves it idle for wait, and reports.
type idleProbe func(ctx context.Context, wait time.Duration) idleOutcome

// idleResult is the conclusion of idleSearch.
type idleResult struct {
	// kind is "survived" (alive after max), "server" (the server closed
	// it after at), "silent" (dropped without a word between lo and hi),
	// or "unmeasured".
	kind     string
	at       time.Duration // server: when; silent: the estimate (lo+hi)/2
	lo, hi   time.Duration
	evidence string
}

// idleSearch finds how long an idle connection survives, up to max, with
// at most conns connections at once: a first round of probes idle for
// max/conns, 2max/conns, ... max; a server that closes the connection
// gives the time exactly; a silent drop is bracketed, then a second round
// splits the bracket again. Probes idle longer than one that failed are
// cancelled (they would fail too). Time: about two rounds of the drop time
// plus the answer timeout.
func idleSearch(ctx context.Context, max time.Duration, conns int, probe idleProbe) idleResult {
	lo, hi := time.Duration(0), max+time.Nanosecond
	var waits []time.Duration
	for i := 1; i <= conns; i++ {
		waits = append(waits, max*time.Duration(i)/time.Duration(conns))
	}
	var any bool
	for round := 0; round < 2 && len(waits) > 0; round++ {
		outs := idleRound(ctx, waits, probe)
		for _, o := range outs {
			if !o.measured {
				continue
			}
			any = true
			switch {
			case o.closedAt > 0:
				return idleResult{kind: "server", at: o.closedAt, lo: o.closedAt, hi: o.closedAt, evidence: o.evidence}
			case o.survived:
				lo = maxDur(lo, o.wait)
			default:
				if o.wait < hi {
					hi = o.wait
				}
			}
		}
		if hi > max {
			break // nothing failed
		}
		// Second round: split (lo, hi).
		waits = nil
		step := (hi - lo) / time.Duration(conns+1)
		if step < 250*time.Millisecond {
			break
		}
		for i := 1; i <= conns; i++ {
			waits = append(waits, lo+step*time.Duration(i))
		}
	}
	switch {
	case !any:
		return idleResult{kind: "unmeasured"}
	case hi > max:
		return idleResult{kind: "survived", lo: lo, at: lo}
	}
	return idleResult{kind: "silent", lo: lo, hi: hi, at: (lo + hi) / 2,
		evidence: fmt.Sprintf("alive after %.1fs idle, no answer after %.1fs idle", seconds(lo), seconds(hi))}
}

// idleRound runs one probe per wait at once; when one fails, those idle
// longer are cancelled.
func idleRound(ctx context.Context, waits []time.Duration, probe idleProbe) []idleOutcome {
	type run struct {
		cancel context.CancelFunc
		wait   time.Duration
	}
	var mu sync.Mutex
	runs := make([]run, len(waits))
	outs := make([]idleOutcome, len(waits))
	var wg sync.WaitGroup
	for i, w := range waits {
		pctx, cancel := context.WithCancel(ctx)
		runs[i] = run{cancel: cancel, wait: w}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			o := probe(pctx, w)
			o.wait = w
			if pctx.Err() != nil && ctx.Err() == nil {
				o = idleOutcome{wait: w} // cancelled: says nothing
			}
			mu.Lock()
			outs[i] = o
			if o.measured && !o.survived {
				for _, r := range runs {
					if r.wait > w {
						r.cancel()
					}
				}
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.SortFunc(outs, func(a, b idleOutcome) int { return int(a.wait - b.wait) })
	return outs
}

func maxDur(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

// answerTimeout is how long a request after an idle wait may take before
// the connection counts as silently dropped.
func (d *doc) answerTimeout() time.Duration {
	return maxDur(2*time.Second, 10*d.rtt)
}

// idleFinding turns an idle search into a finding about connections of
// the kind what ("control connection", "SFTP connection").
func (d *doc) idleFinding(id, what string, r idleResult) Finding {
	f := Finding{ID: id, Data: map[string]any{"kind": r.kind}}
	ka := d.cfg.KeepAlive
	if ka == 0 {
		ka = 15 * time.Second
	}
	switch r.kind {
	case "unmeasured":
		f.Status, f.Summary = Skip, "no probe connection could be opened"
	case "survived":
		f.Status = OK
		f.Summary = fmt.Sprintf("an idle %s survived %.0fs (the longest probed)", what, seconds(r.lo))
		f.Data["seconds"] = seconds(r.lo)
	case "server":
		f.Status = Warn
		f.Data["seconds"] = seconds(r.at)
		f.Summary = fmt.Sprintf("the server closes an idle %s after %.1fs", what, seconds(r.at))
		f.Evidence = r.evidence
		f.Fix = fmt.Sprintf("server: raise its idle timeout (vsftpd idle_session_timeout, proftpd TimeoutIdle, pure-ftpd -I, sshd ClientAliveInterval×ClientAliveCountMax); haul: a pooled session idle that long is found dead and replaced, so no flag is needed; other clients: keep a transfer's control connection busy (NOOP) more often than every %.0fs", seconds(r.at)/2)
	case "silent":
		f.Status = Fail
		f.Data["seconds"] = seconds(r.at)
		f.Data["low_seconds"], f.Data["high_seconds"] = seconds(r.lo), seconds(r.hi)
		f.Summary = fmt.Sprintf("something on the path silently drops an idle %s after about %.1fs (between %.1fs and %.1fs): a NAT or firewall idle timeout", what, seconds(r.at), seconds(r.lo), seconds(r.hi))
		f.Evidence = r.evidence + " (no reply, no reset: the classic NAT/firewall timeout behind 426 and \"connection reset\" on long transfers)"
		fix := fmt.Sprintf("network: raise the NAT/firewall idle timeout above the longest transfer; haul: keepalive every %.0fs or less (Config.KeepAlive; now %v) and --stall-timeout below %.0fs", max(1, seconds(r.lo)/2), ka, max(1, seconds(r.lo)))
		f.Fix = fix
	}
	return f
}
