package doctor

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/openhaul/haul/protocol"
	pftp "github.com/openhaul/haul/protocol/ftp"
)

// Sizes of the probes that move data.
const (
	windowSize    = 4 << 10  // the window read at an offset
	testFileSize  = 64 << 10 // the file --write-test writes
	throughputMax = 16 << 20 // the most the throughput probe reads
	listMax       = 64 << 10 // the most a listing probe reads
)

func (d *doc) runFTP(ctx context.Context) {
	if d.ep.Scheme != "ftp" {
		d.tlsCertificate(ctx)
		// Record the handshakes of the sessions, after the usual
		// verification (which VerifyConnection does not replace).
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if d.cfg.TLSConfig != nil {
			tc = d.cfg.TLSConfig.Clone()
		}
		prev := tc.VerifyConnection
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			d.mu.Lock()
			if d.tlsFirst == nil {
				d.tlsFirst = &cs
			}
			d.mu.Unlock()
			if prev != nil {
				return prev(cs)
			}
			return nil
		}
		d.cfg.TLSConfig = tc
	}
	start := time.Now()
	s, err := d.dialFTP(ctx, 0)
	if err != nil {
		d.loginFailed(err, time.Since(start))
		return
	}
	defer func() { _ = s.Close() }()
	d.rep.add(Finding{ID: "login", Status: OK, Summary: fmt.Sprintf("logged in as %s in %v (one attempt)", d.user(), time.Since(start).Round(time.Millisecond)),
		Evidence: "a rejected login is never retried by haul, nor probed by doctor (no wrong password is sent)"})
	if st := d.firstTLS(); st != nil {
		d.rep.add(Finding{ID: "tls-control", Status: OK, Summary: fmt.Sprintf("control connection: %s, %s, certificate verified", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite)),
			Data: map[string]any{"version": tls.VersionName(st.Version)}})
	}
	feats := d.ftpFeatures(s)
	d.ftpTypeI(ctx, s)
	d.ftpRTT(ctx, s)
	mode := d.ftpDataChannel(ctx, s)
	if mode == "" {
		return
	}
	file, size := d.ftpReadable(ctx, s, mode)
	var wrote string
	if d.opts.WriteDir != "" {
		wrote = d.ftpWriteTest(ctx, s, mode, feats)
		if file == "" && wrote != "" {
			if fi, err := s.Stat(ctx, wrote); err == nil && fi.Size >= 2*windowSize {
				file, size = wrote, fi.Size
			}
		}
	}
	d.ftpResume(ctx, s, mode, file, size)
	d.ftpThroughput(ctx, s, mode, file, size)
	if wrote != "" {
		if err := s.Remove(ctx, wrote); err != nil {
			d.rep.add(Finding{ID: "cleanup", Status: Warn, Summary: "could not remove the test file " + wrote, Evidence: err.Error()})
		}
	}
	_ = s.Close()
	if d.opts.ProbeLimit > 0 {
		d.connLimit(ctx, func(ctx context.Context) (io.Closer, error) { return d.dialFTP(ctx, 0) })
	}
	if d.opts.ProbeIdle > 0 {
		d.ftpIdle(ctx, mode, file, size)
	}
	d.segments()
}

func (d *doc) user() string {
	if d.ep.User != "" {
		return d.ep.User
	}
	if d.cfg.User != "" {
		return d.cfg.User
	}
	return "anonymous"
}

// dialFTP logs in once, as a transfer does, with keepalive ka (0: as
// configured).
func (d *doc) dialFTP(ctx context.Context, ka time.Duration) (*pftp.Session, error) {
	s, err := d.dialer(ka)(ctx)
	if err != nil {
		return nil, err
	}
	fs, ok := s.(*pftp.Session)
	if !ok {
		_ = s.(io.Closer).Close()
		return nil, fmt.Errorf("doctor: unexpected session type %T", s)
	}
	return fs, nil
}

// loginFailed reports the dial or login error that stops the diagnosis.
func (d *doc) loginFailed(err error, took time.Duration) {
	d.rep.Err = err
	f := Finding{ID: "login", Status: Fail, Evidence: err.Error()}
	switch {
	case errors.Is(err, protocol.ErrAuth):
		f.Summary = fmt.Sprintf("login as %s rejected (after %v); haul does not retry it, nor does doctor", d.user(), took.Round(time.Millisecond))
		f.Fix = "check the user name and password (--password-file, HAUL_PASSWORD, ~/.netrc) or key (--identity); servers lock accounts after a few failed logins"
	case errors.Is(err, protocol.ErrHostKey):
		f.ID = "identity"
		if d.ep.Scheme == "sftp" {
			f.Summary = "the server's SSH host key is not verified: refused, nothing sent"
			f.Fix = "compare the fingerprint above with the one the server's administrator gives (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on the server), then add it to known_hosts (--known-hosts) or connect once with --accept-new-host-key; never --insecure-host-key"
		} else {
			f.Summary = "the server's TLS certificate does not verify: refused, nothing sent"
			f.Fix = "use a certificate from a CA the client trusts, with the host name in its SAN, or pass the CA with --ca-file"
		}
	case errors.Is(err, fs.ErrNotExist):
		f.ID, f.Summary = "connect", "no such host"
	case errors.Is(err, protocol.ErrProtocol):
		f.ID, f.Summary = "connect", "the server does not speak this protocol here"
		f.Fix = "check the scheme and port (ftp:// 21, sftp:// 22)"
	case errors.Is(err, protocol.ErrTransient):
		f.ID, f.Summary = "connect", "could not connect or log in"
		var pe *protocol.Error
		if errors.As(err, &pe) && pe.Code == 421 {
			f.Summary = "the server refused the connection (421): too many connections, or it is shutting down"
			f.Fix = "close other sessions from this address, or ask for a higher per-address limit (vsftpd max_per_ip, proftpd MaxClientsPerHost, pure-ftpd -C)"
		}
	default:
		f.Summary = "could not log in"
	}
	d.rep.add(f)
}

