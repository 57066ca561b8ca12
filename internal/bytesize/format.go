package bytesize

import (
	"strconv"
	"strings"
)

var units = []struct {
	size int64
	name string
}{
	{EiB, "EiB"},
	{PiB, "PiB"},
	{TiB, "TiB"},
	{GiB, "GiB"},
	{MiB, "MiB"},
	{KiB, "KiB"},
}

// Format renders n bytes in the largest binary unit in which it is at least 1, with at most
// one decimal and no trailing ".0": 8589934592 → "8GiB", 536870912 → "512MiB",
// 1610612736 → "1.5GiB", 1000 → "1000B". The decimal is rounded to nearest, so Format is for
// people; Parse(Format(n)) == n only when n is a whole or half multiple of its unit.
// Negative values are formatted with a leading "-".
func Format(n int64) string {
	if n < 0 {
		if n == -1<<63 {
			return "-8EiB"
		}
		return "-" + Format(-n)
	}
	for i, u := range units {
		if n < u.size {
			continue
		}
		v := float64(n) / float64(u.size)
		s := strconv.FormatFloat(v, 'f', 1, 64)
		// Rounding can carry into the next unit: 1023.96MiB prints as 1GiB, not 1024MiB.
		if i > 0 && s == "1024.0" {
			return "1" + units[i-1].name
		}
		return strings.TrimSuffix(s, ".0") + u.name
	}
	return strconv.FormatInt(n, 10) + "B"
}
