package ftp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/openhaul/haul/protocol"
	"github.com/openhaul/haul/protocol/ftp"
)

// restOpen is a transfer at an offset, as the engine opens one.
type restOpen struct {
	name string
	open func(ctx context.Context, s *ftp.Session, path string, offset int64) error
}

var restOpens = []restOpen{
	{"reader", func(ctx context.Context, s *ftp.Session, path string, offset int64) error {
		r, err := s.OpenReader(ctx, path, offset)
		if err == nil {
			_ = r.Close()
		}
		return err
	}},
	{"writer", func(ctx context.Context, s *ftp.Session, path string, offset int64) error {
		w, err := s.OpenWriter(ctx, path, offset)
		if err == nil {
			_ = w.Close()
		}
		return err
	}},
	{"range writer", func(ctx context.Context, s *ftp.Session, path string, offset int64) error {
		w, err := s.OpenRangeWriter(ctx, path, offset)
		if err == nil {
			_ = w.Close()
		}
		return err
	}},
}

// checkResumeUnsupported fails t unless err matches
// protocol.ErrResumeUnsupported and no other kind, with the given code.
func checkResumeUnsupported(t *testing.T, what string, err error, code int) {
	t.Helper()
	if !errors.Is(err, protocol.ErrResumeUnsupported) {
		t.Fatalf("%s: err = %v, want ErrResumeUnsupported", what, err)
	}
	for _, k := range []error{protocol.ErrTransient, protocol.ErrUnsupported, protocol.ErrProtocol} {
		if errors.Is(err, k) {
			t.Fatalf("%s: err = %v also matches %v", what, err, k)
		}
	}
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != code {
		t.Fatalf("%s: err = %#v, want a *protocol.Error with Code %d", what, err, code)
	}
}

// checkRestOnWire fails t if a RETR or STOR followed a REST, or if REST was
// sent with offset 0, and returns how many REST commands were sent.
func checkRestOnWire(t *testing.T, cmds []string) int {
	t.Helper()
	n := 0
	for i, c := range cmds {
		if !strings.HasPrefix(c, "REST") {
			continue
		}
		n++
		if c == "REST 0" {
			t.Errorf("REST 0 sent:\n%s", strings.Join(cmds, "\n"))
		}
		if i+1 < len(cmds) && (strings.HasPrefix(cmds[i+1], "RETR") || strings.HasPrefix(cmds[i+1], "STOR")) {
			t.Errorf("%q sent after a refused %q:\n%s", cmds[i+1], c, strings.Join(cmds, "\n"))
		}
	}
	return n
}

// TestRestRefusedKeepsSession: a server that refuses REST for good. The
// first transfer at an offset (read, write or range write) fails with
// ErrResumeUnsupported after one REST, with no RETR/STOR and the data
// connection opened for it closed; every later one fails the same way with
// no round trip; Stat and transfers at offset 0 go on on the same session.
func TestRestRefusedKeepsSession(t *testing.T) {
	refusals := []struct {
		code int
		text string
	}{
		{502, "Command 'REST' not implemented"},
		{500, "'REST 5': command not understood"},
		{504, "Command not implemented for that parameter"},
		{202, "Command not implemented, superfluous at this site."},
	}
	for _, rf := range refusals {
		for _, first := range restOpens {
			if rf.code != 502 && rf.code != 500 && first.name != "reader" {
				continue // the other replies once, through the reader
			}
			t.Run(fmt.Sprintf("%d/%s", rf.code, first.name), func(t *testing.T) {
				testRestRefusedKeepsSession(t, rf.code, rf.text, first)
			})
		}
	}
}