// tlsCertificate looks at the certificate without trusting it, then
// verifies it as a transfer would, to say what is wrong with it.
func (d *doc) tlsCertificate(ctx context.Context) {
	name := d.ep.Host
	var roots *x509.CertPool
	if d.cfg.TLSConfig != nil {
		if d.cfg.TLSConfig.ServerName != "" {
			name = d.cfg.TLSConfig.ServerName
		}
		roots = d.cfg.TLSConfig.RootCAs
	}
	st, err := pftp.InspectTLS(ctx, d.ep.Addr(), d.ep.Scheme == "ftps+implicit", name, 15*time.Second)
	if err != nil {
		d.rep.add(Finding{ID: "tls", Status: Fail, Summary: "no TLS handshake", Evidence: err.Error(),
			Fix: "server: enable TLS (vsftpd ssl_enable=YES, proftpd TLSEngine on) or use an ftp:// URL if the network is trusted"})
		return
	}
	f := Finding{ID: "tls-cert", Data: map[string]any{"version": tls.VersionName(st.Version)}}
	if len(st.PeerCertificates) == 0 {
		f.Status, f.Summary = Fail, "the server sent no certificate"
		d.rep.add(f)
		return
	}
	leaf := st.PeerCertificates[0]
	var chain []string
	for _, c := range st.PeerCertificates {
		chain = append(chain, protocol.ServerText(c.Subject.CommonName))
	}
	names := append([]string{}, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	left := time.Until(leaf.NotAfter)
	f.Evidence = fmt.Sprintf("%s %s; chain %s (issuer %q); names %s; expires %s (%d days)",
		tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), strings.Join(chain, " <- "),
		protocol.ServerText(leaf.Issuer.CommonName), strings.Join(names, ","), leaf.NotAfter.Format("2006-01-02"), int(left.Hours()/24))
	f.Data["expires"] = leaf.NotAfter
	inter := x509.NewCertPool()
	for _, c := range st.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, verr := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter})
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	switch {
	case verr == nil && left < 14*24*time.Hour:
		f.Status, f.Summary = Warn, fmt.Sprintf("certificate verifies for %s but expires in %d days", name, int(left.Hours()/24))
		f.Fix = "renew the server's certificate"
	case verr == nil:
		f.Status, f.Summary = OK, fmt.Sprintf("certificate verifies for %s", name)
	case errors.As(verr, &ua):
		f.Status, f.Summary = Fail, fmt.Sprintf("certificate not trusted: signed by unknown authority %q", protocol.ServerText(leaf.Issuer.CommonName))
		f.Fix = "pass the CA that signed it with --ca-file (after checking it out of band), or install a certificate from a trusted CA on the server; haul never skips verification"
	case errors.As(verr, &hn):
		f.Status, f.Summary = Fail, fmt.Sprintf("certificate does not name %s (it names %s)", name, strings.Join(names, ","))
		f.Fix = "connect with a host name the certificate names, or reissue it with this name in its SAN"
	case errors.As(verr, &ci) && ci.Reason == x509.Expired:
		f.Status, f.Summary = Fail, "certificate expired or not yet valid"
		f.Fix = "renew the server's certificate (and check this machine's clock)"
	default:
		f.Status, f.Summary = Fail, "certificate does not verify"
		f.Fix = "install a valid certificate chain on the server"
	}
	if verr != nil {
		f.Evidence += "; " + verr.Error()
	}
	d.rep.add(f)
}

