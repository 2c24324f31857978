package ftp

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/textproto"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"

	"github.com/openhaul/haul/protocol"
)

func TestClassify(t *testing.T) {
	reply := func(code int) error { return &textproto.Error{Code: code, Msg: "msg"} }
	tests := []struct {
		name string
		f    failure
		err  error
		want error
	}{
		{"421", failure{op: "read", verb: "RETR"}, reply(421), protocol.ErrTransient},
		{"425", failure{op: "read", verb: "EPSV"}, reply(425), protocol.ErrTransient},
		{"426 joined with reset", failure{op: "write", verb: "STOR", started: true},
			errors.Join(syscall.ECONNRESET, reply(426)), protocol.ErrTransient},
		{"450", failure{op: "read", verb: "RETR"}, reply(450), protocol.ErrTransient},
		{"451 after data", failure{op: "write", verb: "STOR", offset: 10, started: true}, reply(451), protocol.ErrStorage},
		{"500 OOPS after RETR started", failure{op: "read", verb: "RETR", started: true}, reply(500), protocol.ErrTransient},
		{"451 at offset 0", failure{op: "write", verb: "STOR"}, reply(451), protocol.ErrTransient},
		{"451 resumed STOR refused", failure{op: "write", verb: "STOR", offset: 10}, reply(451), protocol.ErrResumeUnsupported},
		{"550 resumed STOR refused", failure{op: "write", verb: "STOR", offset: 10}, reply(550), protocol.ErrResumeUnsupported},
		{"552 resumed STOR", failure{op: "write", verb: "STOR", offset: 10}, reply(552), protocol.ErrNoSpace},
		{"REST 502", failure{op: "read", verb: "REST", offset: 10}, reply(502), protocol.ErrResumeUnsupported},
		{"REST 550", failure{op: "write", verb: "REST", offset: 10}, reply(550), protocol.ErrResumeUnsupported},
		{"REST 421", failure{op: "write", verb: "REST", offset: 10}, reply(421), protocol.ErrTransient},
		{"REST 500", failure{op: "read", verb: "REST", offset: 10}, reply(500), protocol.ErrResumeUnsupported},
		{"REST 504", failure{op: "write", verb: "REST", offset: 10}, reply(504), protocol.ErrResumeUnsupported},
		{"REST 202 superfluous", failure{op: "read", verb: "REST", offset: 10}, reply(202), protocol.ErrResumeUnsupported},
		{"REST 200", failure{op: "read", verb: "REST", offset: 10}, reply(200), protocol.ErrResumeUnsupported},
		{"REST 150", failure{op: "write", verb: "REST", offset: 10}, reply(150), protocol.ErrResumeUnsupported},
		{"REST 530", failure{op: "read", verb: "REST", offset: 10}, reply(530), protocol.ErrAuth},
		{"452", failure{op: "write", verb: "STOR", started: true}, reply(452), protocol.ErrNoSpace},
		{"552", failure{op: "write", verb: "STOR", started: true}, reply(552), protocol.ErrNoSpace},
		{"530", failure{op: "login", verb: "PASS"}, reply(530), protocol.ErrAuth},
		{"532", failure{op: "login", verb: "PASS"}, reply(532), protocol.ErrAuth},
		{"332 at login", failure{op: "login", verb: "USER"}, reply(332), protocol.ErrAuth},
		{"550 RETR", failure{op: "read", verb: "RETR"}, reply(550), fs.ErrNotExist},
		{"550 SIZE", failure{op: "stat", verb: "SIZE"}, reply(550), fs.ErrNotExist},
		{"550 DELE", failure{op: "remove", verb: "DELE"}, reply(550), fs.ErrNotExist},
		{"550 RNFR", failure{op: "rename", verb: "RNFR"}, reply(550), fs.ErrNotExist},
		{"550 RNTO", failure{op: "rename", verb: "RNTO"}, reply(550), fs.ErrPermission},
		{"550 STOR", failure{op: "write", verb: "STOR"}, reply(550), fs.ErrPermission},
		{"553", failure{op: "write", verb: "STOR"}, reply(553), fs.ErrPermission},
		{"500", failure{op: "stat", verb: "SIZE"}, reply(500), protocol.ErrUnsupported},
		{"502", failure{op: "stat", verb: "MDTM"}, reply(502), protocol.ErrUnsupported},
		{"504", failure{op: "stat", verb: "SIZE"}, reply(504), protocol.ErrUnsupported},
		{"unexpected EOF", failure{op: "read"}, io.ErrUnexpectedEOF, protocol.ErrTransient},
		{"reset", failure{op: "read"}, fmt.Errorf("read: %w", syscall.ECONNRESET), protocol.ErrTransient},
		{"x509", failure{op: "login"}, x509.UnknownAuthorityError{}, protocol.ErrHostKey},
		{"hostname", failure{op: "login"}, x509.HostnameError{Host: "h"}, protocol.ErrHostKey},
		{"unknown 501", failure{op: "stat", verb: "SIZE"}, reply(501), nil},
		{"reply too long", failure{op: "stat", verb: "SIZE"}, &replyError{msg: "too long"}, protocol.ErrProtocol},
		{"negative SIZE", failure{op: "stat", verb: "SIZE"}, &sizeError{verb: "SIZE", reply: "-5"}, protocol.ErrProtocol},
		{"NXDOMAIN", failure{op: "dial"}, &net.OpError{Op: "dial", Net: "tcp",
			Err: &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}}, fs.ErrNotExist},
		{"DNS timeout", failure{op: "dial"}, &net.OpError{Op: "dial", Net: "tcp",
			Err: &net.DNSError{Err: "i/o timeout", Name: "x.example", IsTimeout: true}}, protocol.ErrTransient},
		{"refused", failure{op: "dial"}, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, protocol.ErrTransient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.f.wrap(tt.err)
			var pe *protocol.Error
			if !errors.As(err, &pe) {
				t.Fatalf("not a *protocol.Error: %T", err)
			}
			if pe.Kind != tt.want {
				t.Fatalf("kind = %v, want %v", pe.Kind, tt.want)
			}
			if tt.want == protocol.ErrStorage && !errors.Is(err, protocol.ErrTransient) {
				t.Fatalf("a storage failure must also be transient")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("errors.Is(%v, %v) false", err, tt.want)
			}
			if code := replyCode(tt.err); pe.Code != code {
				t.Fatalf("Code = %d, want %d", pe.Code, code)
			}
		})
	}
	if (failure{}).wrap(nil) != nil {
		t.Fatal("wrap(nil) != nil")
	}
}

