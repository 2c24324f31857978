package ftp_test

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeServer is a tiny in-process FTP server for unit tests of edge cases
// the real servers cannot produce on demand. It speaks just enough FTP for
// jlaffaye's client: USER/PASS/FEAT/TYPE/EPSV/PASV/REST/RETR/STOR/SIZE/
// MDTM/DELE/RNFR/RNTO/PWD/CWD/NOOP/QUIT. Every loop is bounded by the
// client closing its connections; the test's Cleanup closes the listener.
type fakeServer struct {
	t        *testing.T
	ln       net.Listener
	password string

	mu    sync.Mutex
	files map[string][]byte
	dirs  map[string]bool
	cmds  []string // every command received, PASS masked
	// restData records, for each REST refused with refuseRest, what
	// became of the data connection the client had opened for it: "eof"
	// (closed by the client, nothing sent), "none" (no connection) or
	// what went wrong.
	restData []string

	// Faults.
	refuseRestStor bool        // STOR after REST n>0 → 451
	refuseRest     int         // REST → this code when non-zero (any code but 350)
	restText       string      // text of the refuseRest reply ("REST refused" when empty)
	killRetrAfter  int         // RETR: send this many bytes, then drop both connections without a reply
	pasvHost       string      // host announced in PASV replies
	noEPSV         bool        // EPSV → 502
	retrLoop       bool        // RETR: stream the file over and over (a huge file)
	tlsConfig      *tls.Config // implicit TLS on every connection when set
	// greet, when set, replaces the greeting; false ends the session.
	greet func(fc *fakeConn) bool
	// override, when set, sees every command first; handled says it
	// answered it, keep false ends the session.
	override func(fc *fakeConn, verb, arg string) (handled, keep bool)
	conns    sync.WaitGroup
}

// newFakeServer starts a fake server; configure sets its faults before it
// accepts connections.
func newFakeServer(t *testing.T, configure ...func(*fakeServer)) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, ln: ln, password: "pw", files: map[string][]byte{}, dirs: map[string]bool{"dir": true}, pasvHost: "10.9.9.9"}
	for _, c := range configure {
		c(s)
	}
	go s.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		s.conns.Wait()
	})
	return s
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

func (s *fakeServer) setFile(name string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[name] = append([]byte(nil), b...)
}

func (s *fakeServer) file(name string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.files[name]
	return append([]byte(nil), b...), ok
}

func (s *fakeServer) commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cmds...)
}

func (s *fakeServer) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		if s.tlsConfig != nil {
			c = tls.Server(c, s.tlsConfig)
		}
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			s.handle(c)
		}()
	}
}

type fakeConn struct {
	s      *fakeServer
	c      net.Conn
	r      *bufio.Reader
	dataLn net.Listener
	rest   int64
	rnfr   string
	binary bool
}

func (fc *fakeConn) reply(code int, msg string) {
	fmt.Fprintf(fc.c, "%d %s\r\n", code, msg)
}

func (s *fakeServer) handle(c net.Conn) {
	fc := &fakeConn{s: s, c: c, r: bufio.NewReader(c)}
	defer func() {
		_ = c.Close()
		if fc.dataLn != nil {
			_ = fc.dataLn.Close()
		}
	}()
	if s.greet == nil {
		fc.reply(220, "fake ready")
	} else if !s.greet(fc) {
		return
	}
	for {
		line, err := fc.r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb, arg, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		s.mu.Lock()
		if verb == "PASS" {
			s.cmds = append(s.cmds, "PASS ****")
		} else {
			s.cmds = append(s.cmds, line)
		}
		s.mu.Unlock()
		if s.override != nil {
			if handled, keep := s.override(fc, verb, arg); handled {
				if !keep {
					return
				}
				continue
			}
		}
		if !fc.command(verb, arg) {
			return
		}
	}
}

