package sftp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/ssh"
)

// A minimal SFTP version 3 client for the one request pkg/sftp cannot send:
// "check-file-name" (draft-ietf-secsh-filexfer-extensions-00, section 3),
// served by proftpd's mod_sftp among others. It runs on a second "sftp"
// subsystem channel of the session's SSH connection.

// SFTP packet types used here.
const (
	fxpInit          = 1
	fxpVersion       = 2
	fxpStatus        = 101
	fxpExtended      = 200
	fxpExtendedReply = 201
)

const (
	extCheckFileName   = "check-file-name"
	extCheckFileHandle = "check-file-handle"
	extCheckFile       = "check-file"
	// maxFXPPacket bounds the replies read: a check-file reply with one
	// digest is tiny.
	maxFXPPacket = 256 << 10
)

// fxStatusError is an SSH_FXP_STATUS reply to a request of fxpConn.
type fxStatusError struct {
	Code uint32
	Msg  string
}

func (e *fxStatusError) Error() string {
	return fmt.Sprintf("sftp: status %d (%s)", e.Code, e.Msg)
}

// fxpConn is one SFTP subsystem channel speaking raw packets. It sends one
// request at a time.
type fxpConn struct {
	r    io.Reader
	w    io.Writer
	c    io.Closer         // closes the channel (nil: not ours to close)
	ext  map[string]string // extensions of the VERSION reply
	next uint32            // next request id
}

// openFXP opens an "sftp" subsystem channel on c and exchanges INIT and
// VERSION. The caller bounds the call (closing c unblocks it).
func openFXP(c ssh.Conn) (*fxpConn, error) {
	ch, reqs, err := c.OpenChannel("session", nil)
	if err != nil {
		return nil, err
	}
	go ssh.DiscardRequests(reqs) // ends when the channel closes
	ok, err := ch.SendRequest("subsystem", true, ssh.Marshal(&struct{ Name string }{"sftp"}))
	if err == nil && !ok {
		err = errors.New("sftp: subsystem request refused")
	}
	if err != nil {
		_ = ch.Close()
		return nil, err
	}
	f := &fxpConn{r: ch, w: ch, c: ch, next: 1}
	if _, f.ext, err = f.init(); err != nil {
		_ = ch.Close()
		return nil, err
	}
	return f, nil
}

// init sends INIT for version 3 and reads the VERSION reply. It returns
// the reply as received (length prefix included) and its extensions.
func (f *fxpConn) init() (raw []byte, ext map[string]string, err error) {
	if err := f.send(fxpInit, binary.BigEndian.AppendUint32(nil, 3)); err != nil {
		return nil, nil, err
	}
	typ, body, err := f.recv()
	if err != nil {
		return nil, nil, err
	}
	if typ != fxpVersion {
		return nil, nil, fmt.Errorf("sftp: packet type %d instead of VERSION", typ)
	}
	if ext, err = parseVersion(body); err != nil {
		return nil, nil, err
	}
	raw = binary.BigEndian.AppendUint32(nil, uint32(1+len(body)))
	raw = append(raw, fxpVersion)
	return append(raw, body...), ext, nil
}

// Close closes the channel.
func (f *fxpConn) Close() error {
	if f.c == nil {
		return nil
	}
	return f.c.Close()
}

// send writes one packet: length, type, body.
func (f *fxpConn) send(typ byte, body []byte) error {
	p := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(p, uint32(1+len(body)))
	p[4] = typ
	_, err := f.w.Write(append(p, body...))
	return err
}

// recv reads one packet.
func (f *fxpConn) recv() (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(f.r, h[:]); err != nil {
		return 0, nil, fmt.Errorf("sftp: reading reply: %w", noEOF(err))
	}
	n := binary.BigEndian.Uint32(h[:4])
	if n < 1 || n > maxFXPPacket {
		return 0, nil, fmt.Errorf("sftp: reply of %d bytes", n)
	}
	body := make([]byte, n-1)
	if _, err := io.ReadFull(f.r, body); err != nil {
		return 0, nil, fmt.Errorf("sftp: reading reply: %w", noEOF(err))
	}
	return h[4], body, nil
}

