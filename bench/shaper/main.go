// Command shaper runs the test bed's fault proxy (integration/faultproxy)
// as a stand-alone process, for benchmarks driven from a shell script: a
// long link (per-connection rate cap and one-way latency) and/or a cut
// every N bytes.
//
//	shaper -listen 127.0.0.2 -target 127.0.0.1 -ports 2126,30100-30119,2222 \
//	       -rate 12M -latency 10ms [-cut-every 128M -cut-dir down -cut-ports 30100-30119] [-rcvbuf 64K]
//
// It listens on the same port numbers on -listen as it forwards to on
// -target, prints "shaper: ready ..." on stderr once every port listens, and
// runs until SIGTERM or SIGINT (or -timeout, or its parent process exits).
// On exit it prints one JSON object with its counters on stdout (bytes per
// direction, connections, cuts fired, and the bytes per direction the cuts
// dropped inside the proxy: see faultproxy.Stats.DroppedUpstream); SIGUSR1
// prints the same object at any time without stopping. Sizes take the binary suffixes K, M and G.
// Only 127.0.0.0/8 addresses are accepted.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/openhaul/haul/integration/faultproxy"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the parsed command line.
type options struct {
	listen, target string
	ports          []int
	rate           int64
	latency        time.Duration
	cutEvery       int64
	cutDir         faultproxy.Dir
	cutPorts       []int
	cutKind        string
	cutCount       int
	timeout        time.Duration
	orphanExit     bool
	rcvbuf         int64
}

// report is what the shaper prints on SIGUSR1 and on exit.
type report struct {
	Listen          string  `json:"listen"`
	Target          string  `json:"target"`
	Rate            int64   `json:"rate_bytes_per_sec"`
	LatencyMS       float64 `json:"latency_ms"`
	Accepted        int64   `json:"accepted"`
	Live            int64   `json:"live"`
	UpstreamBytes   int64   `json:"upstream_bytes"`
	DownstreamBytes int64   `json:"downstream_bytes"`
	CutEvery        int64   `json:"cut_every"`
	CutKind         string  `json:"cut_kind,omitempty"`
	CutDir          string  `json:"cut_dir,omitempty"`
	Cuts            int     `json:"cuts"`
	// DroppedUp and DroppedDown are the bytes, client to server and
	// server to client, that the cuts discarded inside the proxy (its
	// kernel receive queues, its buffers, unsent bytes of a reset socket):
	// a sender resuming at the receiver's size sends them again.
	DroppedUp   int64  `json:"dropped_upstream_bytes"`
	DroppedDown int64  `json:"dropped_downstream_bytes"`
	RcvBuf      int64  `json:"rcvbuf,omitempty"`
	UptimeMS    int64  `json:"uptime_ms"`
	Reason      string `json:"reason,omitempty"`
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "shaper: %v\n", err)
		return 2
	}
	p, err := faultproxy.New(o.listen, o.target, o.ports...)
	if err != nil {
		fmt.Fprintf(stderr, "shaper: %v\n", err)
		return 1
	}
	p.SetRate(int(min(o.rate, math.MaxInt32)))
	p.SetLatency(o.latency)
	p.SetReadBuffer(int(min(o.rcvbuf, math.MaxInt32)))
	began := time.Now()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCutter(p, o)
	var wg sync.WaitGroup
	if o.cutEvery > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); c.run(ctx) }()
	}
	fmt.Fprintf(stderr, "shaper: ready listen=%s target=%s ports=%d rate=%d latency=%s cut-every=%d cut-kind=%s rcvbuf=%d\n",
		o.listen, o.target, len(o.ports), o.rate, o.latency, o.cutEvery, o.cutKind, o.rcvbuf)

	snapshot := func(reason string) report {
		s := p.Stats()
		r := report{
			Listen: o.listen, Target: o.target, Rate: o.rate,
			LatencyMS: float64(o.latency) / float64(time.Millisecond),
			Accepted:  s.Accepted, Live: s.Live,
			UpstreamBytes: s.Upstream, DownstreamBytes: s.Downstream,
			CutEvery: o.cutEvery, Cuts: c.count(),
			DroppedUp: s.DroppedUpstream, DroppedDown: s.DroppedDownstream, RcvBuf: o.rcvbuf,
			UptimeMS: time.Since(began).Milliseconds(), Reason: reason,
		}
		if o.cutEvery > 0 {
			r.CutKind, r.CutDir = o.cutKind, o.cutDir.String()
		}
		return r
	}
	emit := func(r report) {
		b, _ := json.Marshal(r)
		fmt.Fprintf(stdout, "%s\n", b)
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	defer signal.Stop(sigs)
	var deadline <-chan time.Time
	if o.timeout > 0 {
		t := time.NewTimer(o.timeout)
		defer t.Stop()
		deadline = t.C
	}
	// The parent going away (a killed script) must not leave the proxy
	// holding the ports: poll for re-parenting.
	var orphaned <-chan time.Time
	ppid := os.Getppid()
	if o.orphanExit {
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		orphaned = tk.C
	}

	reason := ""
	for reason == "" {
		select {
		case s := <-sigs:
			if s == syscall.SIGUSR1 {
				emit(snapshot("usr1"))
				continue
			}
			reason = s.String()
		case <-deadline:
			reason = "timeout"
		case <-orphaned:
			if os.Getppid() != ppid {
				reason = "parent exited"
			}
		}
	}
	cancel()
	wg.Wait()
	final := snapshot(reason)
	if err := p.Close(); err != nil {
		fmt.Fprintf(stderr, "shaper: close: %v\n", err)
	}
	emit(final)
	fmt.Fprintf(stderr, "shaper: stopped (%s): accepted=%d up=%d down=%d cuts=%d dropped-up=%d dropped-down=%d\n",
		reason, final.Accepted, final.UpstreamBytes, final.DownstreamBytes, final.Cuts, final.DroppedUp, final.DroppedDown)
	return 0
}