// ftpFeatures reports FEAT and what haul will use as a result.
func (d *doc) ftpFeatures(s *pftp.Session) map[string]string {
	feats := map[string]string{}
	for _, l := range s.Features() {
		name, arg, _ := strings.Cut(strings.TrimSpace(l), " ")
		feats[strings.ToUpper(name)] = strings.TrimSpace(arg)
	}
	has := func(n string) bool { _, ok := feats[n]; return ok }
	var list []string
	for _, n := range []string{"REST", "SIZE", "MDTM", "MLST", "EPSV", "AUTH", "HASH", "XSHA256", "XSHA1", "XMD5", "XCRC", "RANG", "UTF8", "AVBL"} {
		if has(n) {
			v := n
			if feats[n] != "" {
				v += " " + feats[n]
			}
			list = append(list, protocol.ServerText(v))
		}
	}
	f := Finding{ID: "features", Status: OK, Summary: "FEAT: " + strings.Join(list, ", "), Data: map[string]any{"feat": list}}
	if len(feats) == 0 {
		f.Status, f.Summary = Warn, "the server answered FEAT with no features (an old or minimal server)"
	}
	var missing []string
	if !strings.EqualFold(feats["REST"], "STREAM") {
		missing = append(missing, "REST STREAM (resume)")
	}
	if !has("SIZE") {
		missing = append(missing, "SIZE (resume point, size check)")
	}
	if len(missing) > 0 {
		f.Status = Warn
		f.Evidence = "not announced: " + strings.Join(missing, ", ")
		f.Fix = "server: enable restart and SIZE (they are standard: RFC 3659); without them haul restarts a broken transfer from byte 0 and checks sizes by listing"
	}
	d.rep.add(f)
	if d.ep.Scheme == "ftp" && strings.Contains(strings.ToUpper(feats["AUTH"]), "TLS") {
		d.rep.add(Finding{ID: "tls-offered", Status: Info,
			Summary: "the server announces AUTH TLS: an ftps:// URL would encrypt the password and the data (plain ftp:// sends both in clear)"})
	}

	hv := Finding{ID: "verify", Status: OK}
	algos := s.HashAlgorithms()
	switch {
	case has("XSHA256") || has("XSHA1") || has("XMD5") || has("XCRC"):
		hv.Summary = fmt.Sprintf("haul verifies with the server's hash of byte ranges (%s: X-commands with offsets)", strings.Join(algos, ", "))
	case len(algos) > 0:
		hv.Summary = fmt.Sprintf("haul verifies with the server's HASH (%s, whole files)", strings.Join(algos, ", "))
	default:
		hv.Status = Info
		hv.Summary = "no server-side hash (HASH/XSHA256): haul verifies by size, and by re-reading 64 KiB before each resume point"
		hv.Fix = "server: proftpd's mod_digest gives HASH and XSHA256 with ranges; or use --verify readback for a full comparison"
	}
	hv.Data = map[string]any{"algorithms": algos}
	d.rep.add(hv)
	return feats
}

func (d *doc) ftpTypeI(ctx context.Context, s *pftp.Session) {
	code, msg, err := s.Command(ctx, "TYPE I")
	f := Finding{ID: "binary", Evidence: fmt.Sprintf("TYPE I -> %d %s", code, protocol.ServerText(msg))}
	switch {
	case err != nil:
		f.Status, f.Summary, f.Evidence = Fail, "TYPE I failed", err.Error()
	case code/100 == 2:
		f.Status, f.Summary = OK, "binary mode (TYPE I) accepted; haul sends it at every login, so no transfer is ASCII-mangled"
	default:
		f.Status, f.Summary = Fail, "the server refuses binary mode (TYPE I): files would be altered"
		f.Fix = "server: allow TYPE I (every server does unless misconfigured)"
	}
	d.rep.add(f)
}

// ftpRTT times a few NOOPs: the control connection's round trip.
func (d *doc) ftpRTT(ctx context.Context, s *pftp.Session) {
	var ts []time.Duration
	for range 5 {
		t := time.Now()
		if code, _, err := s.Command(ctx, "NOOP"); err != nil || code/100 != 2 {
			break
		}
		ts = append(ts, time.Since(t))
	}
	d.rttFinding(ts, "NOOP")
}

func (d *doc) rttFinding(ts []time.Duration, how string) {
	if len(ts) == 0 {
		d.rep.add(Finding{ID: "rtt", Status: Skip, Summary: "could not time a round trip"})
		return
	}
	slices.Sort(ts)
	d.rtt = ts[len(ts)/2]
	d.rep.add(Finding{ID: "rtt", Status: Info, Summary: fmt.Sprintf("round trip %v (median of %d %s)", d.rtt.Round(10*time.Microsecond), len(ts), how),
		Data: map[string]any{"ms": float64(d.rtt.Microseconds()) / 1000}})
}