// command handles one command; false ends the session.
func (fc *fakeConn) command(verb, arg string) bool {
	s := fc.s
	switch verb {
	case "USER":
		fc.reply(331, "password please")
	case "PASS":
		if arg != s.password {
			fc.reply(530, "Login incorrect.")
		} else {
			fc.reply(230, "ok")
		}
	case "FEAT":
		fmt.Fprintf(fc.c, "211-Features:\r\n SIZE\r\n MDTM\r\n EPSV\r\n REST STREAM\r\n HASH SHA-256*;MD5\r\n211 End\r\n")
	case "TYPE":
		fc.binary = arg == "I"
		fc.reply(200, "type set")
	case "NOOP", "PBSZ", "PROT":
		fc.reply(200, "ok")
	case "QUIT":
		fc.reply(221, "bye")
		return false
	case "PWD":
		fc.reply(257, `"/" is cwd`)
	case "CWD":
		s.mu.Lock()
		ok := s.dirs[arg] || arg == "/"
		s.mu.Unlock()
		if ok {
			fc.reply(250, "ok")
		} else {
			fc.reply(550, "no such dir")
		}
	case "EPSV", "PASV":
		if verb == "EPSV" && s.noEPSV {
			fc.reply(502, "no EPSV")
			return true
		}
		if fc.dataLn != nil {
			_ = fc.dataLn.Close()
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fc.reply(425, "cannot listen")
			return true
		}
		fc.dataLn = ln
		port := ln.Addr().(*net.TCPAddr).Port
		if verb == "EPSV" {
			fc.reply(229, fmt.Sprintf("Entering Extended Passive Mode (|||%d|)", port))
		} else {
			h := strings.ReplaceAll(s.pasvHost, ".", ",")
			fc.reply(227, fmt.Sprintf("Entering Passive Mode (%s,%d,%d).", h, port/256, port%256))
		}
	case "REST":
		if s.refuseRest != 0 {
			text := s.restText
			if text == "" {
				text = "REST refused"
			}
			fc.reply(s.refuseRest, text)
			fate := fc.drainData()
			s.mu.Lock()
			s.restData = append(s.restData, fate)
			s.mu.Unlock()
			return true
		}
		n, err := strconv.ParseInt(arg, 10, 64)
		if err != nil {
			fc.reply(501, "bad REST")
			return true
		}
		fc.rest = n
		fc.reply(350, "restarting")
	case "SIZE", "MDTM":
		s.mu.Lock()
		b, ok := s.files[arg]
		s.mu.Unlock()
		switch {
		case !ok:
			fc.reply(550, "Could not get file size.")
		case verb == "SIZE" && !fc.binary:
			fc.reply(550, "SIZE not allowed in ASCII mode")
		case verb == "SIZE":
			fc.reply(213, strconv.Itoa(len(b)))
		default:
			fc.reply(213, "20240102030405")
		}
	case "DELE":
		s.mu.Lock()
		_, ok := s.files[arg]
		delete(s.files, arg)
		s.mu.Unlock()
		if ok {
			fc.reply(250, "deleted")
		} else {
			fc.reply(550, "no such file")
		}
	case "RNFR":
		s.mu.Lock()
		_, ok := s.files[arg]
		s.mu.Unlock()
		if !ok {
			fc.reply(550, "no such file")
			return true
		}
		fc.rnfr = arg
		fc.reply(350, "ready for RNTO")
	case "RNTO":
		s.mu.Lock()
		s.files[arg] = s.files[fc.rnfr]
		delete(s.files, fc.rnfr)
		s.mu.Unlock()
		fc.reply(250, "renamed")
	case "OPTS":
		fc.reply(200, arg)
	case "HASH":
		b, ok := s.file(arg)
		if !ok {
			fc.reply(550, "no such file")
			return true
		}
		sum := sha256.Sum256(b)
		fmt.Fprintf(fc.c, "213-Computing\r\n213 SHA-256 0-%d %X %s\r\n", len(b), sum, arg)
	case "RETR":
		return fc.retr(arg)
	case "STOR":
		return fc.stor(arg)
	default:
		fc.reply(502, "not implemented")
	}
	return true
}