func parse(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("shaper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var ports, rate, cutEvery, cutDir, cutPorts, rcvbuf string
	fs.StringVar(&o.listen, "listen", "127.0.0.2", "loopback address to listen on (same port numbers as the target)")
	fs.StringVar(&o.target, "target", "127.0.0.1", "loopback address of the servers")
	fs.StringVar(&ports, "ports", "2121,30000-30019,2222", "ports to proxy: comma separated, ranges lo-hi")
	fs.StringVar(&rate, "rate", "0", "rate cap per connection and direction, bytes/s (K, M, G: powers of 1024); 0 = none")
	fs.DurationVar(&o.latency, "latency", 0, "one-way delay of every chunk (a round trip gains twice this); 0 = none")
	fs.StringVar(&cutEvery, "cut-every", "0", "cut a connection after every this many bytes in -cut-dir, summed over -cut-ports; 0 = never")
	fs.StringVar(&cutDir, "cut-dir", "down", "direction whose bytes count for cuts: down (server to client) or up")
	fs.StringVar(&cutPorts, "cut-ports", "", "ports whose bytes count for cuts (empty: all proxied ports)")
	fs.StringVar(&o.cutKind, "cut-kind", "alternate", "what a cut does: close (FIN), reset (RST) or alternate (close, reset, close, ...)")
	fs.IntVar(&o.cutCount, "cut-count", 0, "stop cutting after this many cuts; 0 = no limit")
	fs.StringVar(&rcvbuf, "rcvbuf", "0", "SO_RCVBUF of both sockets of each proxied connection, bytes (K, M: powers of 1024), like a middlebox with a small queue; 0 = kernel default (autotuned)")
	fs.DurationVar(&o.timeout, "timeout", 0, "exit after this long; 0 = no limit")
	fs.BoolVar(&o.orphanExit, "orphan-exit", true, "exit when the parent process exits")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() != 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, h := range []string{o.listen, o.target} {
		a, err := netip.ParseAddr(h)
		if err != nil || !a.Is4() || !a.IsLoopback() {
			return o, fmt.Errorf("%q is not an address in 127.0.0.0/8", h)
		}
	}
	if o.listen == o.target {
		return o, errors.New("-listen and -target must differ (the ports are mirrored)")
	}
	var err error
	if o.ports, err = parsePorts(ports); err != nil || len(o.ports) == 0 {
		return o, fmt.Errorf("-ports %q: %v", ports, orEmpty(err))
	}
	if o.rate, err = parseSize(rate); err != nil {
		return o, fmt.Errorf("-rate: %w", err)
	}
	if o.cutEvery, err = parseSize(cutEvery); err != nil {
		return o, fmt.Errorf("-cut-every: %w", err)
	}
	if o.rcvbuf, err = parseSize(rcvbuf); err != nil {
		return o, fmt.Errorf("-rcvbuf: %w", err)
	}
	if o.rcvbuf > math.MaxInt32 {
		return o, fmt.Errorf("-rcvbuf %s: too large", rcvbuf)
	}
	switch cutDir {
	case "down", "downstream":
		o.cutDir = faultproxy.Downstream
	case "up", "upstream":
		o.cutDir = faultproxy.Upstream
	default:
		return o, fmt.Errorf("-cut-dir %q: want down or up", cutDir)
	}
	switch o.cutKind {
	case "close", "reset", "alternate":
	default:
		return o, fmt.Errorf("-cut-kind %q: want close, reset or alternate", o.cutKind)
	}
	if o.cutCount < 0 || o.latency < 0 || o.timeout < 0 {
		return o, errors.New("-cut-count, -latency and -timeout must not be negative")
	}
	if strings.TrimSpace(cutPorts) != "" {
		if o.cutPorts, err = parsePorts(cutPorts); err != nil {
			return o, fmt.Errorf("-cut-ports %q: %v", cutPorts, err)
		}
		for _, cp := range o.cutPorts {
			found := false
			for _, p := range o.ports {
				found = found || p == cp
			}
			if !found {
				return o, fmt.Errorf("-cut-ports: port %d is not in -ports", cp)
			}
		}
	}
	return o, nil
}

func orEmpty(err error) error {
	if err == nil {
		return errors.New("no ports")
	}
	return err
}

// parsePorts reads "2121,30000-30019".
func parsePorts(s string) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(f, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("bad port %q", f)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return nil, fmt.Errorf("bad port range %q", f)
			}
		}
		if a < 1 || b > 65535 || a > b {
			return nil, fmt.Errorf("bad port range %q", f)
		}
		for _, p := range faultproxy.PortRange(a, b) {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// parseSize reads 1000, 64K, 12M, 1G (powers of 1024).
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimSuffix(s, "iB"), "B")
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		}
		if mult != 1 {
			s = s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > math.MaxInt64/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return v * mult, nil
}