// ftpDataChannel tries EPSV and PASV and compares the address PASV
// announces with the control host. It returns the mode that works ("" if
// none).
func (d *doc) ftpDataChannel(ctx context.Context, s *pftp.Session) string {
	var works string
	for _, mode := range []string{"EPSV", "PASV"} {
		p, err := s.ProbeData(ctx, mode, "LIST", 0, listMax)
		f := Finding{ID: strings.ToLower(mode), Data: map[string]any{}}
		switch {
		case err != nil:
			f.Status, f.Summary, f.Evidence = Fail, mode+": the data connection broke", err.Error()
		case p.Port == 0:
			f.Status, f.Summary = Warn, fmt.Sprintf("%s refused or unusable", mode)
			f.Evidence = fmt.Sprintf("%s -> %d %s", mode, p.Code, p.Reply)
			if mode == "EPSV" {
				f.Status = Info
				f.Summary += "; haul falls back to PASV"
			}
		case p.HandshakeErr != nil || p.StartCode >= 400 || p.FinalCode/100 != 2:
			f.Status = Fail
			f.Summary = fmt.Sprintf("%s: LIST over the data connection failed", mode)
			f.Evidence = fmt.Sprintf("LIST -> %d %s; final %d %s", p.StartCode, p.StartReply, p.FinalCode, p.FinalReply)
			if p.HandshakeErr != nil {
				f.Evidence += "; TLS handshake: " + p.HandshakeErr.Error()
			}
			if p.StartCode == 522 || strings.Contains(strings.ToLower(p.FinalReply), "reuse") {
				f.Summary = "the server demands TLS session reuse on data connections and this client's session was not resumed"
				f.Fix = "haul resumes the control session (fixed server name, session cache); with TLS 1.3 some servers need TLS 1.2: server vsftpd ssl_tlsv1_3=NO, or require_ssl_reuse=NO"
			} else {
				f.Fix = "check the server's passive port range is open in its firewall (vsftpd pasv_min_port/pasv_max_port, proftpd PassivePorts)"
			}
		default:
			f.Status = OK
			f.Summary = fmt.Sprintf("%s works: data port %d on %s", mode, p.Port, p.ControlHost)
			if works == "" {
				works = mode
			}
		}
		d.rep.add(f)
		if err != nil {
			return works
		}
		if mode == "PASV" && p.Port != 0 {
			d.pasvAddress(p)
		}
		if p.TLS != nil && mode == works {
			d.dataTLS(p)
		}
	}
	return works
}

// pasvAddress compares the address PASV announces with the control host.
func (d *doc) pasvAddress(p pftp.DataProbe) {
	f := Finding{ID: "pasv-address", Data: map[string]any{"announced": p.AnnouncedHost, "control": p.ControlHost}}
	ann, err1 := netip.ParseAddr(p.AnnouncedHost)
	ctl, err2 := netip.ParseAddr(p.ControlHost)
	f.Evidence = fmt.Sprintf("PASV -> %d %s", p.Code, p.Reply)
	switch {
	case err1 != nil || err2 != nil:
		f.Status, f.Summary = Info, fmt.Sprintf("PASV announces %s, control host %s", p.AnnouncedHost, p.ControlHost)
	case ann.Unmap() == ctl.Unmap():
		f.Status, f.Summary = OK, fmt.Sprintf("PASV announces the control host %s", p.AnnouncedHost)
	default:
		kind := "another address"
		switch {
		case ann.IsUnspecified():
			kind = "no address"
		case ann.IsPrivate() && !ctl.IsPrivate() && !ctl.IsLoopback():
			kind = "a private address"
		case isDocumentation(ann):
			kind = "a reserved address that routes nowhere"
		}
		f.Status = Warn
		f.Summary = fmt.Sprintf("wrong PASV address: PASV announces %s (%s), not the control host %s: the classic NAT misconfiguration; haul ignores it and connects to %s, clients that trust it hang or fail", p.AnnouncedHost, kind, p.ControlHost, p.ControlHost)
		f.Fix = "server: announce the address clients reach it by (vsftpd pasv_address=, pasv_addr_resolve; proftpd MasqueradeAddress; pure-ftpd -P), or none behind NAT; clients: curl --ftp-skip-pasv-ip, lftp set ftp:ignore-pasv-address yes"
	}
	d.rep.add(f)
}

