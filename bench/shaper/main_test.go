package main

import (
	"io"
	"slices"
	"testing"

	"github.com/openhaul/haul/integration/faultproxy"
)

func TestParsePorts(t *testing.T) {
	got, err := parsePorts("2121, 30000-30002,2222,2121")
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{2121, 30000, 30001, 30002, 2222}; !slices.Equal(got, want) {
		t.Fatalf("parsePorts = %v, want %v", got, want)
	}
	for _, bad := range []string{"x", "10-5", "0", "70000", "1-x"} {
		if _, err := parsePorts(bad); err == nil {
			t.Errorf("parsePorts(%q): no error", bad)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1000": 1000, "64K": 64 << 10, "12M": 12 << 20, "128MiB": 128 << 20, "1G": 1 << 30} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "M", "1T", "9999999999G"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q): no error", bad)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parse([]string{"-listen", "127.0.0.9", "-ports", "2121,30000-30019", "-rate", "12M",
		"-latency", "10ms", "-cut-every", "128M", "-cut-dir", "up", "-cut-ports", "30000-30019", "-rcvbuf", "64K"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.rate != 12<<20 || o.cutEvery != 128<<20 || o.cutDir != faultproxy.Upstream || len(o.cutPorts) != 20 || len(o.ports) != 21 || o.rcvbuf != 64<<10 {
		t.Fatalf("parse: %+v", o)
	}
	for _, args := range [][]string{
		{"-listen", "10.0.0.1"},
		{"-listen", "127.0.0.1"},
		{"-cut-dir", "sideways"},
		{"-cut-kind", "melt"},
		{"-rcvbuf", "4G"},
		{"-ports", "2121", "-cut-ports", "30000"},
		{"extra"},
	} {
		if _, err := parse(args, io.Discard); err == nil {
			t.Errorf("parse(%q): no error", args)
		}
	}
}
