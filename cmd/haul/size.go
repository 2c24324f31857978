package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
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
