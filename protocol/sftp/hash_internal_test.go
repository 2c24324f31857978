package sftp

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/openhaul/haul/protocol"
)

func TestShellQuoteRoundTrip(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, s := range []string{"plain", "it's", "'", "''", "a'b'c", "$(touch pwned)", "`touch pwned`",
		`"quoted" \back\slash`, "semi;colon && x || y", "*?[a]", " lead and trail ", "-n", "~", "tab\there", "ünïcode"} {
		out, err := exec.Command(sh, "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if string(out) != s {
			t.Errorf("quoted %q came back as %q", s, out)
		}
	}
}

func TestExecHashCommandRanges(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	if _, err := exec.LookPath("sha256sum"); err != nil {
		t.Skip("no sha256sum")
	}
	dir := t.TempDir()
	name := filepath.Join(dir, "it's a \"file\" $(x)")
	data := make([]byte, 300_000)
	for i := range data {
		data[i] = byte(i*31 + i/977)
	}
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
	size := int64(len(data))
	for _, r := range [][2]int64{{0, size}, {0, 65536}, {1, size}, {size - 65536, size}, {1000, 66536}, {size - 1, size}} {
		out, err := exec.Command(sh, "-c", execHashCommand("sha256sum", name, r[0], r[1], size)).Output()
		if err != nil {
			t.Fatalf("%v: %v", r, err)
		}
		got, err := parseExecHash(out, sha256.Size)
		if err != nil {
			t.Fatalf("%v: %v", r, err)
		}
		if want := sha256.Sum256(data[r[0]:r[1]]); !bytes.Equal(got, want[:]) {
			t.Errorf("%v: %x, want %x", r, got, want)
		}
	}
	// A missing file runs nothing and prints no marker.
	out, err := exec.Command(sh, "-c", execHashCommand("sha256sum", name+"-missing", 0, 10, 10)).Output()
	if err == nil {
		t.Fatalf("missing file: no error, output %q", out)
	}
	if _, err := parseExecHash(out, sha256.Size); err == nil {
		t.Fatal("digest parsed from a failed command")
	}
}