func isDocumentation(a netip.Addr) bool {
	for _, p := range []string{"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "100.64.0.0/10"} {
		if netip.MustParsePrefix(p).Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

// dataTLS reports TLS on the data connection: version, session reuse and
// the close.
func (d *doc) dataTLS(p pftp.DataProbe) {
	st := p.TLS
	f := Finding{ID: "tls-data", Status: OK, Data: map[string]any{"resumed": st.DidResume, "version": tls.VersionName(st.Version), "clean_close": p.CleanClose}}
	f.Summary = fmt.Sprintf("data connection: %s, session %s", tls.VersionName(st.Version), map[bool]string{true: "resumed from the control connection (require_ssl_reuse satisfied)", false: "NOT resumed"}[st.DidResume])
	if !st.DidResume {
		f.Status = Info
		f.Evidence = "the server accepted a data connection with a new TLS session: it does not demand reuse"
	}
	if p.EOF {
		if p.CleanClose {
			f.Summary += "; the server ends data with a TLS close_notify"
		} else {
			f.Summary += "; the server ends data WITHOUT a TLS close_notify (truncation could not be told from the end: haul checks sizes)"
			if f.Status == OK {
				f.Status = Info
			}
		}
	}
	if st.Version == tls.VersionTLS13 {
		f.Evidence = strings.TrimPrefix(f.Evidence+"; TLS 1.3: large uploads ending in 426 are reported against vsftpd and proftpd; haul closes data connections gracefully, other clients may need the server limited to TLS 1.2", "; ")
	}
	d.rep.add(f)
}

// ftpReadable picks the file the resume and throughput probes read:
// Options.ReadPath, else the largest regular file of the login
// directory's listing (at most a few).
func (d *doc) ftpReadable(ctx context.Context, s *pftp.Session, mode string) (string, int64) {
	return d.readable(ctx, s)
}

// readable works for both protocols through protocol.Session.
func (d *doc) readable(ctx context.Context, s protocol.Session) (string, int64) {
	if d.opts.ReadPath != "" {
		fi, err := s.Stat(ctx, d.opts.ReadPath)
		if err != nil || fi.IsDir {
			d.rep.add(Finding{ID: "read-file", Status: Warn, Summary: "cannot read " + d.opts.ReadPath, Evidence: fmt.Sprint(err)})
			return "", 0
		}
		return d.opts.ReadPath, fi.Size
	}
	dr, ok := s.(protocol.DirReader)
	if !ok {
		return "", 0
	}
	ents, err := dr.ReadDir(ctx, ".")
	if err != nil {
		return "", 0
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Size > ents[j].Size })
	for _, e := range ents {
		if !e.IsDir && e.Size >= 2*windowSize && !strings.HasPrefix(e.Name, ".haul-doctor") {
			return e.Name, e.Size
		}
	}
	return "", 0
}

// ftpResume reads a window at 0 and at an offset and proves the second
// is at that offset.
func (d *doc) ftpResume(ctx context.Context, s *pftp.Session, mode, file string, size int64) {
	if file == "" {
		d.rep.add(Finding{ID: "resume-read", Status: Skip, Summary: "no readable file to test REST on",
			Fix: "name one with --read-file PATH, or let doctor write one with --write-test DIR"})
		return
	}
	off, w := resumeWindow(size)
	head, err := s.ProbeData(ctx, mode, "RETR "+file, 0, int(off)+w)
	f := Finding{ID: "resume-read", Data: map[string]any{"file": file, "offset": off}}
	if err != nil || len(head.Data) < int(off)+w {
		f.Status, f.Summary = Skip, "could not read "+file
		f.Evidence = fmt.Sprintf("RETR -> %d %s %v", head.StartCode, head.StartReply, err)
		d.rep.add(f)
		return
	}
	at, err := s.ProbeData(ctx, mode, "RETR "+file, off, w)
	want := head.Data[off : int(off)+w]
	switch {
	case err != nil:
		f.Status, f.Summary, f.Evidence = Fail, "the connection broke during a RETR at an offset", err.Error()
	case at.RestCode != 350:
		f.Status = Warn
		f.Summary = fmt.Sprintf("REST refused (%d): haul restarts an interrupted download or upload from byte 0", at.RestCode)
		f.Evidence = fmt.Sprintf("REST %d -> %d %s", off, at.RestCode, at.RestReply)
		f.Fix = "server: allow REST (pyftpdlib, proftpd AllowRetrieveRestart/AllowStoreRestart on); haul works but a failure costs the whole file"
	case bytes.Equal(at.Data, want):
		f.Status = OK
		f.Summary = fmt.Sprintf("REST honoured on RETR: the %d bytes read at offset %d of %s are the file's bytes there", len(at.Data), off, file)
		f.Evidence = fmt.Sprintf("REST %d -> %d %s", off, at.RestCode, at.RestReply)
		if bytes.Equal(want, head.Data[:w]) {
			f.Status, f.Summary = Info, "REST answered 350, but the file's bytes at 0 and at the offset are the same: cannot prove where the server started"
		}
	case bytes.HasPrefix(head.Data, at.Data[:min(len(at.Data), len(head.Data))]) && len(at.Data) > 0:
		f.Status = Fail
		f.Summary = fmt.Sprintf("REST accepted (350) but IGNORED: RETR after REST %d sent the file from byte 0; a client that trusts the 350 corrupts every resumed file", off)
		f.Evidence = fmt.Sprintf("REST %d -> %d %s; first bytes %x, want %x", off, at.RestCode, at.RestReply, at.Data[:min(8, len(at.Data))], want[:8])
		f.Fix = "server: fix or disable REST (announce no REST STREAM); haul re-reads 64 KiB before each resume point (Config.Overlap) and does not append after a mismatch"
	default:
		f.Status = Fail
		f.Summary = fmt.Sprintf("RETR after REST %d sent bytes that are not the file's bytes at that offset", off)
		f.Evidence = fmt.Sprintf("got %x, want %x", at.Data[:min(8, len(at.Data))], want[:8])
		f.Fix = "server: fix REST; do not resume against it"
	}
	d.rep.add(f)
}

// resumeWindow picks the offset and length of the resume probe.
func resumeWindow(size int64) (int64, int) {
	w := windowSize
	off := min(size/2, 1<<20)
	if off+int64(w) > size {
		w = int(size - off)
	}
	return off, w
}

// ftpThroughput times a read of up to throughputMax bytes.
func (d *doc) ftpThroughput(ctx context.Context, s *pftp.Session, mode, file string, size int64) {
	if file == "" {
		return
	}
	n := int(min(size, throughputMax))
	t := time.Now()
	p, err := s.ProbeData(ctx, mode, "RETR "+file, 0, n)
	el := time.Since(t)
	if err != nil || len(p.Data) == 0 {
		return
	}
	d.throughputFinding(int64(len(p.Data)), el)
}

func (d *doc) throughputFinding(n int64, el time.Duration) {
	mbps := float64(n) / el.Seconds() / 1e6
	f := Finding{ID: "throughput", Status: Info, Data: map[string]any{"bytes": n, "mb_per_s": mbps},
		Summary: fmt.Sprintf("read %d bytes in %v: %.1f MB/s on one connection (setup included)", n, el.Round(time.Millisecond), mbps)}
	if n < 4<<20 {
		f.Summary += "; too little data for a firm figure"
	}
	d.rep.add(f)
}

// ftpWriteTest writes a small file into WriteDir, resumes it with
// REST+STOR, reads it back, renames it and asks for free space. It returns
// the test file's path ("" when it could not be written).
func (d *doc) ftpWriteTest(ctx context.Context, s *pftp.Session, mode string, feats map[string]string) string {
	dir := strings.TrimSuffix(d.opts.WriteDir, "/")
	if _, ok := feats["AVBL"]; ok {
		code, msg, err := s.Command(ctx, "AVBL "+dir)
		f := Finding{ID: "free-space", Evidence: fmt.Sprintf("AVBL -> %d %s", code, protocol.ServerText(msg))}
		if n, perr := strconv.ParseInt(strings.TrimSpace(msg), 10, 64); err == nil && code == 213 && perr == nil {
			f.Data = map[string]any{"bytes": n}
			f.Status, f.Summary = OK, fmt.Sprintf("%d bytes free in %s", n, dir)
			if n < testFileSize {
				f.Status, f.Summary = Fail, fmt.Sprintf("%s is full: %d bytes free", dir, n)
				f.Fix = "free space on the server, or upload elsewhere"
			}
		} else {
			f.Status, f.Summary = Info, "the server did not tell its free space"
		}
		d.rep.add(f)
	} else {
		d.rep.add(Finding{ID: "free-space", Status: Info, Summary: "the server offers no free-space command (AVBL): a full disk shows only when an upload fails"})
	}
	name := testName(dir)
	content := make([]byte, testFileSize)
	_, _ = rand.Read(content)
	f := Finding{ID: "write", Data: map[string]any{"path": name}}
	if err := d.writeAt(ctx, s, name, 0, content); err != nil {
		_ = s.Remove(ctx, name)
		d.writeFailed(&f, dir, err)
		d.rep.add(f)
		return ""
	}
	f.Status, f.Summary = OK, fmt.Sprintf("wrote %d bytes to %s", len(content), name)
	d.rep.add(f)

	// Resume: rewrite the second half from its offset with new bytes.
	half := int64(len(content) / 2)
	tail := make([]byte, len(content)-int(half))
	_, _ = rand.Read(tail)
	rf := Finding{ID: "resume-write", Data: map[string]any{"offset": half}}
	err := d.writeAt(ctx, s, name, half, tail)
	switch {
	case errors.Is(err, protocol.ErrResumeUnsupported):
		rf.Status, rf.Summary, rf.Evidence = Warn, "REST+STOR refused: haul restarts interrupted uploads from byte 0", err.Error()
		rf.Fix = "server: allow resumed uploads (proftpd AllowStoreRestart on; vsftpd and pure-ftpd allow them)"
	case err != nil:
		rf.Status, rf.Summary, rf.Evidence = Fail, "a resumed upload (REST+STOR) failed", err.Error()
	default:
		want := append(append([]byte{}, content[:half]...), tail...)
		p, perr := s.ProbeData(ctx, mode, "RETR "+name, 0, len(want)+1)
		switch {
		case perr != nil:
			rf.Status, rf.Summary, rf.Evidence = Warn, "could not read the test file back", perr.Error()
		case bytes.Equal(p.Data, want):
			rf.Status, rf.Summary = OK, fmt.Sprintf("REST %d + STOR honoured: the file holds the first half and the resumed second half", half)
		case len(p.Data) > len(want):
			rf.Status, rf.Summary = Fail, fmt.Sprintf("REST+STOR appended instead of writing at the offset: %d bytes, want %d", len(p.Data), len(want))
			rf.Fix = "server: fix REST for STOR; upload with --segments 1 and never resume against it"
		default:
			rf.Status, rf.Summary = Fail, fmt.Sprintf("REST %d + STOR did not write at the offset (file has %d bytes, content differs)", half, len(p.Data))
			rf.Fix = "server: fix REST for STOR; never resume uploads against it"
		}
	}
	d.rep.add(rf)

	to := name + ".renamed"
	nf := Finding{ID: "rename"}
	if err := s.Rename(ctx, name, to); err != nil {
		nf.Status, nf.Summary, nf.Evidence = Warn, "rename refused: uploads need --direct (no .part file and rename)", err.Error()
		nf.Fix = "server: allow RNFR/RNTO for this user, or upload with --direct"
		d.rep.add(nf)
		return name
	}
	nf.Status, nf.Summary = OK, "rename allowed (haul uploads to NAME.part and renames it once verified)"
	d.rep.add(nf)
	return to
}

func testName(dir string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := fmt.Sprintf(".haul-doctor-%x", b)
	if dir == "" || dir == "." {
		return name
	}
	return path.Join(dir, name)
}

// writeAt writes data at off through the session's own writer, as an
// upload does.
func (d *doc) writeAt(ctx context.Context, s protocol.Session, name string, off int64, data []byte) error {
	w, err := s.OpenWriter(ctx, name, off)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		_ = w.Close()
		return err
	}
	return w.Close()
}

