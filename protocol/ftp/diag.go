package ftp

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/openhaul/haul/protocol"
)

// Diagnostics: the few wire-level looks that `haul doctor` takes at an FTP
// server through a logged-in Session, beyond what protocol.Session offers.
// None of them writes to the server; each runs as one operation of the
// session (begin/end), honours its context and leaves the session usable
// unless the server broke the connection.

var (
	errDiagVerb = errors.New("command not allowed for diagnostics")
	errDiagMode = errors.New(`data mode must be "EPSV" or "PASV"`)
	errDiagCmd  = errors.New(`data command must be "LIST", "NLST" or "RETR <path>"`)
)

// diagVerbs are the commands Command sends: they read or set nothing a
// transfer depends on, except TYPE I, which is what haul sets anyway.
var diagVerbs = map[string]bool{"NOOP": true, "TYPE": true, "FEAT": true, "SYST": true, "PWD": true,
	"AVBL": true, "OPTS": true, "SIZE": true, "MDTM": true, "HELP": true, "STAT": true}

// Features returns the feature lines of the server's FEAT reply at login
// (" REST STREAM" as "REST STREAM"), as the server wrote them. Callers must
// treat them as untrusted text (see protocol.ServerText).
func (s *Session) Features() []string { return s.tap.features() }

// Command sends one diagnostic command (NOOP, TYPE I, FEAT, SYST, PWD, AVBL,
// OPTS, SIZE, MDTM, HELP, STAT; any other, and TYPE other than I, is
// refused with an error matching protocol.ErrUnsupported before anything is
// sent) and returns the reply's code and text (server text: escape it
// before showing it), whatever the code. A transport error ends the
// session.
func (s *Session) Command(ctx context.Context, cmd string) (code int, msg string, err error) {
	f := failure{op: "diag"}
	verb, _, _ := strings.Cut(cmd, " ")
	if !diagVerbs[strings.ToUpper(verb)] || (strings.EqualFold(verb, "TYPE") && !strings.EqualFold(strings.TrimSpace(cmd), "TYPE I")) {
		return 0, "", &protocol.Error{Op: f.op, Kind: protocol.ErrUnsupported, Err: fmt.Errorf("%w: %q", errDiagVerb, verb)}
	}
	if err := protocol.CheckPath(cmd); err != nil {
		return 0, "", err
	}
	tc := s.textConn()
	if tc == nil {
		return 0, "", &protocol.Error{Op: f.op, Kind: protocol.ErrUnsupported, Err: errDiagVerb}
	}
	if err := s.begin(ctx, f); err != nil {
		return 0, "", err
	}
	defer s.end()
	code, msg, err = rawCmd(tc, 0, "%s", cmd)
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code, te.Msg, nil
	}
	if err != nil {
		return 0, "", s.fail(ctx, s.verbOf(failure{op: f.op, verb: strings.ToUpper(verb)}), err)
	}
	return code, msg, nil
}

// DataProbe is what ProbeData saw of one data connection.
type DataProbe struct {
	// Mode is "EPSV" or "PASV"; Reply the server's answer to it (server
	// text, escaped).
	Mode, Reply string
	// Code is the reply code to EPSV/PASV.
	Code int
	// AnnouncedHost is the address PASV named ("" for EPSV), which haul
	// never connects to; ControlHost is the control connection's peer,
	// which it connects to instead.
	AnnouncedHost, ControlHost string
	// Port is the data port the server named.
	Port int
	// RestCode and RestReply are the answer to REST (0 when none was sent).
	RestCode  int
	RestReply string
	// StartCode and StartReply are the answer to the transfer command.
	StartCode  int
	StartReply string
	// TLS is the data connection's TLS state after its handshake (nil in
	// clear, or when the handshake failed: see HandshakeErr).
	TLS          *tls.ConnectionState
	HandshakeErr error
	// Data holds at most the max bytes asked for.
	Data []byte
	// EOF reports that the stream ended within max bytes; CleanClose that
	// it ended with a TLS close_notify (only meaningful with TLS and EOF).
	EOF, CleanClose bool
	// HeldFor is how long the data connection sat unread (ProbeDataHold),
	// and HoldCode/HoldReply what the server said on the control
	// connection meanwhile (0 when nothing).
	HeldFor   time.Duration
	HoldCode  int
	HoldReply string
	// FinalCode and FinalReply are the reply that ended the transfer.
	FinalCode  int
	FinalReply string
}

