package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openhaul/haul/doctor"
	"github.com/openhaul/haul/integration/faultproxy"
	"github.com/openhaul/haul/integration/testbed"
	"github.com/openhaul/haul/protocol"
	"github.com/openhaul/haul/transfer"
)

// doctorTarget is one server of the test bed as haul doctor is pointed at
// it.
type doctorTarget struct {
	name   string
	scheme string
	srv    testbed.Server
}

// doctorConfig returns the transfer configuration that verifies the test
// bed's servers (its CA, its known_hosts).
func doctorConfig(t *testing.T, env *testbed.Env, scheme string) transfer.Config {
	t.Helper()
	cfg := transfer.Config{Password: env.Password}
	switch scheme {
	case "ftps", "ftps+implicit":
		tc, err := env.TLSConfig()
		if err != nil {
			t.Fatal(err)
		}
		tc.ClientSessionCache = nil // haul adds its own
		cfg.TLSConfig = tc
	case "sftp":
		cfg.KnownHostsFile = env.KnownHostsFile
	}
	return cfg
}

func doctorURL(env *testbed.Env, scheme, addr string) string {
	return fmt.Sprintf("%s://%s@%s/", scheme, env.User, addr)
}

// runDoctor runs doctor.Run, bounded, and logs the text report.
func runDoctor(t *testing.T, rawURL string, cfg transfer.Config, opts doctor.Options) *doctor.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := doctor.Run(ctx, rawURL, cfg, opts)
	if err != nil {
		t.Fatalf("doctor.Run: %v", err)
	}
	var b bytes.Buffer
	_ = rep.WriteText(&b)
	t.Logf("report:\n%s", b.String())
	if strings.Contains(b.String(), cfg.Password) {
		t.Fatal("the password appears in the report")
	}
	return rep
}

func mustFind(t *testing.T, rep *doctor.Report, id string) doctor.Finding {
	t.Helper()
	f, ok := rep.Find(id)
	if !ok {
		t.Fatalf("no %q finding", id)
	}
	return f
}

func dataFloat(t *testing.T, f doctor.Finding, key string) float64 {
	t.Helper()
	v, ok := f.Data[key].(float64)
	if !ok {
		t.Fatalf("finding %s: data %q is %T %v, want a number", f.ID, key, f.Data[key], f.Data[key])
	}
	return v
}

// TestDoctorEveryServer runs the read-only diagnosis against every server
// of the test bed (the limited vsftpd has a test of its own): each logs in
// once, and nothing fails.
func TestDoctorEveryServer(t *testing.T) {
	env := testbed.Require(t)
	targets := []doctorTarget{
		{"vsftpd", "ftp", env.VsftpdPlain},
		{"vsftpd-ftps", "ftps", env.VsftpdFTPS},
		{"vsftpd-nolock", "ftp", env.VsftpdNoLock},
		{"proftpd", "ftp", env.Proftpd},
		{"pure-ftpd", "ftp", env.Pureftpd},
		{"pyftpd-norest", "ftp", env.PyftpdNoRest},
		{"vsftpd-badpasv", "ftp", env.VsftpdBadPasv},
		{"sshd", "sftp", env.SSHD},
		{"sshd-noexec", "sftp", env.SSHDNoExec},
		{"proftpd-sftp", "sftp", env.ProftpdSFTP},
		{"rclone-sftp", "sftp", env.RcloneSFTP},
	}
	for _, tc := range targets {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env.RequireServer(t, tc.srv)
			host := tc.srv.Addr()
			if tc.scheme == "ftps" {
				host = fmt.Sprintf("%s:%d", env.TLSServerName, tc.srv.Port)
			}
			rep := runDoctor(t, doctorURL(env, tc.scheme, host), doctorConfig(t, env, tc.scheme), doctor.Options{})
			if rep.Err != nil {
				t.Fatalf("Report.Err: %v", rep.Err)
			}
			if f := mustFind(t, rep, "login"); f.Status != doctor.OK {
				t.Errorf("login: %s %s", f.Status, f.Summary)
			}
			for _, f := range rep.Findings {
				if f.Status == doctor.Fail {
					t.Errorf("finding %s failed: %s (%s)", f.ID, f.Summary, f.Evidence)
				}
			}
			if tc.scheme != "sftp" {
				if f := mustFind(t, rep, "binary"); f.Status != doctor.OK {
					t.Errorf("binary: %s %s", f.Status, f.Summary)
				}
			}
			if tc.scheme == "ftps" {
				if f := mustFind(t, rep, "tls-cert"); f.Status != doctor.OK {
					t.Errorf("tls-cert: %s %s", f.Status, f.Summary)
				}
				if f := mustFind(t, rep, "tls-data"); tc.name == "vsftpd-ftps" && f.Data["resumed"] != true {
					t.Errorf("tls-data: %s %s, want the session resumed (vsftpd require_ssl_reuse)", f.Status, f.Summary)
				}
			}
		})
	}
}