func (d *doc) writeFailed(f *Finding, dir string, err error) {
	f.Status, f.Evidence = Fail, err.Error()
	switch {
	case errors.Is(err, protocol.ErrNoSpace):
		f.Summary = fmt.Sprintf("disk full: the server has no space for a %d-byte file in %s", testFileSize, dir)
		f.Fix = "free space on the server or raise the quota; haul stops at once on 452/552 and keeps the partial file"
	case errors.Is(err, protocol.ErrStorage):
		f.Summary = fmt.Sprintf("the server failed to store a %d-byte file in %s (most often a full disk or quota: vsftpd says no more than 451)", testFileSize, dir)
		f.Fix = "check free space and quota on the server; haul retries 451 and gives up with \"no space\" when it repeats without progress"
	case errors.Is(err, fs.ErrPermission):
		f.Summary = "no permission to write in " + dir
		f.Fix = "pick a writable --write-test directory, or grant write access"
	case errors.Is(err, fs.ErrNotExist):
		f.Summary = dir + " does not exist"
	default:
		f.Summary = "could not write a test file in " + dir
	}
}

// connLimit opens up to ProbeLimit connections at once (one login each)
// and reports how many the server accepted.
func (d *doc) connLimit(ctx context.Context, dial func(ctx context.Context) (io.Closer, error)) {
	var held []io.Closer
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	var refusal error
	for len(held) < d.opts.ProbeLimit {
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		c, err := dial(dctx)
		cancel()
		if err != nil {
			refusal = err
			break
		}
		held = append(held, c)
	}
	n := len(held)
	f := Finding{ID: "conn-limit", Data: map[string]any{"count": n, "probed": d.opts.ProbeLimit}}
	switch {
	case refusal == nil:
		f.Status, f.Summary = OK, fmt.Sprintf("the server accepted all %d connections asked for (--probe-limit)", n)
		d.maxConns = n
	case errors.Is(refusal, protocol.ErrAuth):
		f.Status, f.Summary, f.Evidence = Fail, fmt.Sprintf("connection %d: login rejected (a per-user session limit answering 530?); stopped, no retry", n+1), refusal.Error()
		d.maxConns = n
	default:
		d.maxConns = n
		f.Status = Warn
		f.Summary = fmt.Sprintf("the server accepts %d connections at once from this address, and refused connection %d", n, n+1)
		f.Evidence = refusal.Error()
		switch {
		case n <= 1:
			f.Fix = "use --segments 1 and one transfer at a time; server: raise the per-address limit (vsftpd max_per_ip, proftpd MaxClientsPerHost, pure-ftpd -C, sshd MaxStartups/MaxSessions)"
		case n < 4:
			f.Fix = fmt.Sprintf("keep --segments and parallel transfers at %d or fewer in total (haul's pool opens up to 4 by default); server: raise the per-address limit (vsftpd max_per_ip, proftpd MaxClientsPerHost, pure-ftpd -C)", n)
		default:
			f.Status = OK
			f.Fix = fmt.Sprintf("keep --segments and parallel transfers at %d or fewer in total", n)
		}
	}
	d.rep.add(f)
}

