package sftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestChoosePacket(t *testing.T) {
	openssh := serverLimits{maxPacket: 262144, maxRead: 261120, maxWrite: 261120, maxHandles: 19995}
	def := defaultOptions()
	for _, c := range []struct {
		name     string
		o        func(*options)
		lim      serverLimits
		size, cc int
	}{
		{"no limits", nil, serverLimits{}, DefaultPacketSize, DefaultConcurrency},
		{"openssh", nil, openssh, 261120, 16},
		{"unknown read length", nil, serverLimits{maxPacket: 1 << 20, maxWrite: 1 << 20}, DefaultPacketSize, DefaultConcurrency},
		{"small packet limit", nil, serverLimits{maxPacket: 40000, maxRead: 1 << 20, maxWrite: 1 << 20}, 40000 - packetOverhead, (4 << 20) / (40000 - packetOverhead)},
		{"limits below default", nil, serverLimits{maxRead: 16384, maxWrite: 16384}, DefaultPacketSize, DefaultConcurrency},
		{"huge limits", nil, serverLimits{maxRead: 1 << 30, maxWrite: 1 << 30}, MaxPacketSize, (4 << 20) / MaxPacketSize},
		{"concurrency set", func(o *options) { o.concurrency, o.concurrencySet = 3, true }, openssh, 261120, 3},
		{"packet set", func(o *options) { o.packetSize, o.packetSizeSet = 65536, true }, openssh, 65536, DefaultConcurrency},
		{"packet set above limit", func(o *options) { o.packetSize, o.packetSizeSet = MaxPacketSize, true },
			serverLimits{maxRead: 100000, maxWrite: 200000}, 100000, DefaultConcurrency},
	} {
		o := def
		if c.o != nil {
			c.o(&o)
		}
		size, cc := choosePacket(o, c.lim)
		if size != c.size || cc != c.cc {
			t.Errorf("%s: %d × %d, want %d × %d", c.name, cc, size, c.cc, c.size)
		}
	}
}

func TestParseLimits(t *testing.T) {
	body := binary.BigEndian.AppendUint32(nil, 5)
	for _, v := range []uint64{262144, 261120, 261000, 100} {
		body = binary.BigEndian.AppendUint64(body, v)
	}
	lim, err := parseLimits(5, fxpExtendedReply, body)
	if err != nil || lim != (serverLimits{262144, 261120, 261000, 100}) {
		t.Fatalf("limits = %+v, %v", lim, err)
	}
	if _, err := parseLimits(5, fxpExtendedReply, body[:20]); err == nil {
		t.Fatal("short reply accepted")
	}
	if _, err := parseLimits(6, fxpExtendedReply, body); err == nil {
		t.Fatal("wrong id accepted")
	}
	st := appendString(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 5), fxOpUnsupported), "no")
	var fe *fxStatusError
	if _, err := parseLimits(5, fxpStatus, st); !errors.As(err, &fe) || fe.Code != fxOpUnsupported {
		t.Fatalf("status: %v", err)
	}
}

type nopCloser struct{ bytes.Buffer }

func (*nopCloser) Close() error { return nil }

func TestSkipFirstPacket(t *testing.T) {
	init := []byte{0, 0, 0, 5, fxpInit, 0, 0, 0, 3}
	rest := []byte{0, 0, 0, 2, 9, 9, 0, 0, 0, 1, 7}
	all := append(bytes.Clone(init), rest...)
	// Every way of cutting the stream into two or three writes.
	for i := 0; i <= len(all); i++ {
		for j := i; j <= len(all); j++ {
			var out nopCloser
			s := &skipFirstPacket{w: &out}
			for _, part := range [][]byte{all[:i], all[i:j], all[j:]} {
				if n, err := s.Write(part); n != len(part) || err != nil {
					t.Fatalf("cut %d,%d: Write = %d, %v", i, j, n, err)
				}
			}
			if !bytes.Equal(out.Bytes(), rest) {
				t.Fatalf("cut %d,%d: passed %x, want %x", i, j, out.Bytes(), rest)
			}
		}
	}
}