// TestDoctorWrongPasvAddress: the vsftpd whose pasv_address names a wrong
// address is found out, and the transfer side still works (EPSV and PASV
// both reach the control host).
func TestDoctorWrongPasvAddress(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	env.RequireServer(t, env.VsftpdBadPasv)
	rep := runDoctor(t, doctorURL(env, "ftp", env.VsftpdBadPasv.Addr()), doctorConfig(t, env, "ftp"), doctor.Options{})
	f := mustFind(t, rep, "pasv-address")
	if f.Status != doctor.Warn || !strings.Contains(f.Summary, "wrong PASV address") {
		t.Errorf("pasv-address: %s %q, want a warning naming the wrong PASV address", f.Status, f.Summary)
	}
	if want := env.BadPasvAddress; want != "" && f.Data["announced"] != want {
		t.Errorf("announced %v, want %s", f.Data["announced"], want)
	}
	if !strings.Contains(f.Fix, "pasv_address") {
		t.Errorf("fix %q does not name vsftpd's pasv_address", f.Fix)
	}
	if p := mustFind(t, rep, "pasv"); p.Status != doctor.OK {
		t.Errorf("pasv: %s %s: haul's data connection should go to the control host", p.Status, p.Summary)
	}
	if rep.Failed() {
		t.Error("a finding failed; a wrong PASV address that haul works around is a warning")
	}
	// The healthy vsftpd announces its own address.
	good := runDoctor(t, doctorURL(env, "ftp", env.VsftpdPlain.Addr()), doctorConfig(t, env, "ftp"), doctor.Options{})
	if f := mustFind(t, good, "pasv-address"); f.Status != doctor.OK {
		t.Errorf("healthy vsftpd: pasv-address %s %s", f.Status, f.Summary)
	}
}

