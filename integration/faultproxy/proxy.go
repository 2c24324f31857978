package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// dialTimeout bounds the dial to the target for each accepted connection.
const dialTimeout = 10 * time.Second

// Proxy forwards TCP connections from listenHost:port to targetHost:port for
// a fixed set of ports and injects faults into them. It is safe for
// concurrent use. Close it when done.
type Proxy struct {
	host, target string
	ctx          context.Context
	cancel       context.CancelFunc
	lns          []net.Listener
	wg           sync.WaitGroup
	stats        map[int]*portStats // read-only after New
	rate         atomic.Int64       // bytes per second, 0 = unlimited
	latency      atomic.Int64       // time.Duration
	rcvbuf       atomic.Int64       // SO_RCVBUF of new connections' sockets, 0 = kernel default
	logger       atomic.Pointer[slog.Logger]
	idleDrop     atomic.Int64 // time.Duration, 0 = off (see idle.go)
	idleDrops    atomic.Int64

	mu     sync.Mutex
	closed bool
	links  map[*link]struct{}
	faults []*Armed
	taps   map[tapKey]*Recorder
}

type portStats struct {
	accepted, up, down atomic.Int64
	dropUp, dropDown   atomic.Int64
}

type tapKey struct {
	port int
	dir  Dir
}

// Stats are counters of a proxy, for all its ports or a subset.
type Stats struct {
	// Accepted is the number of client connections accepted.
	Accepted int64
	// Live is the number of connections currently being proxied,
	// blackholed ones included.
	Live int64
	// Upstream and Downstream are the bytes forwarded client to server and
	// server to client.
	Upstream, Downstream int64
	// DroppedUpstream and DroppedDownstream are the bytes, client to server
	// and server to client, that Close and Reset faults discarded inside
	// the proxy when they tore connections down: bytes its kernel had
	// received and acknowledged to the sender but the proxy had not read
	// yet (the receive queue of the socket it reads from), bytes it had
	// read but not yet written onward (its user buffers: at most 8 chunks
	// of 32 KiB in flight, plus the one being read and the rest of the one
	// being written), and, when the onward socket is reset (Reset, or a
	// Close of a socket with unread data, which Linux turns into a reset),
	// bytes written to it that its kernel had not sent yet (the unsent part
	// of its send queue; bytes sent and not yet acknowledged reach the peer
	// before the RST). A sender that resumes from what the receiver has must send
	// these again: they are the proxy's share of the loss of a cut, not
	// the sender's. The kernel queues are read on Linux only (SIOCINQ,
	// SIOCOUTQNSD); bytes that reach the proxy's kernel in the moment between
	// that reading and the close are not counted. Connections closed any
	// other way (by a peer, Release, Close) are not counted.
	DroppedUpstream, DroppedDownstream int64
}

// New listens on listenHost:port for each of ports and forwards every
// accepted connection to targetHost:port. It fails if any port cannot be
// listened on (an error matching syscall.EADDRINUSE when it is taken).
func New(listenHost, targetHost string, ports ...int) (*Proxy, error) {
	if len(ports) == 0 {
		return nil, errors.New("faultproxy: no ports")
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		host: listenHost, target: targetHost, ctx: ctx, cancel: cancel,
		stats: make(map[int]*portStats, len(ports)),
		links: make(map[*link]struct{}),
		taps:  make(map[tapKey]*Recorder),
	}
	for _, port := range ports {
		if port <= 0 || port > 65535 {
			p.closeListeners()
			cancel()
			return nil, fmt.Errorf("faultproxy: invalid port %d", port)
		}
		if p.stats[port] != nil {
			p.closeListeners()
			cancel()
			return nil, fmt.Errorf("faultproxy: duplicate port %d", port)
		}
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(listenHost, strconv.Itoa(port)))
		if err != nil {
			p.closeListeners()
			cancel()
			return nil, fmt.Errorf("faultproxy: %w", err)
		}
		p.lns = append(p.lns, ln)
		p.stats[port] = new(portStats)
	}
	for i, ln := range p.lns {
		p.wg.Add(1)
		go p.serve(ln, ports[i])
	}
	return p, nil
}

// NewLoopback is New on the next loopback address from NextLoopback whose
// ports are all free, so that tests in several processes do not collide on
// the mirrored port numbers. Host reports the address chosen.
func NewLoopback(targetHost string, ports ...int) (*Proxy, error) {
	var err error
	for range loopbackCount {
		var p *Proxy
		p, err = New(NextLoopback(), targetHost, ports...)
		if !errors.Is(err, syscall.EADDRINUSE) {
			return p, err
		}
	}
	return nil, err
}

// PortRange returns the ports lo through hi, both included.
func PortRange(lo, hi int) []int {
	ports := make([]int, 0, max(hi-lo+1, 0))
	for port := lo; port <= hi; port++ {
		ports = append(ports, port)
	}
	return ports
}