// ftpIdle measures how long an idle control connection survives, then an
// idle data connection where a large file can be read.
func (d *doc) ftpIdle(ctx context.Context, mode, file string, size int64) {
	conns := idleConns
	if d.maxConns > 0 && d.maxConns < conns {
		conns = d.maxConns
	}
	// The data probe runs beside the control search when the server's
	// limit leaves room for it, else after it.
	var dataFinding Finding
	dataDone := make(chan struct{})
	runData := func() {
		defer close(dataDone)
		dataFinding = d.ftpIdleData(ctx, mode, file, size)
	}
	parallel := d.maxConns == 0 || d.maxConns > conns
	if parallel {
		go runData()
	}
	answer := d.answerTimeout()
	r := idleSearch(ctx, d.opts.ProbeIdle, conns, func(ctx context.Context, wait time.Duration) idleOutcome {
		s, err := dialBusy(ctx, func(ctx context.Context) (*pftp.Session, error) { return d.dialFTP(ctx, -1) }) // no keepalive: idle means idle
		if err != nil {
			return idleOutcome{}
		}
		defer s.Close()
		res, err := s.IdleControl(ctx, wait, answer)
		o := idleOutcome{measured: err == nil}
		switch {
		case err != nil:
		case res.Code != 0:
			o.closedAt = res.Waited
			o.evidence = fmt.Sprintf("after %.1fs idle the server said %d %s", seconds(res.Waited), res.Code, res.Reply)
		case res.Closed:
			o.closedAt = res.Waited
			o.evidence = fmt.Sprintf("after %.1fs idle the server closed the connection without a word", seconds(res.Waited))
		case res.NoopCode/100 == 2:
			o.survived = true
		case res.NoopCode == 421:
			o.closedAt = wait
			o.evidence = fmt.Sprintf("NOOP after %.1fs idle answered 421", seconds(wait))
		case res.NoopSilent:
			o.silent = true
		default:
			o.silent = true
		}
		return o
	})
	if !parallel {
		runData()
	}
	<-dataDone
	d.rep.add(d.idleFinding("idle-control", "control connection", r))
	d.rep.add(dataFinding)
}

