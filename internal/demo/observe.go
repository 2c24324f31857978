package demo

import (
	"encoding/binary"
	"io"
	"strconv"
	"sync"
)

// serverEvent is what a server saw a client do that the demo shows: a
// transfer that started past offset 0, which is a resume.
type serverEvent struct {
	proto  string // "FTP" or "SFTP"
	upload bool   // data written to the server (else read from it)
	offset int64
	how    string // "REST 123 + STOR", ...
}

// notifier forwards server events to the observer of the moment, if any.
// It is safe for concurrent use.
type notifier struct {
	mu sync.Mutex
	fn func(serverEvent)
}

func (n *notifier) set(fn func(serverEvent)) {
	n.mu.Lock()
	n.fn = fn
	n.mu.Unlock()
}

func (n *notifier) notify(e serverEvent) {
	if n == nil {
		return
	}
	n.mu.Lock()
	fn := n.fn
	n.mu.Unlock()
	if fn != nil {
		fn(e)
	}
}

// SFTP packet types (draft-ietf-secsh-filexfer-02) the sniffer reads.
const (
	fxpRead  = 5
	fxpWrite = 6
)

// sftpSniffer reads the client's half of an SFTP channel and reports the
// offset of the first READ and of the first WRITE of the channel when it is
// not 0: a resumed download or upload. It reads only packet headers and
// skips the data, so its cost does not grow with the data's size.
type sftpSniffer struct {
	io.ReadWriteCloser
	n *notifier

	hdr      []byte // the current packet's head: length, type, id, handle, offset
	skip     int64  // bytes of the current packet left to skip
	sawRead  bool   // the first READ was seen
	sawWrite bool   // the first WRITE was seen
}

// maxHandle bounds the handle length the sniffer reads (OpenSSH's and
// pkg/sftp's are a few bytes); a longer one is skipped unparsed.
const maxHandle = 256

func (s *sftpSniffer) Read(p []byte) (int, error) {
	n, err := s.ReadWriteCloser.Read(p)
	s.feed(p[:n])
	return n, err
}

func (s *sftpSniffer) feed(b []byte) {
	for len(b) > 0 {
		if s.skip > 0 {
			k := int(min(s.skip, int64(len(b))))
			s.skip -= int64(k)
			b = b[k:]
			continue
		}
		want := 4
		if len(s.hdr) >= 4 {
			total := 4 + int64(binary.BigEndian.Uint32(s.hdr))
			w := int64(13) // length, type, id, handle length
			if len(s.hdr) >= 13 && (s.hdr[4] == fxpRead || s.hdr[4] == fxpWrite) {
				if hl := binary.BigEndian.Uint32(s.hdr[9:13]); hl <= maxHandle {
					w = 13 + int64(hl) + 8
				}
			}
			want = int(min(w, total))
			if len(s.hdr) >= want {
				s.packet()
				s.skip = total - int64(len(s.hdr))
				s.hdr = s.hdr[:0]
				continue
			}
		}
		k := min(want-len(s.hdr), len(b))
		s.hdr = append(s.hdr, b[:k]...)
		b = b[k:]
	}
}

// packet looks at a complete head.
func (s *sftpSniffer) packet() {
	if len(s.hdr) < 13 || (s.hdr[4] != fxpRead && s.hdr[4] != fxpWrite) {
		return
	}
	hl := int(binary.BigEndian.Uint32(s.hdr[9:13]))
	if len(s.hdr) < 13+hl+8 {
		return
	}
	off := int64(binary.BigEndian.Uint64(s.hdr[13+hl:]))
	write := s.hdr[4] == fxpWrite
	if write && s.sawWrite || !write && s.sawRead {
		return
	}
	if write {
		s.sawWrite = true
	} else {
		s.sawRead = true
	}
	if off > 0 {
		how := "SFTP reads from offset "
		if write {
			how = "SFTP writes from offset "
		}
		s.n.notify(serverEvent{proto: "SFTP", upload: write, offset: off, how: how + strconv.FormatInt(off, 10)})
	}
}
