package faultproxy

import (
	"fmt"
	"slices"
	"sync"
)

// Kind is what a fault does to the connection that carries its triggering
// byte.
type Kind int

const (
	// Close forwards the triggering byte, waits (bounded) until the peer
	// has acknowledged every byte already forwarded to it, then shuts down
	// both sockets: each peer sees an orderly end of stream (FIN). A peer
	// that still sends afterwards may get a reset from its kernel, as with
	// any closed socket; so does a peer whose bytes the proxy's kernel had
	// received but the proxy had not read yet (Linux resets a socket closed
	// with unread data). Stats.DroppedUpstream and DroppedDownstream count
	// such bytes.
	Close Kind = iota + 1
	// Reset forwards the triggering byte, waits (bounded) until the peer
	// has acknowledged every byte already forwarded to it, then aborts both
	// sockets with SO_LINGER 0, so both peers get a TCP RST (ECONNRESET).
	Reset
	// Blackhole forwards the triggering byte and then nothing more in
	// either direction, keeping both sockets open without a timeout, as a
	// NAT that forgot the flow does. The proxy stops reading too, so the
	// sender's window fills up. Release or Proxy.Close ends such
	// connections. At most the one chunk (<= 32 KiB) already being written
	// in the opposite direction when the fault fires still goes through.
	Blackhole
)

// String returns the kind's name.
func (k Kind) String() string {
	switch k {
	case Close:
		return "close"
	case Reset:
		return "reset"
	case Blackhole:
		return "blackhole"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Dir is a direction of flow through the proxy.
type Dir int

const (
	// Downstream is server to client.
	Downstream Dir = iota + 1
	// Upstream is client to server.
	Upstream
)

// String returns the direction's name.
func (d Dir) String() string {
	switch d {
	case Downstream:
		return "downstream"
	case Upstream:
		return "upstream"
	}
	return fmt.Sprintf("Dir(%d)", int(d))
}

// Fault describes one fault to inject. Kind and Dir are required.
type Fault struct {
	// Kind is what happens when the fault fires.
	Kind Kind
	// Dir is the direction whose bytes are counted.
	Dir Dir
	// Ports restricts the fault to connections accepted on these proxied
	// ports; nil means every port of the proxy. The byte count is shared by
	// all of them (a control port and a passive range form one group).
	Ports []int
	// After is the number of bytes forwarded in Dir, summed over all
	// matching connections since Inject, after which the fault fires on the
	// connection that carried the After-th byte. Exactly After bytes are
	// forwarded before it. After == 0 fires on the first byte that arrives
	// in Dir, which is then not forwarded.
	After int64
	// Repeat is how many more times the fault fires, every After further
	// bytes (counted over the remaining and new matching connections).
	// 0 means once.
	Repeat int
}

// Armed is a fault injected into a proxy.
type Armed struct {
	f     Fault
	fired chan struct{}
	mu    *sync.Mutex // the proxy's; guards the fields below

	seen, next int64
	count      int
	done       bool
}

// Fired returns a channel closed when the fault fires for the first time.
func (a *Armed) Fired() <-chan struct{} { return a.fired }

// Count returns how many times the fault has fired so far.
func (a *Armed) Count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.count
}

// Disarm stops the fault from firing again. Connections it already hit stay
// as they are (use Proxy.Release for blackholed ones).
func (a *Armed) Disarm() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.done = true
}

func (a *Armed) matches(port int, dir Dir) bool {
	return !a.done && a.f.Dir == dir && (a.f.Ports == nil || slices.Contains(a.f.Ports, port))
}

// fire records one firing; the caller holds a.mu.
func (a *Armed) fire() {
	a.count++
	if a.count == 1 {
		close(a.fired)
	}
	if a.count > a.f.Repeat {
		a.done = true
		return
	}
	a.next += a.f.After
}

func validate(f Fault) error {
	switch {
	case f.Kind < Close || f.Kind > Blackhole:
		return fmt.Errorf("faultproxy: invalid fault kind %v", f.Kind)
	case f.Dir != Downstream && f.Dir != Upstream:
		return fmt.Errorf("faultproxy: invalid fault direction %v", f.Dir)
	case f.After < 0 || f.Repeat < 0:
		return fmt.Errorf("faultproxy: negative After (%d) or Repeat (%d)", f.After, f.Repeat)
	}
	return nil
}
