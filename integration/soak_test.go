package integration_test

// The kill-and-rerun soak (issue 9, "What must show"): haul never reports
// "ok": true with a wrong file, however a run is killed and rerun.
//
// Each round makes a fresh source file (seeded random data with long zero
// runs mixed in: zeros defeat weak overlap checks, since a hole left on the
// server reads as zeros too), runs the CLI through a fault proxy, blackholes
// the data direction at a random byte count between 5% and 95% of the file,
// SIGKILLs the CLI the moment the fault fires, releases the proxy, waits
// until the server's sessions of the killed run have ended (so the rerun
// sees what the server got, however fast it wrote it) and reruns the same
// command until it says ok (at most soakMaxReruns reruns). A round
// passes when the final file is byte-identical to the source and every run
// that said ok had a byte-identical file at that moment. An ok with a wrong
// file is a corrupt result: the failure this test exists to catch.
//
//	HAUL_SOAK_ROUNDS  rounds per cell (default 2; the full soak uses 30)
//	HAUL_SOAK_SEED    seed of the whole run (decimal or 0x hex; default
//	                  time-based, always logged); a round's inputs (size,
//	                  content, fault byte) depend only on the seed, the cell
//	                  and the round number, so -run of one cell reproduces
//	                  the same rounds. Where the kill lands in the client's
//	                  work is timing, so an outcome may not repeat.
//
// Each CLI run gets its own HOME and XDG_CACHE_HOME per cell (the state of
// segmented uploads lives there), --min-segment-size 2M so that 4 segments
// really run on these files, and --stall-timeout 5s. Nothing waits on a
// timer: the kill follows the fault, the rerun follows the server's end.
//
// 30 rounds take longer than go test's default 10 minutes: pass -timeout
// (about 15 minutes on a 2-CPU machine: -timeout 30m).
// The cells run one after another (the servers and the machine are shared).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/openhaul/haul/integration/faultproxy"
	"github.com/openhaul/haul/integration/testbed"
)

const (
	soakDefaultRounds = 2
	soakMinSize       = 12 << 20
	soakMaxSize       = 24 << 20
	// soakRunTimeout bounds each CLI run.
	soakRunTimeout = 60 * time.Second
	// soakMaxReruns bounds the reruns after the killed run.
	soakMaxReruns = 3
	// soakQuiesceTries × 10 ms bounds the wait for the proxy's connections
	// to end after a kill (the server has then seen every byte it will get).
	soakQuiesceTries = 1000
)

// soakCell is one protocol × direction × segment count.
type soakCell struct {
	name   string // e.g. "sftp-put-seg4"
	scheme string // ftp, ftps, sftp
	op     string // put, get
	segs   int
	srv    testbed.Server
}

func soakCells(env *testbed.Env) []soakCell {
	var cells []soakCell
	for _, proto := range []string{"ftp", "ftps", "sftp"} {
		for _, op := range []string{"put", "get"} {
			for _, segs := range []int{1, 4} {
				var srv testbed.Server
				switch proto {
				case "ftp":
					srv = env.VsftpdPlain
					if op == "put" && segs > 1 {
						// Stock vsftpd locks uploads: haul would fall back to
						// one stream. This one lets the segmented path run.
						srv = env.VsftpdNoLock
					}
				case "ftps":
					srv = env.VsftpdFTPS
				case "sftp":
					srv = env.SSHDNoExec
				}
				cells = append(cells, soakCell{
					name: fmt.Sprintf("%s-%s-seg%d", proto, op, segs), scheme: proto, op: op, segs: segs, srv: srv,
				})
			}
		}
	}
	return cells
}

// soakTally is what one cell found.
type soakTally struct {
	rounds     int
	corrupt    int // a run said ok with a wrong file
	unfinished int // no run said ok within the reruns
	multi      int // rounds that needed more than one rerun
	noKill     int // the first run ended before the fault fired
	redone     []int64
	durations  []time.Duration
	bad        []string // "round N (seed): what"
}

