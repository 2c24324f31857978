package ftp_test

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
	"time"
)

// goroutines is a snapshot of the goroutines of the process (system
// goroutines excluded), by id.
type goroutines map[string]goroutine

type goroutine struct {
	state string // "running", "chan receive", "IO wait, 2 minutes", ...
	stack string
}

func snapshotGoroutines() goroutines {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	gs := goroutines{}
	for _, block := range bytes.Split(buf, []byte("\n\n")) {
		// "goroutine 18 [chan receive]:\n..."
		header, _, _ := strings.Cut(string(block), "\n")
		rest, ok := strings.CutPrefix(header, "goroutine ")
		if !ok {
			continue
		}
		id, rest, ok := strings.Cut(rest, " [")
		if !ok {
			continue
		}
		state, _, _ := strings.Cut(rest, "]")
		gs[id] = goroutine{state: state, stack: string(block)}
	}
	return gs
}

// blocked reports whether the goroutine waits for something (a channel, a
// lock, the network, a timer...). A goroutine that has done its last
// observable act (closed its done channel, called wg.Done) and is on its
// way out is running or runnable, never blocked: a leaked one is blocked.
func (g goroutine) blocked() bool {
	st, _, _ := strings.Cut(g.state, ",") // drop ", 2 minutes", ", locked to thread"
	switch st {
	case "running", "runnable", "preempted":
		return false
	}
	return true
}

// checkNoLeak fails t if a goroutine that did not exist in before is
// blocked now. Call it once every goroutine the test started has signalled
// that it finished (Close returned, the fake server's session ended): it
// takes one snapshot and does not wait or poll, so its verdict does not
// depend on how fast the scheduler lets finished goroutines exit.
func checkNoLeak(t *testing.T, before goroutines) {
	t.Helper()
	for id, g := range snapshotGoroutines() {
		if _, old := before[id]; old || !g.blocked() {
			continue
		}
		t.Errorf("goroutine leaked:\n%s", g.stack)
	}
}

// waitSessions waits until the fake server's per-connection goroutines have
// returned (the client closed its connections). The bound only turns a
// goroutine that never ends into a failure instead of a hung test.
func (s *fakeServer) waitSessions(t *testing.T) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the fake server's session did not end after the client closed it")
	}
}

// errOnlyCtx reports its parent's cancellation through Err and Cause only:
// its Done channel is nil, so context.AfterFunc never fires for it. It
// stands for the moment right after cancel() returns, when the Session's
// AfterFunc (which closes the connections) has not been scheduled yet; with
// it a test sees the verdict Close gives in that window every time.
type errOnlyCtx struct{ context.Context }

func (errOnlyCtx) Done() <-chan struct{} { return nil }