// TestDoctorLimitedServer: the limited vsftpd's max_per_ip is found with
// --probe-limit 8, then its idle_session_timeout with --probe-idle 20s
// (within 2 s). One run: the two probes must not compete for the
// server's three connections.
func TestDoctorLimitedServer(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	srv := env.VsftpdLimited
	// A file larger than the socket buffers, so that a download left
	// unread makes the server's writes block (its data timeout).
	name := fmt.Sprintf("doctor-stall-%d.bin", time.Now().UnixNano())
	local := filepath.Join(srv.Root, name)
	f, err := os.Create(local)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(local) })
	if err := f.Truncate(40 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("not all zeros"), 20<<20); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	rep := runDoctor(t, doctorURL(env, "ftp", srv.Addr()), doctorConfig(t, env, "ftp"),
		doctor.Options{ProbeLimit: 8, ProbeIdle: 20 * time.Second, ReadPath: name})
	lim := mustFind(t, rep, "conn-limit")
	want := env.LimitedMaxPerIP
	if want == 0 {
		want = 3
	}
	if n, _ := lim.Data["count"].(int); n != want || lim.Status != doctor.Warn {
		t.Errorf("conn-limit: %s %q count %v, want %d", lim.Status, lim.Summary, lim.Data["count"], want)
	}
	if !strings.Contains(lim.Fix, "--segments") || !strings.Contains(lim.Fix, "max_per_ip") {
		t.Errorf("conn-limit fix %q should name --segments and max_per_ip", lim.Fix)
	}
	idle := mustFind(t, rep, "idle-control")
	wantIdle := env.LimitedIdleTimeout.Seconds()
	if wantIdle == 0 {
		wantIdle = 10
	}
	got := dataFloat(t, idle, "seconds")
	if idle.Data["kind"] != "server" || math.Abs(got-wantIdle) > 2 {
		t.Errorf("idle-control: %s %q (%v s, kind %v), want the server's %v s idle timeout within 2 s", idle.Status, idle.Summary, got, idle.Data["kind"], wantIdle)
	}
	if !strings.Contains(idle.Fix, "idle_session_timeout") {
		t.Errorf("idle-control fix %q should name idle_session_timeout", idle.Fix)
	}
	// vsftpd's data_connection_timeout T fires between T and 2T after the
	// last byte moved (its alarm checks for progress every T); the probe
	// stops reading at a point of its own, after which the server still
	// fills the socket buffers, progress that can fall in the next period:
	// up to 3T after the stop (9 s seen once for T = 3 under load).
	data := mustFind(t, rep, "idle-data")
	dt := env.LimitedDataTimeout.Seconds()
	if dt == 0 {
		dt = 3
	}
	if got, _ := data.Data["seconds"].(float64); data.Status != doctor.Warn || got < dt-1 || got > 3*dt+2 {
		t.Errorf("idle-data: %s %q (%v s), want the server's data timeout (%v s, fired within [%v, %v] s)", data.Status, data.Summary, got, dt, dt, 3*dt)
	}
	if !strings.Contains(data.Fix, "--stall-timeout") || !strings.Contains(data.Fix, "data_connection_timeout") {
		t.Errorf("idle-data fix %q should name --stall-timeout and data_connection_timeout", data.Fix)
	}
}

