package main

import "testing"

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"1", 1},
		{"100B", 100},
		{"500K", 500 << 10},
		{"500k", 500 << 10},
		{"20M", 20 << 20},
		{"1.5M", 3 << 19},
		{"100MiB", 100 << 20},
		{"100MB", 100_000_000},
		{"100mb", 100_000_000},
		{"2G", 2 << 30},
		{"2GB", 2_000_000_000},
		{"1 KiB", 1024},
		{"1.5", 1},
		{"8EiB", 0}, // unknown unit
		{"8388607T", 8388607 << 40},
	} {
		got, err := parseSize(tc.in)
		if tc.want == 0 {
			if err == nil {
				t.Errorf("%q: %d, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "M", "-1M", "0", "0.5", "1e3", "0x10", "1..5M", ".5M", "5.M", "inf", "NaN", "8388608T", "99999999999G", "9223372036854775808", "1 2M"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("%q: %d, want an error", in, got)
		}
	}
}
