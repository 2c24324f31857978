package ftp_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/openhaul/haul/protocol"
	"github.com/openhaul/haul/protocol/ftp"
)

func diagSession(t *testing.T, srv *fakeServer) *ftp.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := ftp.Dial(ctx, srv.addr(), ftp.WithCredentials("u", "pw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// ProbeData reports the address PASV names apart from the control host it
// connects to, and reads what the server sends at an offset.
func TestProbeDataPASVAddressAndREST(t *testing.T) {
	srv := newFakeServer(t)
	content := bytes.Repeat([]byte("0123456789"), 1000)
	srv.setFile("f", content)
	s := diagSession(t, srv)
	ctx := context.Background()
	p, err := s.ProbeData(ctx, "PASV", "RETR f", 5000, 100)
	if err != nil {
		t.Fatal(err)
	}
	if p.AnnouncedHost != "10.9.9.9" || p.ControlHost != "127.0.0.1" || p.Port == 0 {
		t.Errorf("announced %q control %q port %d", p.AnnouncedHost, p.ControlHost, p.Port)
	}
	if p.RestCode != 350 || !bytes.Equal(p.Data, content[5000:5100]) || p.EOF {
		t.Errorf("REST %d, %d bytes %q, EOF %v", p.RestCode, len(p.Data), p.Data[:10], p.EOF)
	}
	// The session is still usable: the final reply was read.
	p, err = s.ProbeData(ctx, "EPSV", "RETR f", 0, len(content))
	if err != nil || !bytes.Equal(p.Data, content) || !p.EOF || p.FinalCode != 226 {
		t.Fatalf("EPSV read: %v, %d bytes, EOF %v, final %d", err, len(p.Data), p.EOF, p.FinalCode)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatalf("session unusable after the probes: %v", err)
	}
}

func TestProbeDataRESTRefused(t *testing.T) {
	srv := newFakeServer(t, func(s *fakeServer) { s.refuseRest = 502 })
	srv.setFile("f", make([]byte, 10000))
	s := diagSession(t, srv)
	p, err := s.ProbeData(context.Background(), "EPSV", "RETR f", 10, 10)
	if err != nil || p.RestCode != 502 || p.StartCode != 0 {
		t.Fatalf("REST refused: %v, REST %d, start %d", err, p.RestCode, p.StartCode)
	}
	if err := s.Check(context.Background()); err != nil {
		t.Fatalf("session unusable: %v", err)
	}
}

func TestCommandRefusesWhatChangesState(t *testing.T) {
	srv := newFakeServer(t)
	s := diagSession(t, srv)
	for _, cmd := range []string{"DELE f", "TYPE A", "STOR f", "RETR f", "NOOP\r\nDELE f"} {
		if _, _, err := s.Command(context.Background(), cmd); err == nil {
			t.Errorf("Command(%q) accepted", cmd)
		} else if !errors.Is(err, protocol.ErrUnsupported) && !errors.Is(err, protocol.ErrInvalidPath) {
			t.Errorf("Command(%q): %v", cmd, err)
		}
	}
	code, _, err := s.Command(context.Background(), "TYPE I")
	if err != nil || code != 200 {
		t.Fatalf("TYPE I: %d %v", code, err)
	}
	for _, c := range srv.commands() {
		if c == "DELE f" || c == "TYPE A" {
			t.Errorf("%q was sent", c)
		}
	}
}

func TestIdleControlQuietServer(t *testing.T) {
	srv := newFakeServer(t)
	s := diagSession(t, srv)
	r, err := s.IdleControl(context.Background(), 50*time.Millisecond, 5*time.Second)
	if err != nil || r.Code != 0 || r.Closed || r.NoopCode != 200 || r.NoopSilent {
		t.Fatalf("IdleControl: %+v, %v", r, err)
	}
}
