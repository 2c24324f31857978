package sftp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/openhaul/haul/protocol"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
	"golang.org/x/sys/cpu"
)

// tcpKeepAlive is the TCP keepalive set on the connection: about a minute
// to notice a dead peer when no SSH keepalive is running.
var tcpKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 15 * time.Second, Count: 4}

// errDialTimeout marks a dial or handshake that ran past WithDialTimeout.
var errDialTimeout = fmt.Errorf("sftp: dial timed out: %w", os.ErrDeadlineExceeded)

// handshakeState records what happened during one SSH handshake, so that a
// failure can be classified without reading error messages.
type handshakeState struct {
	mu          sync.Mutex
	hostKeyOK   bool
	hostKeyErr  *HostKeyError
	authReplies int
	tried       []string
}

// Dial opens one TCP connection to addr ("host:port"; port 22 when
// omitted), performs the SSH handshake with host-key verification,
// authenticates once and starts the SFTP subsystem.
//
// ctx bounds the whole dial (TCP connect, handshake, authentication, SFTP
// version exchange), as does WithDialTimeout. An unknown (unless
// WithAcceptNewHostKey records it) or mismatching host key yields an error
// matching protocol.ErrHostKey whose message names the received and
// expected fingerprints (see HostKeyError); a rejected login yields
// protocol.ErrAuth; a server that greets in FTP (an
// ftp port) yields protocol.ErrProtocol at once; a host name DNS does not
// know yields fs.ErrNotExist; other network failures yield
// protocol.ErrTransient.
func Dial(ctx context.Context, addr string, opts ...Option) (*Session, error) {
	o, err := applyOptions(opts)
	if err != nil {
		return nil, &protocol.Error{Op: "dial", Err: err}
	}
	addr, err = normalizeAddr(addr)
	if err != nil {
		return nil, &protocol.Error{Op: "dial", Err: err}
	}
	if err := ctx.Err(); err != nil {
		return nil, &protocol.Error{Op: "dial", Err: err}
	}
	hostKeys, knownKeys, err := hostKeyCallbacks(&o)
	if err != nil {
		return nil, &protocol.Error{Op: "dial", Kind: protocol.ErrHostKey, Err: err}
	}

	dctx, cancel := context.WithTimeout(ctx, o.dialTimeout)
	defer cancel()
	dialErr := func(op string, err error) error {
		switch {
		case ctx.Err() != nil:
			return &protocol.Error{Op: op, Err: ctx.Err()}
		case dctx.Err() != nil:
			return &protocol.Error{Op: op, Kind: protocol.ErrTransient, Err: errors.Join(errDialTimeout, err)}
		}
		return classify(op, "", err, o.password)
	}

	log := o.logger.With("addr", addr, "user", o.user)
	d := net.Dialer{KeepAliveConfig: tcpKeepAlive}
	nc, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, dialErr("dial", err)
	}
	conn := &countingConn{Conn: nc}
	conn.buf = bufio.NewReaderSize(rawReader{conn}, readBufferSize)
	greeting := &greetingConn{countingConn: conn}
	// The handshake has no context of its own: bound it by a deadline and
	// by closing the connection when ctx ends.
	if dl, ok := dctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(dctx, func() { _ = conn.Close() })

	st := &handshakeState{}
	cfg := &ssh.ClientConfig{
		User: o.user,
		HostKeyCallback: func(host string, remote net.Addr, key ssh.PublicKey) error {
			err := hostKeys(host, remote, key)
			st.mu.Lock()
			defer st.mu.Unlock()
			if err != nil {
				if he := newHostKeyError(host, key, err); he != nil {
					st.hostKeyErr = he
					return he
				}
				return err
			}
			st.hostKeyOK = true
			log.Debug("sftp: host key accepted", "type", key.Type(), "fingerprint", ssh.FingerprintSHA256(key))
			return nil
		},
		// Called after every authentication reply from the server.
		AuthCallback: func(c *ssh.ClientAuthContext) (ssh.AuthMethod, error) {
			st.mu.Lock()
			st.authReplies++
			st.tried = slices.Clone(c.TriedMethods)
			st.mu.Unlock()
			return nil, nil
		},
	}
	if knownKeys != nil {
		cfg.HostKeyAlgorithms = hostKeyAlgorithms(knownKeys, addr, conn.RemoteAddr())
	}
	if cfg.HostKeyAlgorithms == nil {
		// Never the library's default order, which offers RSA before
		// ed25519: a server that advertises RSA without holding an RSA
		// key (seen) aborts the handshake when RSA is chosen.
		cfg.HostKeyAlgorithms = preferredHostKeyAlgorithms()
	}
	cfg.Ciphers = cipherPreference()

	signers := slices.Clone(o.signers)
	if o.agent {
		ac, err := (&net.Dialer{}).DialContext(dctx, "unix", os.Getenv("SSH_AUTH_SOCK"))
		if err != nil {
			log.Warn("sftp: ssh agent unreachable", "err", err)
		} else {
			defer ac.Close()
			as, err := agent.NewClient(ac).Signers()
			if err != nil {
				log.Warn("sftp: ssh agent keys unavailable", "err", err)
			}
			signers = append(signers, as...)
		}
	}
	if len(signers) > 0 {
		cfg.Auth = append(cfg.Auth, ssh.PublicKeys(signers...))
	}
	if o.hasPassword {
		pw := o.password
		cfg.Auth = append(cfg.Auth, ssh.PasswordCallback(func() (string, error) { return pw, nil }))
	}

	c, chans, reqs, err := ssh.NewClientConn(greeting, addr, cfg)
	if err != nil {
		stop()
		_ = conn.Close()
		var ge *greetingError
		switch {
		case errors.As(err, &ge):
			return nil, shown(&protocol.Error{Op: "dial", Kind: protocol.ErrProtocol, Err: ge}, o.password)
		case ctx.Err() != nil || dctx.Err() != nil:
			return nil, dialErr("login", err)
		}
		return nil, handshakeError(st, o.user, err, o.password)
	}
	client := ssh.NewClient(c, chans, reqs)
	sc, err := startSFTP(client, &o)
	if err != nil {
		stop()
		_ = client.Close()
		return nil, dialErr("dial", err)
	}
	if !stop() {
		_ = client.Close()
		_ = sc.Close()
		return nil, dialErr("dial", context.Cause(dctx))
	}
	_ = conn.SetDeadline(time.Time{})
	var cipher string
	if am, ok := c.(ssh.AlgorithmsConnMetadata); ok {
		cipher = am.Algorithms().Write.Cipher
	}
	log.Debug("sftp: connected", "server", protocol.ServerText(string(c.ServerVersion()), o.password), "cipher", cipher,
		"packet", o.packetSize, "requests", o.concurrency)

	s := &Session{
		addr:   addr,
		opts:   o,
		log:    log,
		conn:   conn,
		ssh:    client,
		client: sc,
		done:   make(chan struct{}),
	}
	if o.keepAlive > 0 {
		s.wg.Add(1)
		go s.keepAliveLoop(o.keepAlive)
	}
	return s, nil
}