// TestDoctorNATIdleDrop: a link that silently drops connections idle for
// more than 5 s (the fault proxy in front of vsftpd) is found within 2 s.
func TestDoctorNATIdleDrop(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	srv := env.VsftpdPlain
	ports := append([]int{srv.Port}, faultproxy.PortRange(srv.PasvMin, srv.PasvMax)...)
	p, err := faultproxy.NewLoopback(env.Host, ports...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	const drop = 5 * time.Second
	p.SetIdleDrop(drop)
	rep := runDoctor(t, doctorURL(env, "ftp", p.Addr(srv.Port)), doctorConfig(t, env, "ftp"),
		doctor.Options{ProbeIdle: 12 * time.Second})
	idle := mustFind(t, rep, "idle-control")
	got := dataFloat(t, idle, "seconds")
	if idle.Data["kind"] != "silent" || idle.Status != doctor.Fail || math.Abs(got-drop.Seconds()) > 2 {
		t.Errorf("idle-control: %s %q (%v s, kind %v), want a silent drop at %v within 2 s", idle.Status, idle.Summary, got, idle.Data["kind"], drop)
	}
	if !strings.Contains(idle.Summary, "NAT") || !strings.Contains(idle.Fix, "keepalive") {
		t.Errorf("idle-control should name the NAT/firewall and the keepalive fix: %q / %q", idle.Summary, idle.Fix)
	}
	if p.IdleDrops() == 0 {
		t.Error("the proxy dropped no connection")
	}
	if !rep.Failed() {
		t.Error("report does not fail")
	}
}

// TestDoctorNATIdleDropSFTP: the same silent drop in front of OpenSSH,
// with SSH keepalives off in the probe connections.
func TestDoctorNATIdleDropSFTP(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	srv := env.SSHD
	p, err := faultproxy.NewLoopback(env.Host, srv.Port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	const drop = 4 * time.Second
	p.SetIdleDrop(drop)
	cfg := doctorConfig(t, env, "sftp")
	// The proxy may listen on an address known_hosts does not name.
	cfg.KnownHostsFile, cfg.InsecureIgnoreHostKey = "", true
	rep := runDoctor(t, doctorURL(env, "sftp", p.Addr(srv.Port)), cfg, doctor.Options{ProbeIdle: 10 * time.Second})
	idle := mustFind(t, rep, "idle-control")
	got := dataFloat(t, idle, "seconds")
	if idle.Data["kind"] != "silent" || idle.Status != doctor.Fail || math.Abs(got-drop.Seconds()) > 2 {
		t.Errorf("idle-control: %s %q (%v s, kind %v), want a silent drop at %v within 2 s", idle.Status, idle.Summary, got, idle.Data["kind"], drop)
	}
}

// TestDoctorRESTRefused: the pyftpdlib server that refuses REST is found
// out, on reads (a file put into its root) and with --write-test.
func TestDoctorRESTRefused(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	srv := env.PyftpdNoRest
	env.RequireServer(t, srv)
	name := fmt.Sprintf("doctor-norest-%d.bin", time.Now().UnixNano())
	path, _ := testbed.RandomFile(t, t.TempDir(), 256<<10)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(srv.Root, name)
	if err := os.WriteFile(local, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(local) })
	rep := runDoctor(t, doctorURL(env, "ftp", srv.Addr()), doctorConfig(t, env, "ftp"),
		doctor.Options{ReadPath: name, WriteDir: "/"})
	f := mustFind(t, rep, "resume-read")
	if f.Status != doctor.Warn || !strings.Contains(f.Summary, "REST refused") || f.Data["file"] != name {
		t.Errorf("resume-read: %s %q on %v, want REST refused on %s", f.Status, f.Summary, f.Data["file"], name)
	}
	w := mustFind(t, rep, "resume-write")
	if w.Status != doctor.Warn || !strings.Contains(w.Summary, "REST+STOR refused") {
		t.Errorf("resume-write: %s %q, want REST+STOR refused", w.Status, w.Summary)
	}
	if ents, _ := filepath.Glob(filepath.Join(srv.Root, ".haul-doctor-*")); len(ents) > 0 {
		t.Errorf("the write test left %v", ents)
	}
}

// TestDoctorDiskFull: --write-test into a full tmpfs is a failed finding
// that says the disk is full (or, for vsftpd's 451, most likely full).
func TestDoctorDiskFull(t *testing.T) {
	env := testbed.Require(t)
	cases := []struct {
		name, scheme string
		srv          testbed.Server
		id, says     string
	}{
		{"vsftpd", "ftp", env.VsftpdPlain, "write", "full disk"},
		{"pure-ftpd", "ftp", env.Pureftpd, "write", "disk full"},
		{"sshd", "sftp", env.SSHD, "free-space", "disk full"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.srv.FullDir == "" {
				t.Skip("no full tmpfs")
			}
			tbFillLocal(t, tc.srv.FullLocal)
			rep := runDoctor(t, doctorURL(env, tc.scheme, tc.srv.Addr()), doctorConfig(t, env, tc.scheme),
				doctor.Options{WriteDir: tc.srv.FullDir})
			f := mustFind(t, rep, tc.id)
			if f.Status != doctor.Fail || !strings.Contains(f.Summary, tc.says) {
				t.Errorf("%s: %s %q, want a failure saying %q", tc.id, f.Status, f.Summary, tc.says)
			}
			if !rep.Failed() {
				t.Error("report does not fail")
			}
			if ents, _ := filepath.Glob(filepath.Join(tc.srv.FullLocal, ".haul-doctor-*")); len(ents) > 0 {
				t.Errorf("the write test left %v", ents)
			}
		})
	}
}

// TestDoctorUntrustedCertificate: an FTPS server whose certificate this
// client does not trust is refused before login, and the finding names
// the unknown authority and the fix.
func TestDoctorUntrustedCertificate(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	srv := env.VsftpdFTPS
	before := env.CountInLog(t, srv.Log, "USER "+env.User)
	cfg := transfer.Config{Password: env.Password} // system roots: the test bed's CA is unknown
	rep := runDoctor(t, doctorURL(env, "ftps", fmt.Sprintf("%s:%d", env.TLSServerName, srv.Port)), cfg, doctor.Options{})
	if !errors.Is(rep.Err, protocol.ErrHostKey) {
		t.Fatalf("Report.Err = %v, want ErrHostKey", rep.Err)
	}
	f := mustFind(t, rep, "tls-cert")
	if f.Status != doctor.Fail || !strings.Contains(f.Summary, "unknown authority") || !strings.Contains(f.Fix, "--ca-file") {
		t.Errorf("tls-cert: %s %q fix %q", f.Status, f.Summary, f.Fix)
	}
	if after := env.CountInLog(t, srv.Log, "USER "+env.User); after != before {
		t.Errorf("%d logins sent to a server whose certificate did not verify", after-before)
	}
}