// noEOF turns the end of the channel into io.ErrUnexpectedEOF: a reply
// was due.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// checkFileName sends "check-file-name" for path with the algorithms
// (comma-separated, preferred first), the byte range [start, start+length)
// (length 0: to the end of the file) and blockSize (0: one hash of the
// whole range). It returns the algorithm the server used and the hash
// bytes (one digest per block, concatenated).
func (f *fxpConn) checkFileName(path, algos string, start, length uint64, blockSize uint32) (string, []byte, error) {
	id := f.next
	f.next++
	b := binary.BigEndian.AppendUint32(nil, id)
	b = appendString(b, extCheckFileName)
	b = appendString(b, path)
	b = appendString(b, algos)
	b = binary.BigEndian.AppendUint64(b, start)
	b = binary.BigEndian.AppendUint64(b, length)
	b = binary.BigEndian.AppendUint32(b, blockSize)
	if err := f.send(fxpExtended, b); err != nil {
		return "", nil, err
	}
	typ, body, err := f.recv()
	if err != nil {
		return "", nil, err
	}
	return parseCheckFileReply(id, typ, body)
}

// parseCheckFileReply parses the reply to request id: an
// SSH_FXP_EXTENDED_REPLY holding [string "check-file"], string algorithm,
// hash bytes, or an SSH_FXP_STATUS (returned as *fxStatusError). The draft
// starts the reply with the string "check-file"; proftpd omits it.
func parseCheckFileReply(id uint32, typ byte, body []byte) (string, []byte, error) {
	r := &fxpReader{b: body}
	got := r.uint32()
	if r.err == nil && got != id {
		return "", nil, fmt.Errorf("sftp: reply to request %d, want %d", got, id)
	}
	switch typ {
	case fxpStatus:
		code := r.uint32()
		msg := r.string() // absent in some old servers' replies
		if r.err != nil && code == 0 {
			return "", nil, fmt.Errorf("sftp: malformed status reply: %w", r.err)
		}
		if code == 0 {
			return "", nil, errors.New("sftp: check-file answered OK without a hash")
		}
		return "", nil, &fxStatusError{Code: code, Msg: msg}
	case fxpExtendedReply:
	default:
		return "", nil, fmt.Errorf("sftp: packet type %d in reply to check-file", typ)
	}
	algo := r.string()
	if algo == extCheckFile {
		algo = r.string()
	}
	if r.err != nil {
		return "", nil, fmt.Errorf("sftp: malformed check-file reply: %w", r.err)
	}
	return strings.ToLower(algo), r.b, nil
}

// parseVersion parses the body of an SSH_FXP_VERSION packet: the version
// (3 expected, higher accepted as 3 is what we asked for) and the
// extension pairs.
func parseVersion(body []byte) (map[string]string, error) {
	r := &fxpReader{b: body}
	if v := r.uint32(); r.err == nil && v < 3 {
		return nil, fmt.Errorf("sftp: server speaks version %d", v)
	}
	ext := make(map[string]string)
	for r.err == nil && len(r.b) > 0 {
		name, data := r.string(), r.string()
		if r.err == nil {
			ext[name] = data
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("sftp: malformed VERSION: %w", r.err)
	}
	return ext, nil
}

// checkFileAlgorithms returns the algorithms a VERSION extension list
// names for check-file, in the server's order, and whether the list
// advertises check-file at all (some servers list the extension with no
// algorithms).
func checkFileAlgorithms(ext map[string]string) (algos []string, advertised bool) {
	for _, name := range []string{extCheckFileName, extCheckFile, extCheckFileHandle} {
		data, ok := ext[name]
		if !ok {
			continue
		}
		advertised = true
		for a := range strings.SplitSeq(data, ",") {
			a = strings.ToLower(strings.TrimSpace(a))
			if strings.ContainsFunc(a, isLetter) && !strings.ContainsFunc(a, notAlgoRune) {
				algos = append(algos, a)
			}
		}
		if len(algos) > 0 {
			return algos, true
		}
	}
	return nil, advertised
}

// isLetter and notAlgoRune tell algorithm names from other extension
// data (some servers send a version number, not a list).
func isLetter(r rune) bool { return r >= 'a' && r <= 'z' }

func notAlgoRune(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '@' || r == '.')
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// fxpReader decodes SFTP wire types; the first error sticks.
type fxpReader struct {
	b   []byte
	err error
}

var errShortPacket = errors.New("packet too short")

func (r *fxpReader) uint32() uint32 {
	if r.err != nil || len(r.b) < 4 {
		r.err = errShortPacket
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *fxpReader) string() string {
	n := r.uint32()
	if r.err != nil || uint64(len(r.b)) < uint64(n) {
		r.err = errShortPacket
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
