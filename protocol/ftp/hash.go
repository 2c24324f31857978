package ftp

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/textproto"
	"reflect"
	"strconv"
	"strings"

	"github.com/openhaul/haul/protocol"
)

var _ protocol.Hasher = (*Session)(nil)

var (
	errNoHash    = errors.New("server offers no hash command for this algorithm")
	errHashPath  = errors.New(`path contains a double quote, which hash commands cannot carry`)
	errHashRange = errors.New("invalid byte range")
	errHashReply = errors.New("malformed hash reply")
)

// hashAlgos lists the algorithms haul knows, best first, with proftpd's
// mod_digest X-command (which takes a byte range) and the HASH draft's name.
var hashAlgos = []struct {
	algo, xcmd, hashName string
}{
	{"sha256", "XSHA256", "SHA-256"},
	{"sha512", "XSHA512", "SHA-512"},
	{"sha1", "XSHA1", "SHA-1"},
	{"md5", "XMD5", "MD5"},
	{"crc32", "XCRC", "CRC32"},
}

// hashSupport is what FEAT said about hash commands.
type hashSupport struct {
	x    map[string]bool // X-commands offered: "XSHA256", ...
	hash map[string]bool // HASH algorithm names offered: "SHA-256", ...
}

func parseHashFeatures(lines []string) hashSupport {
	hs := hashSupport{x: map[string]bool{}, hash: map[string]bool{}}
	for _, l := range lines {
		name, arg, _ := strings.Cut(l, " ")
		name = strings.ToUpper(name)
		if name == "HASH" {
			for _, a := range strings.Split(arg, ";") {
				if a = strings.ToUpper(strings.TrimSuffix(strings.TrimSpace(a), "*")); a != "" {
					hs.hash[a] = true
				}
			}
			continue
		}
		hs.x[name] = true
	}
	return hs
}

// HashAlgorithms lists the algorithms the server can hash with, best first,
// from its FEAT reply (proftpd's mod_digest: XSHA256/XSHA512/XSHA1/XMD5/XCRC
// with byte ranges, and HASH for whole files). vsftpd and pure-ftpd offer
// none.
func (s *Session) HashAlgorithms() []string {
	if s.textConn() == nil {
		return nil
	}
	var out []string
	for _, a := range hashAlgos {
		if s.hashes.x[a.xcmd] || s.hashes.hash[a.hashName] {
			out = append(out, a.algo)
		}
	}
	return out
}