// ProbeData opens one data connection in mode ("EPSV" or "PASV"), always
// to the control connection's host whatever PASV names (as transfers do),
// sends REST offset when offset > 0, then cmd ("LIST", "NLST" or
// "RETR path"), performs the TLS handshake (resuming the control session)
// and reads at most max bytes. A stream longer than that is closed early;
// the server's final reply is read either way, so the session stays
// usable. A refusal by the server (of EPSV, REST, the command) is reported
// in the DataProbe with a nil error; a non-nil error means the connection
// broke.
func (s *Session) ProbeData(ctx context.Context, mode, cmd string, offset int64, max int) (DataProbe, error) {
	return s.probeData(ctx, mode, cmd, offset, max, 0, 0)
}

// ProbeDataHold is ProbeData that, after reading max bytes of a stream
// that goes on, leaves the data connection unread for up to hold (with a
// receive buffer of rcvbuf bytes when positive, set before the transfer
// starts, so that the server's writes soon block) while it listens on the
// control connection: a server whose data timeout is shorter says so
// there (vsftpd's "421 Data timeout") and DataProbe.HeldFor is that
// timeout. After a quiet hold the data connection is closed and the final
// reply awaited for at most answer: none (FinalCode 0) means the control
// connection went silent meanwhile.
func (s *Session) ProbeDataHold(ctx context.Context, mode, cmd string, max int, hold, answer time.Duration, rcvbuf int) (DataProbe, error) {
	return s.probeData(ctx, mode, cmd, 0, max, hold, rcvbuf, answer)
}

