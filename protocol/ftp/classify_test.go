package ftp

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/textproto"
	"syscall"
	"testing"

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

func TestWiretap(t *testing.T) {
	tap := newWiretap(nil)
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