func TestKillAndRerunSoak(t *testing.T) {
	env := testbed.Require(t)
	rounds := soakEnvInt(t, "HAUL_SOAK_ROUNDS", soakDefaultRounds)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("HAUL_SOAK_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatalf("HAUL_SOAK_SEED=%q: %v", s, err)
		}
		seed = v
	}
	line := fmt.Sprintf("soak: HAUL_SOAK_SEED=%d HAUL_SOAK_ROUNDS=%d", seed, rounds)
	t.Log(line)
	if !testing.Verbose() {
		fmt.Fprintln(os.Stderr, line)
	}
	if env.SSHDNoExec.Port == 0 {
		msg := "the test bed has no SSHD_NOEXEC server (started by an older up.sh): restart it with `make down && make up`"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	bin := cliBinary(t)
	cells := soakCells(env)
	tallies := make([]*soakTally, len(cells))
	start := time.Now()
	for i, c := range cells {
		tl := &soakTally{}
		tallies[i] = tl
		t.Run(c.name, func(t *testing.T) {
			(&soakRig{t: t, env: env, bin: bin, cell: c, seed: seed, tally: tl}).run(rounds)
		})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "kill-and-rerun soak summary (HAUL_SOAK_SEED=%d, %d rounds per cell, %v in all)\n", seed, rounds, time.Since(start).Round(time.Second))
	fmt.Fprintf(&b, "%-14s %6s %7s %10s %8s %6s %14s %14s %9s\n",
		"cell", "rounds", "corrupt", "unfinished", ">1rerun", "nokill", "redone median", "redone max", "s/round")
	for i, c := range cells {
		tl := tallies[i]
		med, mx := soakMedianMax(tl.redone)
		fmt.Fprintf(&b, "%-14s %6d %7d %10d %8d %6d %14s %14s %9.1f\n",
			c.name, tl.rounds, tl.corrupt, tl.unfinished, tl.multi, tl.noKill, soakMiB(med, len(tl.redone)), soakMiB(mx, len(tl.redone)),
			soakMeanSeconds(tl.durations))
	}
	for i, c := range cells {
		for _, s := range tallies[i].bad {
			fmt.Fprintf(&b, "  %s: %s\n", c.name, s)
		}
	}
	t.Log(b.String())
}

// soakRig runs the rounds of one cell through one proxy.
type soakRig struct {
	t     *testing.T
	env   *testbed.Env
	bin   string
	cell  soakCell
	seed  uint64
	tally *soakTally

	proxy    *faultproxy.Proxy
	data     []int    // ports that carry file data
	cliEnv   []string // the CLI's environment
	cache    string   // the CLI's XDG_CACHE_HOME
	baseArgs []string // flags shared by every run
}

func (r *soakRig) run(rounds int) {
	t, c := r.t, r.cell
	r.proxy, r.data = soakProxy(t, c.srv)
	// A cache dir and home of this cell's own: the state files of
	// segmented uploads live there, and must not leak between tests.
	home := t.TempDir()
	r.cache = filepath.Join(home, "cache")
	r.cliEnv = append(os.Environ(),
		"HAUL_PASSWORD="+r.env.Password,
		"HOME="+home,
		"XDG_CACHE_HOME="+r.cache)
	r.baseArgs = []string{"--json", "--segments", strconv.Itoa(c.segs), "--min-segment-size", "2M", "--stall-timeout", "5s"}
	switch c.scheme {
	case "sftp":
		r.baseArgs = append(r.baseArgs, "--identity", r.env.SSHKeyFile, "--known-hosts", r.env.KnownHostsFile)
	case "ftps":
		r.baseArgs = append(r.baseArgs, "--ca-file", r.env.CAFile)
	}
	for round := range rounds {
		if d, ok := t.Deadline(); ok && time.Until(d) < 2*soakRunTimeout {
			t.Errorf("stopping after %d of %d rounds: the test deadline is near (raise go test -timeout)", round, rounds)
			break
		}
		r.round(round)
	}
	tl := r.tally
	med, mx := soakMedianMax(tl.redone)
	t.Logf("%s: %d rounds, %d corrupt, %d unfinished, %d needed >1 rerun, %d ended before the fault; bytes redone per round (forwarded in the data direction over all runs minus the file size): median %s, max %s; %.1f s per round",
		c.name, tl.rounds, tl.corrupt, tl.unfinished, tl.multi, tl.noKill, soakMiB(med, len(tl.redone)), soakMiB(mx, len(tl.redone)), soakMeanSeconds(tl.durations))
}

// soakRun is the outcome of one CLI run.
type soakRun struct {
	code    int
	rep     cliReport
	json    bool // stdout held one JSON report
	killed  bool // we SIGKILLed it when the fault fired
	timeout bool // its context ran out
	stderr  string
	elapsed time.Duration
}