// handshakeError classifies a failed SSH handshake: a rejected host key,
// an authentication rejected after the host key was accepted, or a
// transport failure. secret is taken out of the server's words in it.
func handshakeError(st *handshakeState, user string, err error, secret string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.hostKeyErr != nil {
		return &protocol.Error{Op: "dial", Kind: protocol.ErrHostKey, Err: err}
	}
	if st.hostKeyOK && st.authReplies > 0 && protocol.Classify(err) == nil {
		// The server answered our authentication requests and the
		// handshake then failed without a transport error: rejected.
		ae := &authError{user: user, tried: st.tried, err: err}
		return shown(&protocol.Error{Op: "login", Kind: protocol.ErrAuth, Err: ae}, secret)
	}
	return classify("login", "", err, secret)
}

// greetingConn is the connection as the SSH handshake reads it. It looks at
// the first bytes the server sends: an SSH server starts with its version
// line, and x/crypto/ssh skips any other line while it waits for one, so
// an FTP server's greeting ("220 ...") would leave the dial waiting for
// the dial timeout. greetingConn fails the first read at once with a
// *greetingError instead. (A TLS server, such as implicit FTPS, sends
// nothing first; it closes the connection on SSH's version line.)
type greetingConn struct {
	*countingConn
	first   []byte // what was read before the check, up to maxShownGreeting bytes
	checked bool
}

func (c *greetingConn) Read(p []byte) (int, error) {
	n, err := c.countingConn.Read(p)
	if c.checked || n == 0 {
		return n, err
	}
	c.first = append(c.first, p[:min(n, maxShownGreeting-len(c.first))]...)
	if len(c.first) < 4 {
		return n, err
	}
	c.checked = true
	if ge := newGreetingError(c.first, append(c.first, c.peek()...)); ge != nil {
		return 0, ge
	}
	c.first = nil
	return n, err
}

// peek returns what the connection has buffered, up to maxShownGreeting
// bytes, without consuming it.
func (c *greetingConn) peek() []byte {
	if c.buf == nil {
		return nil
	}
	b, _ := c.buf.Peek(min(c.buf.Buffered(), maxShownGreeting))
	return b
}

// maxShownGreeting bounds the greeting a *greetingError keeps.
const maxShownGreeting = 128

// greetingError reports a server that greeted in another protocol. It
// matches protocol.ErrProtocol.
type greetingError struct {
	msg      string
	greeting string // the raw start of what the server sent
}

func (e *greetingError) Error() string {
	return fmt.Sprintf("%s (it began %q)", e.msg, e.greeting)
}

// Is makes a greetingError match protocol.ErrProtocol.
func (e *greetingError) Is(target error) bool { return target == protocol.ErrProtocol }