// Host returns the address the proxy listens on.
func (p *Proxy) Host() string { return p.host }

// Addr returns the proxy's host:port for one of its ports.
func (p *Proxy) Addr(port int) string { return net.JoinHostPort(p.host, strconv.Itoa(port)) }

// SetLogger makes the proxy log accepted connections and fired faults at
// debug level, and dial failures at warn level. nil turns logging off (the
// default).
func (p *Proxy) SetLogger(l *slog.Logger) { p.logger.Store(l) }

// SetRate limits each direction of each connection to bytesPerSec (it
// applies to live connections too); 0 or less removes the limit.
func (p *Proxy) SetRate(bytesPerSec int) { p.rate.Store(int64(max(bytesPerSec, 0))) }

// SetLatency delays every chunk of data, in both directions, by d after the
// proxy received it (a one-way delay; a request/response round trip gains
// 2d). Up to 8 chunks of 32 KiB are in flight per direction, which caps a
// connection's throughput at about 256 KiB per d. 0 turns it off.
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(max(d, 0))) }

// SetReadBuffer sets the kernel receive buffer (SO_RCVBUF) of both sockets
// of every connection accepted from now on to n bytes, as a middlebox with a
// small queue would have; Linux doubles the value for its bookkeeping and
// turns off receive buffer autotuning for the socket. A smaller buffer
// holds fewer bytes that a cut drops (see Stats.DroppedUpstream) and caps a
// connection's throughput at about one buffer per round trip. 0 or less
// restores the kernel's default (autotuned).
func (p *Proxy) SetReadBuffer(n int) { p.rcvbuf.Store(int64(max(n, 0))) }

// Inject arms a fault and returns its handle. The byte count starts at zero
// now. When several faults fire on the same byte, the first injected one
// decides what happens to the connection; all of them count the firing.
// Inject panics on an invalid Fault (programming error in the test).
func (p *Proxy) Inject(f Fault) *Armed {
	if err := validate(f); err != nil {
		panic(err)
	}
	for _, port := range f.Ports {
		p.mustHave(port)
	}
	f.Ports = slices.Clone(f.Ports)
	a := &Armed{f: f, fired: make(chan struct{}), mu: &p.mu, next: f.After}
	p.mu.Lock()
	p.faults = append(p.faults, a)
	p.mu.Unlock()
	return a
}

// Release closes every blackholed connection (FIN both ways). New
// connections are never blackholed by a fault that has already fired, so
// a client can reconnect before or after Release.
func (p *Proxy) Release() {
	p.mu.Lock()
	var holed []*link
	for l := range p.links {
		if l.holed.Load() {
			holed = append(holed, l)
		}
	}
	p.mu.Unlock()
	for _, l := range holed {
		l.teardown(false)
	}
}

// Tap returns the recorder of the bytes forwarded in dir on port, over
// every connection to that port from now on, in forwarding order. Bytes are
// recorded as they are handed to the destination socket, so a reply to them
// cannot be seen before they are recorded. A recorder keeps everything in
// memory: tap control ports, not bulk data. Repeated
// calls return the same recorder. Tap panics on a port the proxy does not
// serve.
func (p *Proxy) Tap(port int, dir Dir) *Recorder {
	p.mustHave(port)
	p.mu.Lock()
	defer p.mu.Unlock()
	k := tapKey{port, dir}
	r := p.taps[k]
	if r == nil {
		r = new(Recorder)
		p.taps[k] = r
	}
	return r
}

// Stats returns the counters summed over ports, or over every port of the
// proxy when none is given.
func (p *Proxy) Stats(ports ...int) Stats {
	var s Stats
	in := func(port int) bool { return len(ports) == 0 || slices.Contains(ports, port) }
	for port, ps := range p.stats {
		if in(port) {
			s.Accepted += ps.accepted.Load()
			s.Upstream += ps.up.Load()
			s.Downstream += ps.down.Load()
			s.DroppedUpstream += ps.dropUp.Load()
			s.DroppedDownstream += ps.dropDown.Load()
		}
	}
	p.mu.Lock()
	for l := range p.links {
		if in(l.port) {
			s.Live++
		}
	}
	p.mu.Unlock()
	return s
}

// UpstreamAddrs returns the local addresses ("ip:port") of the proxy's
// live connections to the server for the given proxied ports (all when
// none are given): what the server sees as its peers, so a test can find
// the server process serving exactly this proxy's sessions.
func (p *Proxy) UpstreamAddrs(ports ...int) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for l := range p.links {
		if len(ports) == 0 || slices.Contains(ports, l.port) {
			out = append(out, l.server.LocalAddr().String())
		}
	}
	return out
}