func (s *Session) probeData(ctx context.Context, mode, cmd string, offset int64, max int, hold time.Duration, rcvbuf int, answer ...time.Duration) (DataProbe, error) {
	p := DataProbe{Mode: strings.ToUpper(mode)}
	f := failure{op: "diag"}
	if p.Mode != "EPSV" && p.Mode != "PASV" {
		return p, &protocol.Error{Op: f.op, Err: errDiagMode}
	}
	verb, arg, _ := strings.Cut(cmd, " ")
	verb = strings.ToUpper(verb)
	if (verb != "LIST" && verb != "NLST" && verb != "RETR") || (verb == "RETR" && arg == "") {
		return p, &protocol.Error{Op: f.op, Err: errDiagCmd}
	}
	if err := protocol.CheckPath(cmd); err != nil {
		return p, err
	}
	tc := s.textConn()
	if tc == nil {
		return p, &protocol.Error{Op: f.op, Kind: protocol.ErrUnsupported, Err: errDiagVerb}
	}
	if err := s.begin(ctx, f); err != nil {
		return p, err
	}
	defer s.end()
	defer s.clearDeadline()
	s.mu.Lock()
	p.ControlHost = s.ctrlHost
	s.mu.Unlock()
	broke := func(verb string, err error) (DataProbe, error) {
		return p, s.fail(ctx, failure{op: f.op, verb: verb}, err)
	}
	reply := func(verb string, err error) (code int, msg string, fatal error) {
		var te *textproto.Error
		if errors.As(err, &te) {
			return te.Code, te.Msg, nil
		}
		if err != nil {
			return 0, "", s.fail(ctx, failure{op: f.op, verb: verb}, err)
		}
		return 0, "", nil
	}

	code, msg, err := rawCmd(tc, 0, "%s", p.Mode)
	if c, m, fatal := reply(p.Mode, err); fatal != nil {
		return p, fatal
	} else if err != nil {
		code, msg = c, m
	}
	p.Code, p.Reply = code, protocol.ServerText(msg, s.opts.password)
	if (p.Mode == "EPSV" && code != 229) || (p.Mode == "PASV" && code != 227) {
		return p, nil
	}
	if p.Mode == "EPSV" {
		p.Port, err = parseEPSV(msg)
	} else {
		p.AnnouncedHost, p.Port, err = parsePASV(msg)
	}
	if err != nil {
		return p, nil // p.Port 0 says it: the reply names no port
	}
	raw, conn, watch, err := s.diagDial(ctx, p.Port, rcvbuf)
	if err != nil {
		return broke(p.Mode, err)
	}
	defer conn.Close()
	if offset > 0 {
		code, msg, err := rawCmd(tc, 0, "REST %d", offset)
		c, m, fatal := reply("REST", err)
		if fatal != nil {
			return p, fatal
		}
		if err != nil {
			code, msg = c, m
		}
		p.RestCode, p.RestReply = code, protocol.ServerText(msg, s.opts.password)
		if code != 350 {
			return p, nil
		}
	}
	if _, err := tc.Cmd("%s", cmd); err != nil {
		return broke(verb, err)
	}
	code, msg, err = tc.ReadResponse(0)
	if c, m, fatal := reply(verb, err); fatal != nil {
		return p, fatal
	} else if err != nil {
		code, msg = c, m
	}
	p.StartCode, p.StartReply = code, protocol.ServerText(msg, s.opts.password)
	if code >= 300 || code < 100 {
		return p, nil
	}
	if code < 200 {
		if t, ok := conn.(*tls.Conn); ok {
			_ = raw.SetDeadline(time.Now().Add(s.opts.dialTimeout))
			if err := t.HandshakeContext(ctx); err != nil {
				p.HandshakeErr = err
			} else {
				st := t.ConnectionState()
				p.TLS = &st
			}
			_ = raw.SetDeadline(time.Time{})
		}
		if p.HandshakeErr == nil {
			p.Data, p.EOF, err = readUpTo(conn, max)
			if err != nil && !p.EOF {
				p.HandshakeErr = err
			}
			p.CleanClose = p.EOF && p.TLS != nil && !watch.eof.Load()
		}
		if !p.EOF && hold > 0 {
			start := time.Now()
			s.mu.Lock()
			ctrl := s.ctrl
			s.mu.Unlock()
			_ = ctrl.SetReadDeadline(start.Add(hold))
			code, msg, err := tc.ReadResponse(0)
			p.HeldFor = time.Since(start)
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				// Nothing said: the connection outlived hold.
			default:
				c, m, fatal := reply(verb, err)
				if fatal != nil {
					return p, fatal
				}
				if err != nil {
					code, msg = c, m
				}
				p.HoldCode, p.HoldReply = code, protocol.ServerText(msg, s.opts.password)
				_ = conn.Close()
				if code == 421 {
					s.kill(fmt.Errorf("server ended the session: %d", code))
					return p, nil
				}
				p.FinalCode, p.FinalReply = p.HoldCode, p.HoldReply
				return p, nil
			}
		}
		_ = conn.Close()
	}
	// The final reply (226 for a complete transfer, 426/451 for one closed
	// early), bounded like a transfer's.
	s.mu.Lock()
	ctrl := s.ctrl
	s.mu.Unlock()
	if len(answer) > 0 && answer[0] > 0 && p.HeldFor > 0 {
		_ = ctrl.SetReadDeadline(time.Now().Add(answer[0]))
	} else if s.opts.shutTimeout > 0 {
		_ = ctrl.SetReadDeadline(time.Now().Add(s.opts.shutTimeout))
	}
	code, msg, err = tc.ReadResponse(0)
	if p.HeldFor > 0 && isTimeout(err) {
		s.kill(err)
		return p, nil // FinalCode 0: the control connection is silent
	}
	if c, m, fatal := reply(verb, err); fatal != nil {
		return p, fatal
	} else if err != nil {
		code, msg = c, m
	}
	p.FinalCode, p.FinalReply = code, protocol.ServerText(msg, s.opts.password)
	if code == 421 {
		s.kill(fmt.Errorf("server ended the session: %d", code))
	}
	return p, nil
}

// eofWatch records whether the TCP stream under a TLS data connection
// ended: a TLS stream that ends before it does was closed with
// close_notify.
type eofWatch struct {
	net.Conn
	eof atomic.Bool
}