func (fc *fakeConn) acceptData() net.Conn {
	if fc.dataLn == nil {
		fc.reply(425, "use PASV first")
		return nil
	}
	ln := fc.dataLn.(*net.TCPListener)
	fc.dataLn = nil
	defer ln.Close()
	_ = ln.SetDeadline(time.Now().Add(10 * time.Second))
	d, err := ln.Accept()
	if err != nil {
		fc.reply(425, "no data connection")
		return nil
	}
	if fc.s.tlsConfig != nil {
		return tls.Server(d, fc.s.tlsConfig)
	}
	return d
}

// drainData takes the data connection the client opened after PASV/EPSV
// but never used (its REST was refused) and reports whether the client
// closed it without sending anything: "eof", "none" when the client opened
// none, else what happened. Bounded by a deadline.
func (fc *fakeConn) drainData() string {
	if fc.dataLn == nil {
		return "none"
	}
	ln := fc.dataLn.(*net.TCPListener)
	fc.dataLn = nil
	defer ln.Close()
	_ = ln.SetDeadline(time.Now().Add(2 * time.Second))
	d, err := ln.Accept()
	if err != nil {
		return "none"
	}
	defer d.Close()
	_ = d.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, d)
	switch {
	case err != nil:
		return fmt.Sprintf("read: %v", err)
	case n > 0:
		return fmt.Sprintf("%d bytes sent", n)
	}
	return "eof"
}

func (s *fakeServer) restDataFates() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.restData...)
}

func (fc *fakeConn) retr(name string) bool {
	s := fc.s
	rest := fc.rest
	fc.rest = 0
	b, ok := s.file(name)
	if !ok {
		fc.reply(550, "no such file")
		return true
	}
	d := fc.acceptData()
	if d == nil {
		return true
	}
	defer d.Close()
	if rest > int64(len(b)) {
		rest = int64(len(b))
	}
	b = b[rest:]
	fc.reply(150, "opening BINARY data connection")
	if s.killRetrAfter > 0 {
		n := min(s.killRetrAfter, len(b))
		_, _ = d.Write(b[:n])
		_ = d.Close()
		return false // drop control without a reply
	}
	if s.retrLoop {
		for i := 0; i < 1<<20; i++ { // bounded: ends when the client goes away
			if _, err := d.Write(b); err != nil {
				fc.reply(426, "Failure writing network stream.")
				return true
			}
		}
		fc.reply(226, "done")
		return true
	}
	if _, err := d.Write(b); err != nil {
		fc.reply(426, "Failure writing network stream.")
		return true
	}
	_ = d.Close()
	fc.reply(226, "Transfer complete.")
	return true
}

func (fc *fakeConn) stor(name string) bool {
	s := fc.s
	rest := fc.rest
	fc.rest = 0
	if rest > 0 && s.refuseRestStor {
		fc.reply(451, "Append/Restart not permitted, try again")
		if fc.dataLn != nil {
			_ = fc.dataLn.Close()
			fc.dataLn = nil
		}
		return true
	}
	d := fc.acceptData()
	if d == nil {
		return true
	}
	defer d.Close()
	fc.reply(150, "ok to send data")
	got, err := io.ReadAll(d)
	if err != nil {
		fc.reply(426, "Failure reading network stream.")
		return true
	}
	s.mu.Lock()
	old := s.files[name]
	if rest == 0 {
		old = nil
	}
	if int64(len(old)) < rest {
		old = append(old, make([]byte, rest-int64(len(old)))...)
	}
	nb := append(append([]byte(nil), old[:rest]...), got...)
	if int64(len(old)) > rest+int64(len(got)) {
		nb = append(nb, old[rest+int64(len(got)):]...)
	}
	s.files[name] = nb
	s.mu.Unlock()
	fc.reply(226, "Transfer complete.")
	return true
}