// Hash returns the server's digest of bytes [start, end) of path (end < 0:
// to the end of the file). It uses the algorithm's X-command (XSHA256 path
// start end) and, for a whole file on servers without it, OPTS HASH + HASH.
// An algorithm the server lacks matches protocol.ErrUnsupported.
func (s *Session) Hash(ctx context.Context, path, algorithm string, start, end int64) ([]byte, error) {
	f := failure{op: "hash", path: path}
	if err := protocol.CheckPath(path); err != nil {
		return nil, err
	}
	if strings.Contains(path, `"`) {
		return nil, &protocol.Error{Op: f.op, Path: path, Kind: protocol.ErrUnsupported, Err: errHashPath}
	}
	if start < 0 || (end >= 0 && end < start) {
		return nil, &protocol.Error{Op: f.op, Path: path, Err: fmt.Errorf("%w: [%d, %d)", errHashRange, start, end)}
	}
	i := -1
	for j, a := range hashAlgos {
		if a.algo == strings.ToLower(algorithm) {
			i = j
		}
	}
	tc := s.textConn()
	if i < 0 || tc == nil || (!s.hashes.x[hashAlgos[i].xcmd] && !s.hashes.hash[hashAlgos[i].hashName]) {
		return nil, &protocol.Error{Op: f.op, Path: path, Kind: protocol.ErrUnsupported,
			Err: fmt.Errorf("%w: %q", errNoHash, algorithm)}
	}
	a := hashAlgos[i]
	if err := s.begin(ctx, f); err != nil {
		return nil, err
	}
	defer s.end()
	arg := path
	if strings.ContainsAny(path, " \t") {
		arg = `"` + path + `"`
	}
	if end < 0 && (start > 0 || !s.hashes.x[a.xcmd]) {
		size, err := s.fileSize(path)
		if err != nil {
			return nil, s.fail(ctx, failure{op: f.op, path: path, verb: "SIZE"}, err)
		}
		end = size
	}
	if start == end {
		return protocol.NewHash(a.algo).Sum(nil), nil
	}

	if s.hashes.x[a.xcmd] {
		var msg string
		var err error
		if start == 0 && end < 0 {
			_, msg, err = rawCmd(tc, 250, "%s %s", a.xcmd, arg)
		} else {
			_, msg, err = rawCmd(tc, 250, "%s %s %d %d", a.xcmd, arg, start, end)
		}
		if err != nil {
			return nil, s.fail(ctx, failure{op: f.op, path: path, verb: a.xcmd}, err)
		}
		return s.decodeDigest(a.algo, lastField(msg))
	}

	// HASH hashes whole files only (proftpd ignores RANG for HASH).
	if start != 0 {
		return nil, &protocol.Error{Op: f.op, Path: path, Kind: protocol.ErrUnsupported,
			Err: fmt.Errorf("%w: HASH cannot hash a range", errNoHash)}
	}
	if _, _, err := rawCmd(tc, 200, "OPTS HASH %s", a.hashName); err != nil {
		return nil, s.fail(ctx, failure{op: f.op, path: path, verb: "OPTS"}, err)
	}
	_, msg, err := rawCmd(tc, 213, "HASH %s", arg)
	if err != nil {
		return nil, s.fail(ctx, failure{op: f.op, path: path, verb: "HASH"}, err)
	}
	// "SHA-256 0-1000 <hex> <path>"
	lines := strings.Split(msg, "\n")
	fields := strings.Fields(lines[len(lines)-1])
	if len(fields) < 3 || !strings.EqualFold(fields[0], a.hashName) || fields[1] != "0-"+strconv.FormatInt(end, 10) {
		return nil, s.shown(&protocol.Error{Op: f.op, Path: path, Err: fmt.Errorf("%w: %q", errHashReply, msg)})
	}
	return s.decodeDigest(a.algo, fields[2])
}

func lastField(msg string) string {
	fields := strings.Fields(msg)
	if len(fields) == 0 {
		return ""
	}
	return fields[len(fields)-1]
}

func (s *Session) decodeDigest(algo, h string) ([]byte, error) {
	if algo == "crc32" && len(h) < 8 && len(h) > 0 {
		h = strings.Repeat("0", 8-len(h)) + h
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return nil, s.shown(&protocol.Error{Op: "hash", Err: fmt.Errorf("%w: %w", errHashReply, err)})
	}
	return b, nil
}

// rawCmd sends a command jlaffaye has no method for, exactly as its own
// (unexported) cmd does.
func rawCmd(tc *textproto.Conn, expect int, format string, args ...any) (int, string, error) {
	if _, err := tc.Cmd(format, args...); err != nil {
		return 0, "", err
	}
	return tc.ReadResponse(expect)
}

// textConn returns jlaffaye's control *textproto.Conn, which it does not
// export, so commands it lacks (XSHA256, HASH) can be sent on the same
// logged-in connection. The field is looked up by name and type; if a future
// version of the library changes it, textConn returns nil and hashing is
// reported unsupported instead of misbehaving.
func (s *Session) textConn() *textproto.Conn {
	if s.c == nil {
		return nil
	}
	v := reflect.ValueOf(s.c).Elem().FieldByName("conn")
	if !v.IsValid() || v.Type() != reflect.TypeFor[*textproto.Conn]() {
		return nil
	}
	return (*textproto.Conn)(v.UnsafePointer())
}