// ftpIdleData holds a download's data connection unread and listens on
// the control connection for the server's data timeout.
func (d *doc) ftpIdleData(ctx context.Context, mode, file string, size int64) Finding {
	const minFile = 32 << 20 // more than socket buffers hold
	if file == "" || size < minFile || mode == "" {
		return Finding{ID: "idle-data", Status: Skip,
			Summary: fmt.Sprintf("needs a readable file of at least %d MiB (--read-file) so that the server's writes block", minFile>>20)}
	}
	s, err := dialBusy(ctx, func(ctx context.Context) (*pftp.Session, error) { return d.dialFTP(ctx, -1) })
	if err != nil {
		return Finding{ID: "idle-data", Status: Skip, Summary: "could not connect", Evidence: err.Error()}
	}
	defer s.Close()
	p, err := s.ProbeDataHold(ctx, mode, "RETR "+file, windowSize, d.opts.ProbeIdle, d.answerTimeout(), 16<<10)
	f := Finding{ID: "idle-data", Data: map[string]any{}}
	switch {
	case err != nil:
		f.Status, f.Summary, f.Evidence = Skip, "the probe broke", err.Error()
	case p.HoldCode != 0:
		f.Status = Warn
		f.Data["seconds"] = seconds(p.HeldFor)
		f.Summary = fmt.Sprintf("the server ends a stalled data connection after %.1fs", seconds(p.HeldFor))
		f.Evidence = fmt.Sprintf("%d %s on the control connection", p.HoldCode, p.HoldReply)
		f.Fix = fmt.Sprintf("haul: --stall-timeout below %.0fs recovers first; server: raise it (vsftpd data_connection_timeout, proftpd TimeoutStalled) if clients are slow", seconds(p.HeldFor))
	case p.EOF:
		f.Status, f.Summary = Skip, "the file fit in the socket buffers: nothing stalled"
	case p.FinalCode == 0:
		f.Status = Fail
		f.Data["seconds"] = seconds(p.HeldFor)
		f.Summary = fmt.Sprintf("after the data connection stalled for %.0fs, the control connection no longer answered: the final reply (226/426) of a long transfer would never arrive", seconds(p.HeldFor))
		f.Fix = "see idle-control: the path drops the idle control connection; haul's keepalive and --stall-timeout recover, other clients hang"
	default:
		f.Status, f.Summary = OK, fmt.Sprintf("a stalled data connection survived %.0fs", seconds(p.HeldFor))
		f.Data["seconds"] = seconds(p.HeldFor)
	}
	return f
}

// segments recommends a segment count from what was measured.
func (d *doc) segments() {
	f := Finding{ID: "segments", Status: Info}
	n := 1
	why := "the round trip is short: one stream fills the link"
	if d.rtt >= 10*time.Millisecond {
		n = 4
		why = fmt.Sprintf("a round trip of %v limits one stream: several ranges at once help", d.rtt.Round(time.Millisecond))
	}
	if d.maxConns > 0 && n >= d.maxConns {
		n = max(1, d.maxConns-1)
		why += fmt.Sprintf("; capped below the server's limit of %d connections", d.maxConns)
	}
	f.Summary = fmt.Sprintf("--segments %d (%s)", n, why)
	f.Data = map[string]any{"segments": n}
	d.rep.add(f)
}

// firstTLS returns the state of the first TLS handshake of the run (the
// control connection's), or nil.
func (d *doc) firstTLS() *tls.ConnectionState {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tlsFirst
}