func (w *eofWatch) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if errors.Is(err, io.EOF) {
		w.eof.Store(true)
	}
	return n, err
}

// diagDial connects a data connection to the control host's port, with
// the session's dial settings and TLS configuration (whose session cache
// the control connection filled).
func (s *Session) diagDial(ctx context.Context, port, rcvbuf int) (raw, conn net.Conn, w *eofWatch, err error) {
	s.mu.Lock()
	host := s.ctrlHost
	s.mu.Unlock()
	d := net.Dialer{Timeout: s.opts.dialTimeout, KeepAliveConfig: s.opts.keepAlive, Control: controlSocket}
	if !s.opts.keepAlive.Enable {
		d.KeepAlive = -1
	}
	raw, err = d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return nil, nil, nil, err
	}
	if tcp, ok := raw.(*net.TCPConn); ok && rcvbuf > 0 {
		_ = tcp.SetReadBuffer(rcvbuf)
	}
	s.mu.Lock()
	s.data = raw
	s.mu.Unlock()
	w = &eofWatch{Conn: raw}
	conn = w
	if s.tlsCfg != nil {
		conn = tls.Client(w, s.tlsCfg)
	}
	return raw, conn, w, nil
}

// readUpTo reads at most max bytes; eof reports that the stream ended
// within them.
func readUpTo(r io.Reader, max int) (data []byte, eof bool, err error) {
	buf := make([]byte, max+1)
	n, err := io.ReadFull(r, buf)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return buf[:n], true, nil
	case err != nil:
		return buf[:n], false, err
	}
	return buf[:max], false, nil
}

// parsePASV reads "227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)".
func parsePASV(msg string) (host string, port int, err error) {
	start := strings.IndexByte(msg, '(')
	end := strings.LastIndexByte(msg, ')')
	if start < 0 || end < start {
		// Some servers omit the parentheses.
		start = strings.IndexFunc(msg, func(r rune) bool { return r >= '0' && r <= '9' }) - 1
		end = len(msg)
		if start < -1 {
			return "", 0, errors.New("no address in PASV reply")
		}
	}
	parts := strings.Split(strings.TrimSpace(msg[start+1:end]), ",")
	if len(parts) != 6 {
		return "", 0, errors.New("PASV reply does not have six numbers")
	}
	var n [6]int
	for i, s := range parts {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v < 0 || v > 255 {
			return "", 0, errors.New("PASV reply has a number out of range")
		}
		n[i] = v
	}
	return fmt.Sprintf("%d.%d.%d.%d", n[0], n[1], n[2], n[3]), n[4]<<8 | n[5], nil
}

// parseEPSV reads "229 Entering Extended Passive Mode (|||port|)".
func parseEPSV(msg string) (int, error) {
	start := strings.IndexByte(msg, '(')
	end := strings.LastIndexByte(msg, ')')
	if start < 0 || end < start+5 {
		return 0, errors.New("no port in EPSV reply")
	}
	inner := msg[start+1 : end]
	d := inner[0]
	f := strings.Split(inner, string(d))
	if len(f) != 5 {
		return 0, errors.New("malformed EPSV reply")
	}
	port, err := strconv.Atoi(f[3])
	if err != nil || port < 1 || port > 65535 {
		return 0, errors.New("EPSV reply names no valid port")
	}
	return port, nil
}

// IdleResult is what IdleControl saw of an idle control connection.
type IdleResult struct {
	// Waited is how long the connection sat idle before the server spoke
	// or closed it, or the whole wait when it did neither.
	Waited time.Duration
	// Code and Reply are what the server said unprompted (vsftpd's
	// "421 Timeout."), 0 and "" when nothing.
	Code  int
	Reply string
	// Closed reports that the server closed the connection (EOF or reset)
	// during the wait.
	Closed bool
	// NoopCode is the reply to the NOOP sent after a quiet wait (0 when
	// none arrived or none was sent); NoopSilent reports that a NOOP sent
	// after the wait got no answer at all within answer: the connection
	// was silently dropped on the way (a NAT or firewall that forgot it).
	NoopCode   int
	NoopSilent bool
	// NoopErr is how a NOOP after the wait failed, when it did.
	NoopErr error
}

