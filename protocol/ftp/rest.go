package ftp

import (
	"errors"
	"fmt"

	"github.com/openhaul/haul/protocol"
)

// Servers without REST.
//
// jlaffaye's RetrFrom and StorFrom open the data connection first (EPSV or
// PASV, then the dial), then send REST n (only when n > 0), then RETR or
// STOR. A REST answered with anything but 350 makes them close the data
// connection they opened and return the reply as a *textproto.Error without
// sending RETR or STOR. classify.go turns that reply into
// protocol.ErrResumeUnsupported (421 stays transient, 530 an auth error);
// this file decides what the session does afterwards:
//
//   - a permanent refusal (5xx: "502 Command not implemented", "500 command
//     not understood", "504 not implemented for that parameter", 501, 550)
//     or RFC 959's "202 Command not implemented, superfluous at this site"
//     is remembered: later transfers at a non-zero offset on the session
//     fail the same way at once, with no round trip. The session stays
//     usable: the reply was complete and nothing is pending on the server.
//   - a 4xx refusal is temporary by definition: it is reported as
//     ErrResumeUnsupported but not remembered.
//   - any other reply (1xx, 2xx but 202, 3xx but 350) leaves the session in
//     an unknown state: a preliminary 1xx announces another reply, and a
//     server that answered REST with a positive code may hold the restart
//     marker and apply it to the next STOR or RETR, even one at offset 0.
//     The session is ended; later calls on it fail with an error matching
//     protocol.ErrTransient, so the engine goes on with a new login.

// errRestRefused is the cause of a transfer refused because the server had
// already refused REST on the session.
var errRestRefused = errors.New("the server refused REST earlier on this session")

// restRefusal is a permanent refusal of REST, remembered by the session.
type restRefusal struct {
	code  int   // the reply code
	cause error // the reply, as the first error showed it
}

// restStateError ends a session whose server answered REST with a reply
// that is neither 350 nor a refusal. It matches protocol.ErrTransient: a new
// login has no restart marker pending.
type restStateError struct{ code int }

func (e *restStateError) Error() string {
	return fmt.Sprintf("REST answered %d, neither 350 nor a refusal: the server's restart state is unknown, so the session is not used again", e.code)
}

// Is makes a restStateError match protocol.ErrTransient.
func (e *restStateError) Is(target error) bool { return target == protocol.ErrTransient }

// knownRestRefusal returns the error for a transfer at f.offset when the
// session already knows that the server refuses REST, and nil when f.offset
// is 0 (no REST is sent then) or no refusal was seen.
func (s *Session) knownRestRefusal(f failure) error {
	if f.offset <= 0 || s.restRefused == nil {
		return nil
	}
	return &protocol.Error{Op: f.op, Path: f.path, Code: s.restRefused.code,
		Kind: protocol.ErrResumeUnsupported, Err: fmt.Errorf("%w: %w", errRestRefused, s.restRefused.cause)}
}

// noteRest looks at err, the classified error of a transfer whose last
// command on the wire was f.verb, and remembers a permanent refusal of REST
// or ends the session after an unclear reply (see the top of this file).
func (s *Session) noteRest(f failure, err error) {
	var pe *protocol.Error
	if f.verb != "REST" || !errors.Is(err, protocol.ErrResumeUnsupported) || !errors.As(err, &pe) {
		return
	}
	switch code := pe.Code; {
	case code == 202 || code >= 500:
		s.restRefused = &restRefusal{code: code, cause: pe.Err}
		if s.log != nil {
			s.log.Debug("ftp server refuses REST: transfers at an offset fail at once on this session",
				"addr", s.addr, "code", code)
		}
	case code > 0 && code < 400:
		s.kill(&restStateError{code: code})
	}
}