// cutter arms the cuts: one repeated fault for a single kind, or one fault
// at a time, re-armed on firing, when the kinds alternate.
type cutter struct {
	p     *faultproxy.Proxy
	o     options
	mu    sync.Mutex
	armed []*faultproxy.Armed
}

func newCutter(p *faultproxy.Proxy, o options) *cutter { return &cutter{p: p, o: o} }

func (c *cutter) fault(kind faultproxy.Kind, repeat int) faultproxy.Fault {
	return faultproxy.Fault{Kind: kind, Dir: c.o.cutDir, Ports: c.o.cutPorts, After: c.o.cutEvery, Repeat: repeat}
}

func (c *cutter) add(a *faultproxy.Armed) {
	c.mu.Lock()
	c.armed = append(c.armed, a)
	c.mu.Unlock()
}

// count returns the cuts fired so far.
func (c *cutter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, a := range c.armed {
		n += a.Count()
	}
	return n
}

// run arms the cuts and returns when ctx is done or the last cut fired.
func (c *cutter) run(ctx context.Context) {
	if c.o.cutKind != "alternate" {
		kind := faultproxy.Close
		if c.o.cutKind == "reset" {
			kind = faultproxy.Reset
		}
		repeat := math.MaxInt32
		if c.o.cutCount > 0 {
			repeat = c.o.cutCount - 1
		}
		a := c.p.Inject(c.fault(kind, repeat))
		c.add(a)
		<-ctx.Done()
		a.Disarm()
		return
	}
	// Alternate: each fault counts from its own Inject, so the bytes
	// forwarded between one firing and the next Inject (microseconds)
	// are not counted; the spacing is After plus that slack.
	kinds := [2]faultproxy.Kind{faultproxy.Close, faultproxy.Reset}
	for i := 0; c.o.cutCount == 0 || i < c.o.cutCount; i++ {
		a := c.p.Inject(c.fault(kinds[i%2], 0))
		c.add(a)
		select {
		case <-a.Fired():
		case <-ctx.Done():
			a.Disarm()
			return
		}
	}
}
