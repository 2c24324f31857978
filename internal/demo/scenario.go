package demo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/openhaul/haul/integration/faultproxy"
)

// Runner runs the haul command line with args (for example "put", "--json",
// ..., LOCAL, URL) and returns its exit code, writing its standard output to
// stdout. Its standard error goes wherever the Runner sends it: the user's
// terminal, for haul's own progress display.
type Runner func(args []string, stdout io.Writer) int

// Row is the outcome of one transfer of the scenario.
type Row struct {
	// Protocol is "FTP" or "SFTP"; Direction is "put" or "get".
	Protocol, Direction string
	// Size is the file's size in bytes.
	Size int64
	// Cuts is the number of faults the link injected: connections reset
	// and connections blackholed.
	Cuts int
	// Resumes and ResentBytes are haul's own account (its --json report):
	// attempts that continued from an offset, and bytes sent more than
	// once.
	Resumes     int
	ResentBytes int64
	// VerifiedBy is how haul proved the result ("sha256" for the FTP
	// server's XSHA256, "size" for SFTP, whose server offers no hash).
	VerifiedBy string
	// Identical reports that the demo itself found the destination
	// byte-for-byte equal to the source (SHA-256 of both files).
	Identical bool
	// Duration is the wall time of the haul command.
	Duration time.Duration
}

// Ok reports whether the row shows what the demo is about: at least one
// cut, at least one resume, verified by haul, and identical.
func (r Row) Ok() bool {
	return r.Cuts >= 1 && r.Resumes >= 1 && r.VerifiedBy != "" && r.Identical
}

// haulReport is the part of haul's --json report the demo reads.
type haulReport struct {
	OK          bool   `json:"ok"`
	Resumes     int    `json:"resumes"`
	ResentBytes int64  `json:"resent_bytes"`
	Verified    string `json:"verified"`
	Error       *struct {
		Kind    string `json:"kind"`
		Message string `json:"message"`
	} `json:"error"`
}

// Cut points, as fractions of the file: the link resets the connection
// carrying the first, and blackholes the one carrying the second.
const (
	resetAt     = 0.30
	blackholeAt = 0.70
)

// Run moves a generated file of the lab's size both ways over both
// protocols, FTP put, FTP get, SFTP put, SFTP get, each through a link that
// resets the connection carrying the bytes at 30 % of the file and
// blackholes the one at 70 % (counted over every connection of the
// transfer, so re-sent bytes count too); the blackhole is left to haul's
// stall watchdog. Each transfer is the haul command line run by run with
// --json; log gets a line per fault as it fires and per transfer as it
// ends, and one per resume the servers see (an FTP REST before STOR or
// RETR, an SFTP session's first write or read past offset 0). Run
// serializes its own writes to log, which come from several goroutines; if
// run writes to log too, log must be safe for concurrent use (an *os.File
// is). Run returns the rows done so far and the first error: a haul run
// that failed, or ctx done between transfers. A row whose content differs
// is not an error: see Row.Ok.
func (l *Lab) Run(ctx context.Context, run Runner, log io.Writer) ([]Row, error) {
	log = &lockedWriter{w: log, clear: isTerminal(log)}
	size := l.opts.size()
	src := filepath.Join(l.localDir(), "source.bin")
	if err := generate(src, size, 1); err != nil {
		return nil, err
	}
	defer os.Remove(src)
	var rows []Row
	for _, proto := range []string{"FTP", "SFTP"} {
		for _, dir := range []string{"put", "get"} {
			if err := ctx.Err(); err != nil {
				return rows, err
			}
			r, err := l.transfer(run, log, proto, dir, src)
			if err != nil {
				return rows, err
			}
			rows = append(rows, r)
		}
	}
	return rows, nil
}