func (x soakRun) String() string {
	switch {
	case x.killed && !x.json:
		return fmt.Sprintf("SIGKILLed after %v", x.elapsed.Round(time.Millisecond))
	case x.timeout:
		return fmt.Sprintf("timed out after %v", x.elapsed.Round(time.Millisecond))
	case !x.json:
		return fmt.Sprintf("exit %d without a JSON report after %v", x.code, x.elapsed.Round(time.Millisecond))
	case x.rep.OK:
		k := ""
		if x.killed {
			k = ", then SIGKILLed"
		}
		return fmt.Sprintf("ok in %v (attempts %d, resumes %d, resent %d, verified %s%s)",
			x.elapsed.Round(time.Millisecond), x.rep.Attempts, x.rep.Resumes, x.rep.ResentBytes, x.rep.Verified, k)
	}
	kind, msg := "", ""
	if x.rep.Error != nil {
		kind, msg = x.rep.Error.Kind, x.rep.Error.Message
	}
	return fmt.Sprintf("exit %d (%s) after %v: %s", x.code, kind, x.elapsed.Round(time.Millisecond), msg)
}

// typed reports whether the run ended on its own with one of the CLI's
// exit codes and its JSON report: worth another rerun.
func (x soakRun) typed() bool {
	if x.killed || x.timeout || !x.json || x.rep.OK {
		return false
	}
	return slices.Contains([]int{1, 2, 3, 4, 5, 6, 7, 130}, x.code)
}

// exec runs the CLI with args; when fired closes first, it calls onFired
// and SIGKILLs the CLI.
func (r *soakRig) exec(args []string, fired <-chan struct{}, onFired func()) soakRun {
	ctx, cancel := context.WithTimeout(context.Background(), soakRunTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, args...)
	cmd.Env = r.cliEnv
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	var x soakRun
	select {
	case err = <-done:
	case <-fired:
		onFired()
		kerr := cmd.Process.Kill()
		err = <-done
		// Kill fails only when the process had already ended by itself.
		x.killed = kerr == nil
	}
	x.elapsed = time.Since(start)
	x.stderr = errb.String()
	x.timeout = ctx.Err() != nil && !x.killed
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		x.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL && !x.timeout {
			x.killed = true
		}
	default:
		r.t.Fatalf("waiting for the CLI: %v", err)
	}
	// Parsed even after a kill: a run that printed its report just before
	// the kill landed has said what it said.
	x.json = json.Unmarshal(out.Bytes(), &x.rep) == nil
	return x
}

