package sftp

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
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
	if code, kind := kindOf(err); code != fxNoSuchFile || kind == nil || !errors.Is(classify("hash", "p", err), kind) {
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