// Close stops listening, closes every live connection (blackholed ones
// included) and waits for all of the proxy's goroutines to end. It is safe
// to call more than once.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	live := make([]*link, 0, len(p.links))
	for l := range p.links {
		live = append(live, l)
	}
	p.mu.Unlock()
	p.cancel()
	err := p.closeListeners()
	for _, l := range live {
		l.teardown(false)
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) closeListeners() error {
	var errs []error
	for _, ln := range p.lns {
		if err := ln.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *Proxy) mustHave(port int) {
	if p.stats[port] == nil {
		panic(fmt.Sprintf("faultproxy: port %d is not proxied by %s", port, p.host))
	}
}

func (p *Proxy) log() *slog.Logger {
	if l := p.logger.Load(); l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

func (p *Proxy) serve(ln net.Listener, port int) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.ctx.Err() == nil {
				p.log().Warn("faultproxy: accept failed, port no longer served", "port", port, "err", err)
			}
			return
		}
		p.stats[port].accepted.Add(1)
		p.wg.Add(1)
		go p.handle(c.(*net.TCPConn), port)
	}
}

func (p *Proxy) handle(client *net.TCPConn, port int) {
	defer p.wg.Done()
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(p.ctx, "tcp", net.JoinHostPort(p.target, strconv.Itoa(port)))
	if err != nil {
		p.log().Warn("faultproxy: dial target", "port", port, "err", err)
		_ = client.SetLinger(0) // the client sees a refused connection
		_ = client.Close()
		return
	}
	server := c.(*net.TCPConn)
	if n := p.rcvbuf.Load(); n > 0 {
		for _, s := range []*net.TCPConn{client, server} {
			if err := s.SetReadBuffer(int(n)); err != nil {
				p.log().Warn("faultproxy: set SO_RCVBUF", "port", port, "bytes", n, "err", err)
			}
		}
	}
	l := newLink(p, port, client, server)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.teardown(false)
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()
	p.log().Debug("faultproxy: accepted", "port", port, "client", client.RemoteAddr())
	p.watchIdle(l)
	l.run()
}

// reserve decides how many of the next n bytes in dir on port may be
// forwarded, counts them against every matching fault, and returns the kind
// of the fault that fires right after them, if any.
func (p *Proxy) reserve(port int, dir Dir, n int) (int, Kind) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := int64(n)
	for _, a := range p.faults {
		if a.matches(port, dir) {
			k = min(k, a.next-a.seen)
		}
	}
	var kind Kind
	for _, a := range p.faults {
		if !a.matches(port, dir) {
			continue
		}
		a.seen += k
		if a.seen == a.next {
			a.fire()
			if kind == 0 {
				kind = a.f.Kind
			}
			p.log().Debug("faultproxy: fault fired", "kind", a.f.Kind, "dir", dir, "port", port,
				"bytes", a.seen, "count", a.count)
		}
	}
	p.faults = slices.DeleteFunc(p.faults, func(a *Armed) bool { return a.done })
	return int(k), kind
}

// forwarded accounts n bytes forwarded in dir on port.
func (p *Proxy) forwarded(port int, dir Dir, n int64) {
	if dir == Upstream {
		p.stats[port].up.Add(n)
	} else {
		p.stats[port].down.Add(n)
	}
}

// dropped accounts n bytes a cut discarded in dir on port.
func (p *Proxy) dropped(port int, dir Dir, n int64) {
	if n <= 0 {
		return
	}
	if dir == Upstream {
		p.stats[port].dropUp.Add(n)
	} else {
		p.stats[port].dropDown.Add(n)
	}
}

// tap records b, about to be written in dir on port, if that is tapped.
func (p *Proxy) tap(port int, dir Dir, b []byte) {
	p.mu.Lock()
	r := p.taps[tapKey{port, dir}]
	p.mu.Unlock()
	if r != nil {
		r.write(b)
	}
}

func (p *Proxy) unregister(l *link) {
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// Recorder holds the bytes a Tap has seen. It is safe for concurrent use.
type Recorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *Recorder) write(b []byte) {
	r.mu.Lock()
	r.buf.Write(b)
	r.mu.Unlock()
}

// Bytes returns a copy of the bytes recorded so far.
func (r *Recorder) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

// String returns the bytes recorded so far as a string.
func (r *Recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

// Len returns the number of bytes recorded so far.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Len()
}

// loopbackCount is the number of addresses NextLoopback cycles through.
const loopbackCount = 253

var loopbackNext atomic.Uint32

// NextLoopback returns the next address of 127.0.0.2 through 127.0.0.254,
// unique within the process until it wraps around after 253 calls. Addresses
// of 127.0.0.0/8 need no configuration on Linux. Another process may hold
// the same address and ports: NewLoopback skips such addresses.
func NextLoopback() string {
	n := (loopbackNext.Add(1) - 1) % loopbackCount
	return fmt.Sprintf("127.0.0.%d", n+2)
}
