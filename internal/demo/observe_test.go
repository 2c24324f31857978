package demo

import (
	"bytes"
	"encoding/binary"
	"io"
	"slices"
	"testing"
)

// sftpPacket builds a client packet: length, type, id, then body.
func sftpPacket(typ byte, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(1+4+len(body)))
	b = append(b, typ)
	b = binary.BigEndian.AppendUint32(b, 7)
	return append(b, body...)
}

// rw is a packet body with a handle, an offset and a tail (a WRITE's data
// or a READ's length).
func rw(handle string, off uint64, tail []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(handle)))
	b = append(b, handle...)
	b = binary.BigEndian.AppendUint64(b, off)
	return append(b, tail...)
}

// TestSFTPSnifferReportsFirstOffsets: the first WRITE and the first READ
// of a channel are reported when past offset 0, once each, however the
// stream is split into reads.
func TestSFTPSnifferReportsFirstOffsets(t *testing.T) {
	data := bytes.Repeat([]byte{0xAB}, 70000)
	writeBody := append(binary.BigEndian.AppendUint32(nil, uint32(len(data))), data...)
	var stream []byte
	stream = append(stream, 0, 0, 0, 5, 1, 0, 0, 0, 3) // INIT, version 3 (no id)
	stream = append(stream, sftpPacket(3, []byte("open body"))...)
	stream = append(stream, sftpPacket(fxpWrite, rw("h1", 1<<33, writeBody))...)
	stream = append(stream, sftpPacket(fxpWrite, rw("h1", 1<<33+70000, writeBody))...)
	stream = append(stream, sftpPacket(fxpRead, rw("h2", 0, []byte{0, 0, 0x80, 0}))...)
	stream = append(stream, sftpPacket(fxpRead, rw("h2", 99, []byte{0, 0, 0x80, 0}))...)
	for _, chunk := range []int{1, 7, 4096, len(stream)} {
		var got []serverEvent
		n := &notifier{}
		n.set(func(e serverEvent) { got = append(got, e) })
		s := &sftpSniffer{ReadWriteCloser: nopRWC{bytes.NewReader(stream)}, n: n}
		buf := make([]byte, chunk)
		for {
			if _, err := s.Read(buf); err == io.EOF {
				break
			}
		}
		offs := make([]int64, len(got))
		for i, e := range got {
			offs[i] = e.offset
		}
		// The first READ was at 0: not a resume, and later READs are
		// not first.
		if !slices.Equal(offs, []int64{1 << 33}) || !got[0].upload || got[0].proto != "SFTP" {
			t.Errorf("reads of %d bytes: events %+v, want one upload at %d", chunk, got, int64(1<<33))
		}
	}
}

type nopRWC struct{ io.Reader }

func (nopRWC) Write(p []byte) (int, error) { return len(p), nil }
func (nopRWC) Close() error                { return nil }