// IdleControl leaves the control connection idle for up to wait, reading
// whatever the server sends unprompted (an idle timeout's 421, or its
// closing the connection), then, when it said nothing, sends NOOP and
// waits up to answer for the reply. The session is unusable afterwards
// unless NoopCode is 200-299; close it either way.
func (s *Session) IdleControl(ctx context.Context, wait, answer time.Duration) (IdleResult, error) {
	var r IdleResult
	f := failure{op: "diag"}
	tc := s.textConn()
	if tc == nil {
		return r, &protocol.Error{Op: f.op, Kind: protocol.ErrUnsupported, Err: errDiagVerb}
	}
	if err := s.begin(ctx, f); err != nil {
		return r, err
	}
	defer s.end()
	s.mu.Lock()
	ctrl := s.ctrl
	s.mu.Unlock()
	start := time.Now()
	_ = ctrl.SetReadDeadline(start.Add(wait))
	code, msg, err := tc.ReadResponse(0)
	r.Waited = time.Since(start)
	var ne net.Error
	var te *textproto.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		r.Waited = wait
	case err == nil || errors.As(err, &te):
		if te != nil {
			code, msg = te.Code, te.Msg
		}
		r.Code, r.Reply = code, protocol.ServerText(msg, s.opts.password)
		// A server that spoke first is about to close: see whether it
		// does, briefly.
		_ = ctrl.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := bufio.NewReader(ctrl).ReadByte(); err != nil && !isTimeout(err) {
			r.Closed = true
		}
		s.kill(errors.New("idle probe ended the session"))
		return r, nil
	default:
		r.Closed = true
		s.kill(err)
		return r, nil
	}
	if ctx.Err() != nil {
		return r, f.wrap(context.Cause(ctx))
	}
	_ = ctrl.SetDeadline(time.Now().Add(answer))
	code, _, err = rawCmd(tc, 0, "NOOP")
	_ = ctrl.SetDeadline(time.Time{})
	switch {
	case err == nil:
		r.NoopCode = code
	case errors.As(err, &te):
		r.NoopCode = te.Code
		if te.Code == 421 {
			s.kill(err)
		}
	case isTimeout(err):
		r.NoopSilent = true
		s.kill(err)
	default:
		r.NoopErr = err
		s.kill(err)
	}
	return r, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// InspectTLS connects to addr ("host:port"), reads the greeting, asks for
// AUTH TLS (explicit) or starts TLS at once (implicit) and performs a
// handshake that verifies nothing, to show the certificate chain a server
// presents even when it would not verify. No login is attempted and
// nothing is trusted: the caller verifies the chain itself. The connection
// is closed before InspectTLS returns.
func InspectTLS(ctx context.Context, addr string, implicit bool, serverName string, timeout time.Duration) (tls.ConnectionState, error) {
	d := net.Dialer{Timeout: timeout}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { _ = raw.Close() })
	defer stop()
	cfg := &tls.Config{ServerName: serverName, InsecureSkipVerify: true} //nolint:gosec // inspection only, nothing is sent over it
	if implicit {
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return tls.ConnectionState{}, err
		}
		return tc.ConnectionState(), nil
	}
	lr := &io.LimitedReader{R: raw, N: maxReplyBytes}
	text := textproto.NewConn(struct {
		io.Reader
		io.WriteCloser
	}{lr, raw})
	if _, _, err := text.ReadResponse(220); err != nil {
		return tls.ConnectionState{}, err
	}
	if _, err := text.Cmd("AUTH TLS"); err != nil {
		return tls.ConnectionState{}, err
	}
	if _, _, err := text.ReadResponse(234); err != nil {
		return tls.ConnectionState{}, err
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return tls.ConnectionState{}, err
	}
	st := tc.ConnectionState()
	_ = tc.SetDeadline(time.Now().Add(time.Second))
	_, _ = tc.Write([]byte("QUIT\r\n"))
	return st, nil
}