// TestDoctorUnknownHostKey: an SSH server whose key known_hosts does not
// hold is refused before authentication; the finding shows the key's
// fingerprint and the fix.
func TestDoctorUnknownHostKey(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := transfer.Config{Password: env.Password, KnownHostsFile: kh}
	rep := runDoctor(t, doctorURL(env, "sftp", env.SSHD.Addr()), cfg, doctor.Options{})
	if !errors.Is(rep.Err, protocol.ErrHostKey) {
		t.Fatalf("Report.Err = %v, want ErrHostKey", rep.Err)
	}
	f := mustFind(t, rep, "identity")
	if f.Status != doctor.Fail || !strings.Contains(f.Summary, "unknown") || !strings.Contains(f.Evidence, "SHA256:") ||
		!strings.Contains(f.Fix, "known_hosts") {
		t.Errorf("identity: %s %q evidence %q fix %q", f.Status, f.Summary, f.Evidence, f.Fix)
	}
	if b, _ := os.ReadFile(kh); len(b) != 0 {
		t.Errorf("known_hosts was written: %q", b)
	}
}

// TestDoctorCLI: the command's exit codes and JSON: 3 for an identity not
// verified, 0 with a warning for the wrong PASV address.
func TestDoctorCLI(t *testing.T) {
	t.Parallel()
	env := testbed.Require(t)
	env.RequireServer(t, env.VsftpdBadPasv)
	type out struct {
		OK       bool             `json:"ok"`
		Findings []doctor.Finding `json:"findings"`
	}
	run := func(args ...string) (int, out, string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		r := runCLIRaw(ctx, t, env.Password, args...)
		var o out
		if r.stdout == "" {
			return r.code, o, r.stderr
		}
		if err := json.Unmarshal([]byte(r.stdout), &o); err != nil {
			t.Fatalf("stdout is not one JSON object (%v): %q\nstderr: %s", err, r.stdout, r.stderr)
		}
		return r.code, o, r.stderr
	}
	kh := filepath.Join(t.TempDir(), "known_hosts")
	code, o, stderr := run("doctor", "--json", "--known-hosts", kh, doctorURL(env, "sftp", env.SSHD.Addr()))
	if code != 3 || o.OK {
		t.Errorf("unknown host key: exit %d ok %v, want 3 (stderr %s)", code, o.OK, stderr)
	}
	code, o, stderr = run("doctor", "--json", doctorURL(env, "ftp", env.VsftpdBadPasv.Addr()))
	found := false
	for _, f := range o.Findings {
		found = found || (f.ID == "pasv-address" && f.Status == doctor.Warn)
	}
	if code != 0 || !o.OK || !found {
		t.Errorf("wrong PASV address: exit %d ok %v pasv-address warned %v, want 0, true, true (stderr %s)", code, o.OK, found, stderr)
	}
	code, _, _ = run("doctor", "--json", "--probe-limit", "0", doctorURL(env, "ftp", env.VsftpdPlain.Addr()))
	if code != 2 {
		t.Errorf("--probe-limit 0: exit %d, want 2", code)
	}
}

// runCLIRaw runs haul with password pw in HAUL_PASSWORD and returns its
// exit code and output, without parsing them.
func runCLIRaw(ctx context.Context, t *testing.T, pw string, args ...string) cliRun {
	t.Helper()
	cmd := exec.CommandContext(ctx, cliBinary(t), args...)
	cmd.Env = append(os.Environ(), "HAUL_PASSWORD="+pw)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := cliRun{stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if pw != "" && strings.Contains(r.stdout+r.stderr, pw) {
		t.Fatal("the password appears in the output")
	}
	return r
}