func testRestRefusedKeepsSession(t *testing.T, code int, text string, first restOpen) {
	srv := newFakeServer(t, func(s *fakeServer) { s.refuseRest, s.restText = code, text })
	data := randBytes(t, 100_000)
	srv.setFile("f", data)
	before := snapshotGoroutines()
	s := dialFake(t, srv)
	ctx := context.Background()

	err := first.open(ctx, s, "f", 5)
	checkResumeUnsupported(t, "first "+first.name, err, code)
	if !strings.Contains(err.Error(), text) {
		t.Errorf("error %q does not quote the server's %q", err, text)
	}
	sent := len(srv.commands())

	// Known now: every transfer at an offset fails at once.
	for _, o := range restOpens {
		err := o.open(ctx, s, "f", 7)
		checkResumeUnsupported(t, "then "+o.name, err, code)
		if !strings.Contains(err.Error(), "earlier") {
			t.Errorf("then %s: %q does not say REST was refused earlier", o.name, err)
		}
	}
	if got := srv.commands(); len(got) != sent {
		t.Fatalf("a known refusal went to the server:\n%s", strings.Join(got[sent:], "\n"))
	}
	// The session goes on: Stat, a whole download, an upload from zero.
	if fi, err := s.Stat(ctx, "f"); err != nil || fi.Size != int64(len(data)) {
		t.Fatalf("Stat after the refusal = %+v, %v", fi, err)
	}
	r, err := s.OpenReader(ctx, "f", 0)
	if err != nil {
		t.Fatalf("OpenReader(0) after the refusal: %v", err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("download from 0: %d bytes, %v", len(got), err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	upload(t, s, "g", 0, data[:1000])
	if got, _ := srv.file("g"); !bytes.Equal(got, data[:1000]) {
		t.Fatal("upload from 0: remote content differs")
	}
	if err := s.Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}

	if n := checkRestOnWire(t, srv.commands()); n != 1 {
		t.Errorf("REST sent %d times, want once", n)
	}
	if fates := srv.restDataFates(); len(fates) != 1 || fates[0] != "eof" {
		t.Errorf("data connection of the refused REST: %q, want it closed unused (eof)", fates)
	}
	_ = s.Close()
	srv.waitSessions(t)
	checkNoLeak(t, before)
}

// TestRestRefusedTemporarily: a 4xx refusal of REST is ErrResumeUnsupported
// but not remembered: the next transfer at an offset asks again.
func TestRestRefusedTemporarily(t *testing.T) {
	srv := newFakeServer(t, func(s *fakeServer) { s.refuseRest, s.restText = 450, "try again later" })
	srv.setFile("f", []byte("0123456789"))
	s := dialFake(t, srv)
	for i := range 2 {
		_, err := s.OpenReader(context.Background(), "f", 5)
		checkResumeUnsupported(t, fmt.Sprintf("read %d", i), err, 450)
	}
	if n := checkRestOnWire(t, srv.commands()); n != 2 {
		t.Errorf("REST sent %d times, want twice", n)
	}
	if fi, err := s.Stat(context.Background(), "f"); err != nil || fi.Size != 10 {
		t.Fatalf("Stat = %+v, %v", fi, err)
	}
}

// TestRestUnclearReplyEndsSession: REST answered with neither 350 nor a
// refusal. The transfer fails with ErrResumeUnsupported, nothing follows
// the REST, and the session (whose server may hold a restart marker, or
// owe another reply) is not used again: later calls are ErrTransient, so
// the engine logs in anew, where an offset-0 transfer works.
func TestRestUnclearReplyEndsSession(t *testing.T) {
	for _, code := range []int{200, 150} {
		for _, first := range restOpens[:2] {
			t.Run(fmt.Sprintf("%d/%s", code, first.name), func(t *testing.T) {
				srv := newFakeServer(t, func(s *fakeServer) { s.refuseRest, s.restText = code, "whatever" })
				data := randBytes(t, 10_000)
				srv.setFile("f", data)
				before := snapshotGoroutines()
				s := dialFake(t, srv)
				ctx := context.Background()
				checkResumeUnsupported(t, first.name, first.open(ctx, s, "f", 5), code)
				if _, err := s.Stat(ctx, "f"); !errors.Is(err, protocol.ErrTransient) {
					t.Fatalf("Stat on the ended session: %v, want ErrTransient", err)
				}
				if err := s.Check(ctx); err == nil {
					t.Fatal("Check passed on the ended session")
				}
				checkRestOnWire(t, srv.commands())

				s2 := dialFake(t, srv)
				r, err := s2.OpenReader(ctx, "f", 0)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(r)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("download from 0 on a new session: %d bytes, %v", len(got), err)
				}
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
				_ = s.Close()
				_ = s2.Close()
				srv.waitSessions(t)
				checkNoLeak(t, before)
				// Read once the server's session has ended: nothing
				// orders its look at the data connection before that.
				if fates := srv.restDataFates(); len(fates) != 1 || fates[0] != "eof" {
					t.Errorf("data connection of the REST: %q, want it closed unused (eof)", fates)
				}
			})
		}
	}
}

// TestRestRefusedTLS: with TLS, the data connection opened for a refused
// REST never starts its handshake and is closed as it is.
func TestRestRefusedTLS(t *testing.T) {
	serverCfg, clientCfg := selfSigned(t)
	srv := newFakeServer(t, func(s *fakeServer) {
		s.tlsConfig = serverCfg
		s.refuseRest, s.restText = 502, "Command 'REST' not implemented"
	})
	data := randBytes(t, 50_000)
	srv.setFile("f", data)
	before := snapshotGoroutines()
	s := dialFake(t, srv, ftp.WithImplicitTLS(clientCfg))
	ctx := context.Background()
	_, err := s.OpenWriter(ctx, "f", 5)
	checkResumeUnsupported(t, "writer", err, 502)
	_, err = s.OpenReader(ctx, "f", 5)
	checkResumeUnsupported(t, "reader", err, 502)
	r, err := s.OpenReader(ctx, "f", 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("download from 0: %d bytes, %v", len(got), err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if fates := srv.restDataFates(); len(fates) != 1 || fates[0] != "eof" {
		t.Errorf("data connection of the refused REST: %q, want it closed unused (eof)", fates)
	}
	checkRestOnWire(t, srv.commands())
	_ = s.Close()
	srv.waitSessions(t)
	checkNoLeak(t, before)
}
