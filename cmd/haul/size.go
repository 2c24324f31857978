package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// sizeUnits are the suffixes parseSize accepts, case-insensitively: the
// bare letters and the IEC names are powers of 1024 (as curl's
// --limit-rate and lftp read them), the SI names with a B are powers of
// 1000 (as disk makers and networks count).
var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

var errSizeSyntax = errors.New("want a number with an optional unit: K, M, G, T or KiB, MiB, GiB, TiB (powers of 1024), KB, MB, GB, TB (powers of 1000)")

// parseSize parses a positive byte count such as 512K, 1.5M, 100MB or
// 100MiB. The result is rounded down to whole bytes and must be at least
// one byte and fit in an int64.
func parseSize(s string) (int64, error) {
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.ToLower(strings.TrimSpace(s[i:]))
	mult, ok := sizeUnits[unit]
	if !ok || num == "" || num[0] == '.' || num[len(num)-1] == '.' || strings.Count(num, ".") > 1 {
		return 0, errSizeSyntax
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, errSizeSyntax
	}
	b := math.Floor(v * mult)
	switch {
	case b >= math.MaxInt64: // 2^63 as a float64: the first value past the range
		return 0, fmt.Errorf("%s is more than %d bytes", s, int64(math.MaxInt64))
	case b < 1:
		return 0, fmt.Errorf("%s is less than one byte", s)
	}
	return int64(b), nil
}

// units is how sizes and rates are shown: powers of 1024 (KiB, MiB: the
// default, as the bare K and M of --limit-rate count) or of 1000 (kB, MB:
// when --limit-rate was given in KB, MB, GB or TB), so that the rate shown
// is in the unit the limit counts.
type units struct{ si bool }

// unitsFor returns the units matching a --limit-rate value ("" for none).
func unitsFor(limit string) units {
	u := strings.ToLower(strings.TrimSpace(strings.TrimLeft(limit, "0123456789.")))
	return units{si: len(u) == 2 && u[1] == 'b'}
}

// size formats n bytes: "512 B", "1.5 MiB", "587 MiB" (or kB, MB...),
// with three significant digits at most.
func (u units) size(n int64) string {
	base, names := 1024.0, []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	if u.si {
		base, names = 1000, []string{"B", "kB", "MB", "GB", "TB", "PB", "EB"}
	}
	v, i := float64(n), 0
	for v >= base && i < len(names)-1 {
		v /= base
		i++
	}
	switch {
	case i == 0 || v >= 99.95:
		return fmt.Sprintf("%.0f %s", v, names[i])
	case v >= 9.995:
		return fmt.Sprintf("%.1f %s", v, names[i])
	}
	return fmt.Sprintf("%.2f %s", v, names[i])
}

// rate formats a rate in bytes per second.
func (u units) rate(bps float64) string {
	if bps < 0 || math.IsNaN(bps) || math.IsInf(bps, 0) {
		return "-"
	}
	return u.size(int64(bps)) + "/s"
}

// rateOf is bytes over d as a rate.
func (u units) rateOf(bytes int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return u.rate(float64(bytes) / d.Seconds())
}