// newGreetingError returns the error for a server whose first bytes are
// head and whose greeting starts with seen, or nil for a server that may
// speak SSH. An FTP reply starts with three digits (the first 1 to 5) and
// a space or hyphen, which no SSH version line does.
func newGreetingError(head, seen []byte) *greetingError {
	if !(head[0] >= '1' && head[0] <= '5' && isDigit(head[1]) && isDigit(head[2]) && (head[3] == ' ' || head[3] == '-')) {
		return nil
	}
	line, _, _ := bytes.Cut(seen, []byte("\n"))
	return &greetingError{msg: "the server speaks FTP, not SSH: use an ftp:// or ftps:// URL",
		greeting: string(bytes.TrimRight(line[:min(len(line), maxShownGreeting)], "\r"))}
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

// placeholderKey is a public key no known_hosts file holds, used to ask the
// known_hosts callback which key types it knows for a host.
type placeholderKey struct{}

func (placeholderKey) Type() string                                 { return "haul-placeholder" }
func (placeholderKey) Marshal() []byte                              { return []byte("haul-placeholder") }
func (placeholderKey) Verify(data []byte, sig *ssh.Signature) error { return errors.New("placeholder") }

// hostKeyAlgorithms returns the host key algorithms to offer: first those
// known_hosts holds for addr, so the server presents a key we can verify
// (otherwise it may present its RSA key while known_hosts holds only its
// ed25519 key, a false mismatch), then every other supported algorithm in
// the order of modernHostKeyAlgorithms, so a server without any known key
// type still presents a key and the mismatch names it. nil means that
// known_hosts knows no key for addr (use preferredHostKeyAlgorithms).
func hostKeyAlgorithms(cb ssh.HostKeyCallback, addr string, remote net.Addr) []string {
	var ke *knownhosts.KeyError
	if err := cb(addr, remote, placeholderKey{}); !errors.As(err, &ke) || len(ke.Want) == 0 {
		return nil
	}
	var algs []string
	add := func(a ...string) {
		for _, x := range a {
			if !slices.Contains(algs, x) {
				algs = append(algs, x)
			}
		}
	}
	for _, k := range ke.Want {
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256)
		case ssh.CertAlgoRSAv01:
			add(ssh.CertAlgoRSASHA512v01, ssh.CertAlgoRSASHA256v01)
		default:
			add(t)
		}
	}
	add(modernHostKeyAlgorithms()...)
	return algs
}

// modernHostKeyAlgorithms returns every host key algorithm x/crypto/ssh
// supports, best first: certificates first (a host certificate is how a
// known_hosts @cert-authority line verifies a server), and within each
// group ed25519, then ECDSA, then RSA with SHA-2 (as OpenSSH orders them),
// then any other the library adds. The library's own default offers RSA
// first, and some servers advertise RSA without holding an RSA key: they
// abort the handshake when the client picks it.
func modernHostKeyAlgorithms() []string {
	algs := []string{
		ssh.CertAlgoED25519v01,
		ssh.CertAlgoECDSA256v01, ssh.CertAlgoECDSA384v01, ssh.CertAlgoECDSA521v01,
		ssh.CertAlgoRSASHA512v01, ssh.CertAlgoRSASHA256v01,
		ssh.KeyAlgoED25519,
		ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
		ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256,
	}
	supported := ssh.SupportedAlgorithms().HostKeys
	algs = slices.DeleteFunc(algs, func(a string) bool { return !slices.Contains(supported, a) })
	for _, a := range supported {
		if !slices.Contains(algs, a) {
			algs = append(algs, a)
		}
	}
	return algs
}

// preferredHostKeyAlgorithms is what a dial offers when known_hosts
// names no key type for the server (an unknown host, WithAcceptNewHostKey,
// WithInsecureIgnoreHostKey): modernHostKeyAlgorithms, then the legacy
// SHA-1 RSA and DSA algorithms the library's default also offers, last, so
// that the servers that connected before still do.
func preferredHostKeyAlgorithms() []string {
	return append(modernHostKeyAlgorithms(),
		ssh.KeyAlgoRSA, ssh.CertAlgoRSAv01, ssh.InsecureKeyAlgoDSA, ssh.InsecureCertAlgoDSAv01)
}

// cipherPreference returns the ciphers to offer, fastest here first (the
// client's order decides): AES-GCM where the CPU has AES and carry-less
// multiplication instructions, ChaCha20-Poly1305 first elsewhere.
func cipherPreference() []string {
	gcm := []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM}
	chacha := []string{ssh.CipherChaCha20Poly1305}
	ctr := []string{ssh.CipherAES128CTR, ssh.CipherAES192CTR, ssh.CipherAES256CTR}
	if hardwareAESGCM() {
		return slices.Concat(gcm, chacha, ctr)
	}
	return slices.Concat(chacha, gcm, ctr)
}

// hardwareAESGCM reports whether AES-GCM runs in hardware on this CPU.
func hardwareAESGCM() bool {
	switch runtime.GOARCH {
	case "amd64", "386":
		return cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ
	case "arm64":
		return cpu.ARM64.HasAES && cpu.ARM64.HasPMULL
	case "s390x":
		return cpu.S390X.HasAES && cpu.S390X.HasGHASH
	case "ppc64le":
		return true
	}
	return false
}

// Dialer returns a protocol.Dialer that calls Dial with addr and opts: one
// connection and one login per call.
func Dialer(addr string, opts ...Option) protocol.Dialer {
	return func(ctx context.Context) (protocol.Session, error) {
		s, err := Dial(ctx, addr, opts...)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}