func (r *soakRig) round(round int) {
	t, c, tl := r.t, r.cell, r.tally
	rs := soakRoundSeed(r.seed, c.name, round)
	id := fmt.Sprintf("round %d (HAUL_SOAK_SEED=%d, round seed %#x)", round, r.seed, rs)
	rng := rand.New(rand.NewPCG(rs, rs^0x9e3779b97f4a7c15))
	size := soakMinSize + rng.Int64N(soakMaxSize-soakMinSize+1)
	faultAt := size*5/100 + rng.Int64N(size*90/100+1)
	start := time.Now()

	dir, err := os.MkdirTemp(t.TempDir(), "round-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "src.bin")
	sum := soakWriteFile(t, src, rng, size)
	name := fmt.Sprintf("soak-%s-%d-%d.bin", c.name, round, rs%1_000_000)
	remoteLocal := filepath.Join(c.srv.Root, name)
	defer soakRemoveRemote(t, c.srv.Root, name)
	soakRemoveRemote(t, c.srv.Root, name)
	url := fmt.Sprintf("%s://%s@%s:%d/%s", c.scheme, r.env.User, r.proxy.Host(), c.srv.Port, name)
	var args []string
	var result string // the file that must equal src
	dirn := faultproxy.Upstream
	if c.op == "put" {
		args = append(append([]string{"put"}, r.baseArgs...), src, url)
		result = remoteLocal
	} else {
		soakStage(t, r.env, src, remoteLocal)
		result = filepath.Join(dir, "got.bin")
		args = append(append([]string{"get"}, r.baseArgs...), url, result)
		dirn = faultproxy.Downstream
	}

	before := r.proxy.Stats(r.data...)
	armed := r.proxy.Inject(faultproxy.Fault{Kind: faultproxy.Blackhole, Dir: dirn, Ports: r.data, After: faultAt})
	var runs []soakRun
	corrupt := false
	// check hashes the result right after a run said ok.
	check := func(i int) {
		got, n, ok := soakHash(result)
		if ok && got == sum && n == size {
			return
		}
		corrupt = true
		what := fmt.Sprintf("%s: run %d said ok but the result is wrong: %s", id, i, soakDescribe(src, result, size, n, ok))
		t.Errorf("CORRUPT %s %s (%s)", c.name, what, runs[i])
		tl.bad = append(tl.bad, "CORRUPT "+what)
	}

	var upstream []string
	first := r.exec(args, armed.Fired(), func() { upstream = r.proxy.UpstreamAddrs() })
	armed.Disarm()
	runs = append(runs, first)
	if first.rep.OK {
		check(0)
	}
	// The blackholed connection lives on at the server until the path
	// comes back: let it go, and wait until the server's sessions of the
	// killed run have ended, so that the rerun finds everything the
	// server got, and the round does not depend on how fast it wrote it.
	sessions := soakSessionPids(c.srv.Host, upstream)
	r.proxy.Release()
	quiet := r.quiesce(sessions)
	left := r.leftovers(remoteLocal, result)
	if !first.killed {
		tl.noKill++
		t.Logf("%s: the first run ended before the fault at byte %d fired: %s", id, faultAt, first)
	}
	reruns := 0
	for !runs[len(runs)-1].rep.OK && reruns < soakMaxReruns {
		if last := runs[len(runs)-1]; reruns > 0 && !last.typed() {
			break
		}
		x := r.exec(args, nil, nil)
		runs = append(runs, x)
		reruns++
		if x.rep.OK {
			check(len(runs) - 1)
		}
	}
	r.quiesce(nil)
	after := r.proxy.Stats(r.data...)
	moved := after.Upstream - before.Upstream
	if dirn == faultproxy.Downstream {
		moved = after.Downstream - before.Downstream
	}
	redone := moved - size

	final := runs[len(runs)-1]
	tl.rounds++
	tl.durations = append(tl.durations, time.Since(start))
	if reruns > 1 {
		tl.multi++
	}
	if final.rep.OK {
		tl.redone = append(tl.redone, redone)
	}
	switch got, n, ok := soakHash(result); {
	case corrupt:
		tl.corrupt++
	case !final.rep.OK:
		tl.unfinished++
		what := fmt.Sprintf("%s: no run said ok in %d reruns (last: %s; result: %s)", id, reruns, final, soakDescribe(src, result, size, n, ok))
		t.Errorf("UNFINISHED %s %s\nstderr of the last run:\n%s", c.name, what, soakTail(final.stderr, 2000))
		tl.bad = append(tl.bad, "UNFINISHED "+what)
	case !ok || got != sum || n != size:
		// Right when the run said ok, wrong now: something wrote after.
		tl.corrupt++
		what := fmt.Sprintf("%s: the result changed after the last run said ok: %s", id, soakDescribe(src, result, size, n, ok))
		t.Errorf("CORRUPT %s %s", c.name, what)
		tl.bad = append(tl.bad, "CORRUPT "+what)
	}
	if c.scheme == "sftp" && final.rep.OK && final.rep.Verified != "size" {
		t.Errorf("%s: verified %q on SSHD_NOEXEC, want size (is exec refused?)", id, final.rep.Verified)
	}
	var desc []string
	for i, x := range runs {
		desc = append(desc, fmt.Sprintf("run %d: %s", i, x))
	}
	q := ""
	if !quiet {
		q = " (the killed run's connections or server sessions did not all end within 10 s)"
	}
	t.Logf("%s: %d bytes, blackhole %s at byte %d (%.0f%%)%s; %s; %d server processes of the killed run awaited; left after the kill: %s; redone %d bytes; %v",
		id, size, dirn, faultAt, 100*float64(faultAt)/float64(size), q, strings.Join(desc, "; "), len(sessions), left, redone, time.Since(start).Round(time.Millisecond))
}

// quiesce waits, bounded, until the proxy holds no connection and none of
// the server processes in sessions is alive.
func (r *soakRig) quiesce(sessions []int) bool {
	for range soakQuiesceTries {
		if r.proxy.Stats().Live == 0 && !slices.ContainsFunc(sessions, soakAlive) {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// soakSessionPids returns the server processes serving the connections
// whose client ends (the proxy's side) are addrs, found by their sockets
// (ss), with all their descendants (OpenSSH's internal-sftp runs in a
// child of the connection's process, which holds no socket): only this
// run's sessions, never the listener or another test's. host is the
// server's address, which the proxy dials from too.
func soakSessionPids(host string, addrs []string) []int {
	var filter []string
	for _, a := range addrs {
		if i := strings.LastIndexByte(a, ':'); i >= 0 {
			filter = append(filter, "dport = :"+a[i+1:])
		}
	}
	if len(filter) == 0 {
		return nil
	}
	out, err := exec.Command("ss", "-tanpH",
		fmt.Sprintf("( src %s and dst %s ) and ( %s )", host, host, strings.Join(filter, " or "))).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, m := range soakPidRE.FindAllSubmatch(out, -1) {
		if pid, err := strconv.Atoi(string(m[1])); err == nil && pid != os.Getpid() && !slices.Contains(pids, pid) {
			pids = append(pids, pid)
		}
	}
	// Descendants, from /proc's parent links.
	parent := map[int]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": comm may hold spaces and parens.
		i := bytes.LastIndexByte(b, ')')
		pid, err1 := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		f := strings.Fields(string(b[i+1:]))
		if i < 0 || err1 != nil || len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			parent[pid] = ppid
		}
	}
	for added := true; added; {
		added = false
		for pid, ppid := range parent {
			if slices.Contains(pids, ppid) && !slices.Contains(pids, pid) {
				pids = append(pids, pid)
				added = true
			}
		}
	}
	return pids
}

var soakPidRE = regexp.MustCompile(`pid=(\d+)`)

// soakAlive reports whether pid is a live process (not a zombie).
func soakAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || !bytes.HasPrefix(bytes.TrimSpace(b[i+1:]), []byte("Z"))
}

// leftovers describes what a killed run left: the files beside the remote
// and the local result (partials, state files) with their sizes, and how
// many files the CLI's cache dir holds (segmented uploads' state).
func (r *soakRig) leftovers(remoteLocal, result string) string {
	var parts []string
	pats := []string{remoteLocal + "*"}
	if r.cell.op == "get" {
		pats = []string{result + "*"} // beside remoteLocal: only the staged source
	}
	for _, pat := range pats {
		m, _ := filepath.Glob(pat)
		for _, f := range m {
			if fi, err := os.Stat(f); err == nil {
				parts = append(parts, fmt.Sprintf("%s=%d", filepath.Base(f), fi.Size()))
			}
		}
	}
	n := 0
	_ = filepath.WalkDir(r.cache, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	if len(parts) == 0 {
		parts = append(parts, "nothing")
	}
	return fmt.Sprintf("%s, %d file(s) in the cache dir", strings.Join(parts, " "), n)
}

// soakProxy puts a fault proxy in front of srv on one of 127.0.0.2-9: the
// FTPS certificate and the known_hosts file name only 127.0.0.1-9, and the
// CLI verifies both against the URL's host. It returns the proxy and the
// ports that carry file data (the passive range for FTP, the SSH port).
func soakProxy(t *testing.T, srv testbed.Server) (*faultproxy.Proxy, []int) {
	t.Helper()
	ports := []int{srv.Port}
	data := []int{srv.Port}
	if srv.PasvMin > 0 {
		data = faultproxy.PortRange(srv.PasvMin, srv.PasvMax)
		ports = append(ports, data...)
	}
	var err error
	for i := 2; i <= 9; i++ {
		var p *faultproxy.Proxy
		p, err = faultproxy.New(fmt.Sprintf("127.0.0.%d", i), srv.Host, ports...)
		if err == nil {
			t.Cleanup(func() { p.Close() })
			return p, data
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	t.Fatalf("no fault proxy on 127.0.0.2-9 for %s: %v", srv.Name, err)
	return nil, nil
}

// soakWriteFile writes size bytes to path and returns their SHA-256:
// random data from rng, a third of it in zero runs of 64 KiB to 2 MiB
// (longer than the 64 KiB overlap check), the rest in random runs of
// 16 KiB to 1 MiB, at unaligned lengths.
func soakWriteFile(t *testing.T, path string, rng *rand.Rand, size int64) [32]byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	var key [32]byte
	for i := 0; i < len(key); i += 8 {
		binary.LittleEndian.PutUint64(key[i:], rng.Uint64())
	}
	cc := rand.NewChaCha8(key)
	buf := make([]byte, 64<<10)
	zeros := make([]byte, len(buf))
	for left := size; left > 0; {
		zero := rng.IntN(3) == 0
		n := 16<<10 + rng.Int64N(1<<20)
		if zero {
			n = 64<<10 + rng.Int64N(2<<20-64<<10)
		}
		n = min(n, left)
		left -= n
		for n > 0 {
			k := min(n, int64(len(buf)))
			p := zeros[:k]
			if !zero {
				p = buf[:k]
				_, _ = cc.Read(p)
			}
			if _, err := w.Write(p); err != nil {
				t.Fatal(err)
			}
			n -= k
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// soakStage puts src on the server as the file a download fetches, owned
// by the test user.
func soakStage(t *testing.T, env *testbed.Env, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if u, err := user.Lookup(env.User); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		_ = os.Chown(dst, uid, gid)
	}
}

// soakRemoveRemote removes name and everything haul keeps beside it
// (name.part, name.part.seg, ...) from a server's root.
func soakRemoveRemote(t *testing.T, root, name string) {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(root, name) + "*")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range matches {
		if err := os.Remove(m); err != nil && !os.IsNotExist(err) {
			t.Errorf("removing %s: %v", m, err)
		}
	}
}

// soakHash returns the SHA-256 and size of path; ok is false when it
// cannot be read.
func soakHash(path string) (sum [32]byte, n int64, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return sum, 0, false
	}
	defer f.Close()
	h := sha256.New()
	n, err = io.Copy(h, f)
	if err != nil {
		return sum, n, false
	}
	return [32]byte(h.Sum(nil)), n, true
}

// soakDescribe says how the result differs from the source: missing, its
// size, the first differing byte and how many 64 KiB blocks differ.
func soakDescribe(src, result string, size, n int64, ok bool) string {
	if !ok {
		return "no readable file"
	}
	a, err1 := os.ReadFile(src)
	b, err2 := os.ReadFile(result)
	if err1 != nil || err2 != nil {
		return fmt.Sprintf("%d bytes (want %d), unreadable: %v %v", n, size, err1, err2)
	}
	first := -1
	blocks, zeroed := 0, 0
	const bs = 64 << 10
	for off := 0; off < min(len(a), len(b)); off += bs {
		end := min(off+bs, len(a), len(b))
		if !bytes.Equal(a[off:end], b[off:end]) {
			blocks++
			if first < 0 {
				for i := off; i < end; i++ {
					if a[i] != b[i] {
						first = i
						break
					}
				}
			}
			if len(bytes.Trim(b[off:end], "\x00")) == 0 {
				zeroed++
			}
		}
	}
	if first < 0 && len(a) == len(b) {
		return "identical"
	}
	return fmt.Sprintf("%d bytes (want %d), first difference at byte %d, %d of %d 64 KiB blocks differ (%d of them all zeros in the result)",
		len(b), len(a), first, blocks, (min(len(a), len(b))+bs-1)/bs, zeroed)
}

// soakRoundSeed derives a round's seed from the run's seed, the cell and
// the round number only.
func soakRoundSeed(seed uint64, cell string, round int) uint64 {
	h := sha256.Sum256([]byte(fmt.Sprintf("%d/%s/%d", seed, cell, round)))
	return binary.LittleEndian.Uint64(h[:8])
}

func soakEnvInt(t *testing.T, key string, def int) int {
	t.Helper()
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", key, s)
	}
	return n
}

func soakMedianMax(v []int64) (med, mx int64) {
	if len(v) == 0 {
		return 0, 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	med = s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return med, s[len(s)-1]
}

func soakMiB(n int64, count int) string {
	if count == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
}

func soakMeanSeconds(d []time.Duration) float64 {
	if len(d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum.Seconds() / float64(len(d))
}

func soakTail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// TestBedSSHDNoExec checks the SSHD_NOEXEC server the soak's SFTP cells
// rely on: SFTP works and starts in its root, and exec is refused, so
// haul cannot hash by sha256sum there and verifies by size.
func TestBedSSHDNoExec(t *testing.T) {
	env := testbed.Require(t)
	srv := env.SSHDNoExec
	if srv.Port == 0 {
		msg := "the test bed has no SSHD_NOEXEC server (started by an older up.sh): restart it with `make down && make up`"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _ := tbDialSFTP(ctx, t, env, srv, true)
	wd, err := c.Getwd()
	if err != nil || wd != srv.Home {
		t.Fatalf("working directory %q (%v), want %s", wd, err, srv.Home)
	}
	cfg, err := env.SSHConfig(true)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ssh.Dial("tcp", srv.Addr(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sess, err := sc.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	out, err := sess.CombinedOutput("echo haul-exec-allowed")
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() == 0 || bytes.Contains(out, []byte("haul-exec-allowed")) {
		t.Fatalf("exec was not refused: %v, output %q", err, out)
	}
	t.Logf("exec refused: exit %d, %q", ee.ExitStatus(), bytes.TrimSpace(out))
}
