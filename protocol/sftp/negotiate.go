package sftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

const (
	extLimits = "limits@openssh.com"
	// autoInFlight is the payload kept in flight per file when the packet
	// size is chosen from the server's limits: twice the SSH channel
	// window (2 MiB in x/crypto/ssh and OpenSSH), so that the server
	// always has requests queued (measured: 16 requests of 255 KiB are a
	// little faster than 8, 32 no faster than 16).
	autoInFlight = 4 << 20
	// channelWindow is the receive window of an x/crypto/ssh channel
	// (fixed there): at most this much of a download is on its way at
	// once, whatever the requests in flight.
	channelWindow = 2 << 20
	// packetOverhead bounds the bytes of an SSH_FXP_WRITE besides its
	// data: header, request id, handle (at most 256 bytes), offset and
	// length.
	packetOverhead = 512
)

// serverLimits is the reply to limits@openssh.com; zero means unknown.
type serverLimits struct {
	maxPacket, maxRead, maxWrite, maxHandles uint64
}

// startSFTP starts the SFTP subsystem on client and returns pkg/sftp's
// client over it, with the packet size and concurrency chosen. It
// exchanges INIT and VERSION itself, so that it can ask
// limits@openssh.com, where the server offers it, for the largest read and
// write the server serves before pkg/sftp (whose packet size is fixed when
// it starts) is created; pkg/sftp is then handed the same VERSION reply.
// The caller bounds the call (closing the connection unblocks it).
func startSFTP(client *ssh.Client, o *options) (*sftp.Client, error) {
	sess, err := client.NewSession()
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*sftp.Client, error) {
		_ = sess.Close()
		return nil, err
	}
	pw, err := sess.StdinPipe()
	if err != nil {
		return fail(err)
	}
	pr, err := sess.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	if err := sess.RequestSubsystem("sftp"); err != nil {
		return fail(err)
	}
	f := &fxpConn{w: pw, r: pr, next: 1}
	version, ext, err := f.init()
	if err != nil {
		return fail(err)
	}
	var lim serverLimits
	if _, ok := ext[extLimits]; ok {
		lim, err = f.limits()
		if err != nil && !errors.As(err, new(*fxStatusError)) {
			return fail(err)
		}
	}
	o.packetSize, o.concurrency = choosePacket(*o, lim)
	if !o.noSpaceMarginSet {
		o.noSpaceMargin = defaultNoSpaceMargin(o.concurrency, o.packetSize)
	}
	sc, err := sftp.NewClientPipe(io.MultiReader(bytes.NewReader(version), pr), &skipFirstPacket{w: pw},
		sftp.MaxPacketUnchecked(o.packetSize),
		sftp.MaxConcurrentRequestsPerFile(o.concurrency),
		sftp.UseFstat(true),
	)
	if err != nil {
		return fail(err)
	}
	return sc, nil
}

// choosePacket returns the request size and the requests in flight per
// file: those set by options, else DefaultPacketSize and
// DefaultConcurrency, unless the server's limits allow larger requests
// (then the largest up to MaxPacketSize, with about autoInFlight
// bytes in flight). A size set by WithPacketSize is lowered to the
// server's limits.
func choosePacket(o options, lim serverLimits) (size, concurrency int) {
	limit := uint64(0) // largest request the server serves; 0: unknown
	if lim.maxRead > 0 && lim.maxWrite > 0 {
		limit = min(lim.maxRead, lim.maxWrite)
		if lim.maxPacket > packetOverhead {
			limit = min(limit, lim.maxPacket-packetOverhead)
		}
	}
	size, concurrency = o.packetSize, o.concurrency
	switch {
	case o.packetSizeSet:
		if limit > 0 && uint64(size) > limit {
			size = int(max(limit, 512))
		}
	case limit > DefaultPacketSize:
		size = int(min(limit, MaxPacketSize))
		if !o.concurrencySet {
			concurrency = max(2, autoInFlight/size)
		}
	}
	return size, concurrency
}

// limits asks limits@openssh.com.
func (f *fxpConn) limits() (serverLimits, error) {
	id := f.next
	f.next++
	b := binary.BigEndian.AppendUint32(nil, id)
	b = appendString(b, extLimits)
	if err := f.send(fxpExtended, b); err != nil {
		return serverLimits{}, err
	}
	typ, body, err := f.recv()
	if err != nil {
		return serverLimits{}, err
	}
	return parseLimits(id, typ, body)
}

// parseLimits parses the reply to limits@openssh.com request id.
func parseLimits(id uint32, typ byte, body []byte) (serverLimits, error) {
	r := &fxpReader{b: body}
	if got := r.uint32(); r.err == nil && got != id {
		return serverLimits{}, fmt.Errorf("sftp: reply to request %d, want %d", got, id)
	}
	switch typ {
	case fxpStatus:
		code := r.uint32()
		return serverLimits{}, &fxStatusError{Code: code, Msg: r.string()}
	case fxpExtendedReply:
	default:
		return serverLimits{}, fmt.Errorf("sftp: packet type %d in reply to %s", typ, extLimits)
	}
	var v [4]uint64
	for i := range v {
		if len(r.b) < 8 {
			return serverLimits{}, fmt.Errorf("sftp: malformed %s reply: %w", extLimits, errShortPacket)
		}
		v[i] = binary.BigEndian.Uint64(r.b)
		r.b = r.b[8:]
	}
	return serverLimits{maxPacket: v[0], maxRead: v[1], maxWrite: v[2], maxHandles: v[3]}, nil
}

// skipFirstPacket drops the first SFTP packet written through it (pkg/sftp's
// INIT, already sent by startSFTP) and passes every later byte to w.
type skipFirstPacket struct {
	w    io.WriteCloser
	head []byte // the first packet's length prefix, while incomplete
	skip int64  // bytes of the first packet still to drop; -1 when done
}

func (s *skipFirstPacket) Write(p []byte) (int, error) {
	n := 0
	for s.skip >= 0 && len(p) > 0 {
		if len(s.head) < 4 {
			k := min(4-len(s.head), len(p))
			s.head = append(s.head, p[:k]...)
			p, n = p[k:], n+k
			if len(s.head) == 4 {
				s.skip = int64(binary.BigEndian.Uint32(s.head))
			}
			continue
		}
		k := int(min(s.skip, int64(len(p))))
		p, n, s.skip = p[k:], n+k, s.skip-int64(k)
		if s.skip == 0 {
			s.skip = -1
		}
	}
	if len(p) == 0 {
		return n, nil
	}
	m, err := s.w.Write(p)
	return n + m, err
}

func (s *skipFirstPacket) Close() error { return s.w.Close() }