func TestParseExecOutput(t *testing.T) {
	noise := "Welcome!\nhaul-hash-done-not\n"
	probe := noise + execProbeMarker + "\n/usr/bin/sha256sum\n/usr/bin/md5sum\nhead\n/bin/tail\n"
	if got := parseExecProbe([]byte(probe)); !slices.Equal(got, []string{"sha256", "md5"}) {
		t.Errorf("probe = %v", got)
	}
	if got := parseExecProbe([]byte("/usr/bin/sha256sum\n/usr/bin/head\n/usr/bin/tail\n")); got != nil {
		t.Errorf("probe without marker = %v", got)
	}
	if got := parseExecProbe([]byte(execProbeMarker + "\n/usr/bin/sha256sum\n/usr/bin/tail\n")); got != nil {
		t.Errorf("probe without head = %v", got)
	}
	sum := sha256.Sum256([]byte("x"))
	hexSum := "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
	got, err := parseExecHash([]byte(noise+hexSum+"  -\n"+execDoneMarker+"\n"), 32)
	if err != nil || !bytes.Equal(got, sum[:]) {
		t.Errorf("hash = %x, %v", got, err)
	}
	for _, bad := range []string{
		hexSum + "  -\n",                       // no marker
		execDoneMarker + "\n",                  // no digest line
		hexSum[:62] + "  -\n" + execDoneMarker, // short
		"zz" + hexSum[2:] + "  -\n" + execDoneMarker,
	} {
		if _, err := parseExecHash([]byte(bad), 32); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
}

func TestParseCheckFileReplies(t *testing.T) {
	digest := bytes.Repeat([]byte{0xAB}, 32)
	reply := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	str := func(s string) []byte { return appendString(nil, s) }

	// proftpd: no "check-file" string before the algorithm.
	algo, sum, err := parseCheckFileReply(7, fxpExtendedReply, reply(u32(7), str("sha256"), digest))
	if err != nil || algo != "sha256" || !bytes.Equal(sum, digest) {
		t.Fatalf("proftpd form: %q %x %v", algo, sum, err)
	}
	// The draft's form.
	algo, sum, err = parseCheckFileReply(7, fxpExtendedReply, reply(u32(7), str("check-file"), str("SHA256"), digest))
	if err != nil || algo != "sha256" || !bytes.Equal(sum, digest) {
		t.Fatalf("draft form: %q %x %v", algo, sum, err)
	}
	// Status replies become *fxStatusError, classified by code.
	_, _, err = parseCheckFileReply(7, fxpStatus, reply(u32(7), u32(fxNoSuchFile), str("No such file"), str("")))
	var fe *fxStatusError
	if !errors.As(err, &fe) || fe.Code != fxNoSuchFile {
		t.Fatalf("status: %v", err)
	}
	if code, kind := kindOf(err); code != fxNoSuchFile || kind == nil || !errors.Is(classify("hash", "p", err, ""), kind) {
		t.Fatalf("status classified as %d %v", code, kind)
	}
	_, _, err = parseCheckFileReply(7, fxpStatus, reply(u32(7), u32(fxOpUnsupported)))
	if !errors.As(err, &fe) || fe.Code != fxOpUnsupported {
		t.Fatalf("status without message: %v", err)
	}
	for name, c := range map[string]struct {
		typ  byte
		body []byte
	}{
		"wrong id":   {fxpExtendedReply, reply(u32(8), str("sha256"), digest)},
		"wrong type": {fxpVersion, reply(u32(7), str("sha256"), digest)},
		"short":      {fxpExtendedReply, u32(7)[:3]},
		"cut string": {fxpExtendedReply, reply(u32(7), u32(100), []byte("sha"))},
		"status ok":  {fxpStatus, reply(u32(7), u32(0), str(""), str(""))},
		"status cut": {fxpStatus, u32(7)},
	} {
		if _, _, err := parseCheckFileReply(7, c.typ, c.body); err == nil || errors.As(err, &fe) && name != "status ok" && fe.Code == 0 {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestParseVersionExtensions(t *testing.T) {
	body := binary.BigEndian.AppendUint32(nil, 3)
	body = appendString(appendString(body, "versions"), "2,3,4,5,6")
	body = appendString(appendString(body, "check-file-name"), "MD5, sha256,sha1")
	ext, err := parseVersion(body)
	if err != nil {
		t.Fatal(err)
	}
	algos, ok := checkFileAlgorithms(ext)
	if !ok || !slices.Equal(algos, []string{"md5", "sha256", "sha1"}) {
		t.Fatalf("algorithms = %v, %v", algos, ok)
	}
	if algos, ok := checkFileAlgorithms(map[string]string{"check-file": "1"}); !ok || algos != nil {
		t.Fatalf("version-number data: %v %v", algos, ok)
	}
	if _, ok := checkFileAlgorithms(map[string]string{"statvfs@openssh.com": "2"}); ok {
		t.Fatal("check-file found where there is none")
	}
	if _, err := parseVersion(append(binary.BigEndian.AppendUint32(nil, 3), 0, 0, 0, 9, 'x')); err == nil {
		t.Fatal("cut extension accepted")
	}
	if _, err := parseVersion(binary.BigEndian.AppendUint32(nil, 2)); err == nil {
		t.Fatal("version 2 accepted")
	}
}

// cappedBuffer must be an io.Writer only: io.Copy, which x/crypto/ssh uses
// for a command's output, prefers a destination's ReadFrom to its Write.
func TestCappedBufferStopsCopy(t *testing.T) {
	var full int
	b := &cappedBuffer{max: 100, full: func() { full++ }}
	if _, ok := any(b).(io.ReaderFrom); ok {
		t.Fatal("cappedBuffer has a ReadFrom, which io.Copy would use instead of Write")
	}
	src := &countingReader{limit: 1 << 30}
	n, err := io.Copy(b, src)
	if !errors.Is(err, errOutputTooLong) || n != 100 || len(b.buf) != 100 || !b.over || full != 1 {
		t.Fatalf("io.Copy = %d, %v; kept %d, over %v, full called %d times", n, err, len(b.buf), b.over, full)
	}
	if src.n > 64<<10 {
		t.Fatalf("io.Copy read %d bytes from the source", src.n)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, errOutputTooLong) || full != 1 {
		t.Fatalf("Write after the cap: %v (full called %d times)", err, full)
	}
	ok := &cappedBuffer{max: 100}
	if n, err := io.Copy(ok, strings.NewReader("short output")); n != 12 || err != nil || string(ok.buf) != "short output" {
		t.Fatalf("short output: %d, %v, %q", n, err, ok.buf)
	}
}

// countingReader yields zeros up to limit and counts them.
type countingReader struct{ n, limit int64 }

func (r *countingReader) Read(p []byte) (int, error) {
	if r.n >= r.limit {
		return 0, io.EOF
	}
	k := int(min(int64(len(p)), r.limit-r.n))
	clear(p[:k])
	r.n += int64(k)
	return k, nil
}

func TestGreetingError(t *testing.T) {
	for _, tt := range []struct {
		seen string
		ftp  bool
	}{
		{"SSH-2.0-OpenSSH_9.2p1\r\n", false},
		{"SSH-1.99-old\r\n", false},
		{"220 (vsFTPd 3.0.3)\r\n", true},
		{"220-Welcome\r\n220 ready\r\n", true},
		{"421 Too many connections\r\n", true},
		{"Welcome banner before the version\r\nSSH-2.0-x\r\n", false},
		{"2200 no\r\n", false},
		{"620 no\r\n", false},
	} {
		ge := newGreetingError([]byte(tt.seen[:4]), []byte(tt.seen))
		if got := ge != nil; got != tt.ftp {
			t.Errorf("%q: FTP %v, want %v", tt.seen, got, tt.ftp)
			continue
		}
		if ge == nil {
			continue
		}
		if !errors.Is(ge, protocol.ErrProtocol) || !strings.Contains(ge.Error(), "ftp://") ||
			strings.Contains(ge.Error(), "\r") || strings.Contains(ge.Error(), "\n") {
			t.Errorf("%q: %v", tt.seen, ge)
		}
	}
	long := "220 " + strings.Repeat("x", 10000) + "\r\n"
	if ge := newGreetingError([]byte(long[:4]), []byte(long)); len(ge.Error()) > 300 {
		t.Fatalf("error of %d bytes", len(ge.Error()))
	}
}