// TestWiretapBounds feeds the tap what a server may send and checks that it
// fails exactly where textproto would otherwise keep reading.
func TestWiretapBounds(t *testing.T) {
	line := func(s string, n int) string { return strings.Repeat(s, n) }
	tests := []struct {
		name    string
		chunks  []string
		wantErr bool
	}{
		{"FEAT-sized reply", []string{"FEAT\r\n", "211-Features:\r\n" + line(" SIZE\r\n", 100) + "211 End\r\n"}, false},
		{"reply at the line bound", []string{"220-x\r\n" + line("220-y\r\n", maxReplyLines-2) + "220 ok\r\n"}, false},
		{"reply past the line bound", []string{"220-x\r\n" + line("220-y\r\n", maxReplyLines-1) + "220 ok\r\n"}, true},
		{"multi-line replies one after another", []string{line("220-x\r\n"+line("220-y\r\n", 300)+"220 ok\r\n", 10)}, false},
		{"line without end", []string{"220 " + line("A", maxReplyBytes)}, true},
		{"line without end, in pieces", []string{"220 ", line("A", maxReplyBytes/2), line("A", maxReplyBytes/2)}, true},
		{"long reply under the bound", []string{"550 " + line("A", maxReplyBytes-10) + "\r\n"}, false},
		{"bytes past the bound in a multi-line reply", []string{"220-x\r\n" + line("220-"+line("y", 300)+"\r\n", 250)}, true},
		// textproto ends a multi-line reply only on a valid code of the
		// reply's own: these never end.
		{"code under 100", []string{"099-x\r\n" + line("099 y\r\n", maxReplyLines)}, true},
		{"other code", []string{"220-x\r\n" + line("230 y\r\n", maxReplyLines)}, true},
		{"no code", []string{"abc-x\r\n" + line("abc y\r\n", maxReplyLines)}, true},
		{"SSH greeting", []string{"SSH-2.0-OpenSSH_9.2\r\n"}, true},
		{"SSH greeting in bytes", []string{"S", "S", "H", "-"}, true},
		{"SSH later", []string{"220 ok\r\n", "SSH-2.0-x\r\n"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tap := newWiretap(nil, "")
			var err error
			for _, c := range tt.chunks {
				if _, err = tap.Write([]byte(c)); err != nil {
					break
				}
			}
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("err = %v, want an error: %v", err, tt.wantErr)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, protocol.ErrProtocol) {
				t.Fatalf("err = %v, not ErrProtocol", err)
			}
			if _, again := tap.Write([]byte("NOOP\r\n")); again == nil {
				t.Fatal("the tap accepted more after a broken reply")
			}
			if len(err.Error()) > 400 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
		})
	}
}

func TestServerText(t *testing.T) {
	for _, tt := range []struct{ in, secret, want string }{
		{"530 Login incorrect.", "pw", "530 Login incorrect."},
		{"530 bad password hunter2 for u", "hunter2", "530 bad password **** for u"},
		{"multi\nline\ttab", "", "multi\nline\ttab"},
		{"\x1b[2Jclear\x07\r", "", `\x1b[2Jclear\x07\x0d`},
		{"bad utf8 \xff\xfe", "", `bad utf8 \xff\xfe`},
		{"bidi \u202e override", "", `bidi \u202e override`},
		{"ünïcödé ok", "", "ünïcödé ok"},
	} {
		if got := protocol.ServerText(tt.in, tt.secret); got != tt.want {
			t.Errorf("ServerText(%q, %q) = %q, want %q", tt.in, tt.secret, got, tt.want)
		}
	}
	long := strings.Repeat("é", 1000) // 2000 bytes
	got := protocol.ServerText(long+"secret", "secret")
	if len(got) > protocol.MaxServerText+40 || !strings.HasSuffix(got, "more bytes)") || !utf8.ValidString(got) {
		t.Fatalf("long text shown as %q", got)
	}
	// A secret past the cut is gone too, and one cut in two never shows.
	if strings.Contains(protocol.ServerText(strings.Repeat("x", 398)+"secret", "secret"), "se") {
		t.Fatal("secret shown across the cut")
	}
}

func TestWiretap(t *testing.T) {
	tap := newWiretap(nil, "")
	for _, chunk := range []string{"USER u\r\n", "331 pw\r\n", "PASS x\r\n", "530 no", "pe\r\n",
		"FEAT\r\n", "211-Feat\r\n SIZE\r\n 200 fake\r\n211 End\r\n"} {
		_, _ = tap.Write([]byte(chunk))
		if chunk == "pe\r\n" {
			if v, c := tap.last(); v != "PASS" || c != 530 {
				t.Fatalf("after PASS: %q %d", v, c)
			}
		}
	}
	if v, c := tap.last(); v != "FEAT" || c != 211 {
		t.Fatalf("after FEAT: %q %d", v, c)
	}
}