func (l *Lab) transfer(run Runner, log io.Writer, proto, dir, src string) (Row, error) {
	size := l.opts.size()
	row := Row{Protocol: proto, Direction: dir, Size: size}
	base, ports := l.FTPURL, l.ftp.pasvPorts() // cut the data connections
	if proto == "SFTP" {
		base, ports = l.SFTPURL, []int{l.sftp.port()}
	}
	remote := l.SampleFile
	local, from, to := filepath.Join(l.localDir(), strings.ToLower(proto)+"-get.bin"), "", ""
	fdir, verb := faultproxy.Downstream, "download"
	if dir == "put" {
		remote = strings.ToLower(proto) + "-put.bin"
		local = src
		fdir, verb = faultproxy.Upstream, "upload"
		from, to = src, filepath.Join(l.serverDir(), remote)
	} else {
		from, to = filepath.Join(l.serverDir(), remote), local
	}
	fmt.Fprintf(log, "\n== %s %s of %s: the link resets the connection at %d %% and blackholes it at %d %%\n",
		proto, verb, formatBytes(size), int(resetAt*100), int(blackholeAt*100))

	faults := []*faultproxy.Armed{
		l.proxy.Inject(faultproxy.Fault{Kind: faultproxy.Reset, Dir: fdir, Ports: ports, After: int64(float64(size) * resetAt)}),
		l.proxy.Inject(faultproxy.Fault{Kind: faultproxy.Blackhole, Dir: fdir, Ports: ports, After: int64(float64(size) * blackholeAt)}),
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // say each fault as it fires
		defer wg.Done()
		msgs := []string{
			fmt.Sprintf("link: connection reset after %s (%d %%)", formatBytes(int64(float64(size)*resetAt)), int(resetAt*100)),
			fmt.Sprintf("link: connection blackholed after %s (%d %%): nothing moves until haul's stall watchdog (--stall-timeout %s) gives up on it",
				formatBytes(int64(float64(size)*blackholeAt)), int(blackholeAt*100), l.opts.stallTimeout()),
		}
		for i, a := range faults {
			select {
			case <-a.Fired():
				fmt.Fprintf(log, "  %s\n", msgs[i])
			case <-stop:
				return
			}
		}
	}()

	l.events.set(func(e serverEvent) {
		if e.proto == proto && e.upload == (dir == "put") {
			fmt.Fprintf(log, "  server: haul resumed the %s at %s (%d %%): %s\n",
				verb, formatBytes(e.offset), (e.offset*100+size/2)/size, e.how)
		}
	})
	defer l.events.set(nil)
	args := []string{dir, "--json", "--password-file", l.PasswordFile, "--stall-timeout", l.opts.stallTimeout().String(),
		"--segments", "1"}
	if proto == "SFTP" {
		args = append(args, "--known-hosts", l.KnownHostsFile)
	}
	if dir == "put" {
		args = append(args, local, base+remote)
	} else {
		args = append(args, base+remote, local)
	}
	var out bytes.Buffer
	start := time.Now()
	code := run(args, &out)
	row.Duration = time.Since(start)
	close(stop)
	wg.Wait()
	for _, a := range faults {
		a.Disarm()
		row.Cuts += a.Count()
	}
	l.proxy.Release() // the blackholed connection, abandoned by haul

	rep, err := lastReport(out.Bytes())
	if err != nil {
		return row, fmt.Errorf("demo: %s %s: haul exited %d: %w", proto, dir, code, err)
	}
	if code != 0 || !rep.OK {
		msg := "no error reported"
		if rep.Error != nil {
			msg = rep.Error.Kind + ": " + rep.Error.Message
		}
		return row, fmt.Errorf("demo: %s %s: haul exited %d: %s", proto, dir, code, msg)
	}
	row.Resumes, row.ResentBytes, row.VerifiedBy = rep.Resumes, rep.ResentBytes, rep.Verified
	row.Identical, err = sameContent(from, to)
	if err != nil {
		return row, err
	}
	_ = os.Remove(filepath.Join(l.serverDir(), strings.ToLower(proto)+"-put.bin"))
	_ = os.Remove(filepath.Join(l.localDir(), strings.ToLower(proto)+"-get.bin"))
	same := "identical to the source"
	if !row.Identical {
		same = "DIFFERS from the source"
	}
	fmt.Fprintf(log, "  done in %s: %d cut(s), %d resume(s), %s re-sent, verified by %s; %s\n",
		row.Duration.Round(time.Millisecond), row.Cuts, row.Resumes, formatBytes(row.ResentBytes), row.VerifiedBy, same)
	return row, nil
}

// lockedWriter serializes writes to w. With clear, each write first clears
// the terminal's current line ("\r" and erase to its end): a line of the
// demo's then replaces the progress bar haul may be drawing there, which
// haul redraws below it, instead of running on after it.
type lockedWriter struct {
	mu    sync.Mutex
	w     io.Writer
	clear bool
}

func (lw *lockedWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.clear {
		if _, err := io.WriteString(lw.w, "\r\x1b[K"); err != nil {
			return 0, err
		}
	}
	return lw.w.Write(p)
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// lastReport parses the last JSON line of haul's standard output.
func lastReport(b []byte) (haulReport, error) {
	var rep haulReport
	var last []byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 && line[0] == '{' {
			last = append(last[:0], line...)
		}
	}
	if last == nil {
		return rep, errors.New("no JSON report on its standard output")
	}
	if err := json.Unmarshal(last, &rep); err != nil {
		return rep, fmt.Errorf("its JSON report: %w", err)
	}
	return rep, nil
}

// WriteTable writes rows as an aligned table: protocol, direction, size,
// cuts, resumes, re-sent bytes, verified by, time.
func WriteTable(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROTOCOL\tDIRECTION\tSIZE\tCUTS\tRESUMES\tRE-SENT\tVERIFIED BY\tTIME\t")
	for _, r := range rows {
		v := r.VerifiedBy
		if !r.Identical {
			v += " (CONTENT DIFFERS)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t\n", r.Protocol, r.Direction, formatBytes(r.Size),
			r.Cuts, r.Resumes, formatBytes(r.ResentBytes), v, r.Duration.Round(10*time.Millisecond))
	}
	return tw.Flush()
}

// formatBytes writes n in binary units (KiB, MiB, GiB).
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, u := float64(n), -1
	for v >= unit && u < 2 {
		v /= unit
		u++
	}
	s := fmt.Sprintf("%.1f", v)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + []string{"KiB", "MiB", "GiB"}[u]
}

// generate writes size pseudo-random bytes (ChaCha8 from seed: the same
// seed gives the same file) to name.
func generate(name string, size int64, seed byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	var key [32]byte
	key[0] = seed
	_, err = io.CopyN(f, rand.NewChaCha8(key), size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// sameContent compares two files by SHA-256.
func sameContent(a, b string) (bool, error) {
	ha, err := fileHash(a)
	if err != nil {
		return false, err
	}
	hb, err := fileHash(b)
	if err != nil {
		return false, err
	}
	return ha == hb, nil
}

func fileHash(name string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(name)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}
