package bytesize

import (
	"fmt"
	"math/big"
	"strings"
)

// Accepted describes the accepted syntax; errors quote it so a user can fix their input.
const Accepted = `a number with an optional binary suffix B, K, M, G or T ` +
	`(also KiB/KB, MiB/MB, GiB/GB, TiB/TB, any case; e.g. 512M, 4GiB, 1.5G); ` +
	`a number without a suffix means MiB`

// suffixes maps a lower-cased suffix to its unit. "" means MiB. Decimal-looking suffixes
// (MB, GB, ...) are binary on purpose; see the package comment.
var suffixes = map[string]int64{
	"":    MiB,
	"b":   1,
	"k":   KiB,
	"kb":  KiB,
	"kib": KiB,
	"m":   MiB,
	"mb":  MiB,
	"mib": MiB,
	"g":   GiB,
	"gb":  GiB,
	"gib": GiB,
	"t":   TiB,
	"tb":  TiB,
	"tib": TiB,
}

// maxInput bounds the input so that absurd strings fail fast instead of allocating.
const maxInput = 64

// Parse converts a size such as "512M", "512MiB", "4G", "1.5G", "100K", "1T" or "512" into
// bytes. A number without a suffix means MiB. Suffixes are case-insensitive and always binary:
// "MB" is MiB and "GB" is GiB. A "B" suffix means plain bytes. Spaces around the number and
// between number and suffix are ignored. A fractional value is rounded down to whole bytes.
//
// Parse rejects empty input, signs, exponents, unknown suffixes and values that do not fit in
// an int64. Zero ("0", "0G") is accepted: whether zero makes sense is the caller's decision.
func Parse(s string) (int64, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, fmt.Errorf("invalid size %q: empty; want %s", s, Accepted)
	}
	if len(in) > maxInput {
		return 0, fmt.Errorf("invalid size %q...: longer than %d characters; want %s", s[:maxInput], maxInput, Accepted)
	}
	if in[0] == '-' {
		return 0, fmt.Errorf("invalid size %q: negative; want %s", s, Accepted)
	}

	num, suffix := splitNumber(in)
	if num == "" {
		return 0, fmt.Errorf("invalid size %q: no number; want %s", s, Accepted)
	}
	unit, ok := suffixes[strings.ToLower(strings.TrimSpace(suffix))]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown suffix %q; want %s", s, strings.TrimSpace(suffix), Accepted)
	}

	// num is digits with at most one '.', so big.Rat parses it exactly.
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("invalid size %q: %q is not a number; want %s", s, num, Accepted)
	}
	r.Mul(r, new(big.Rat).SetInt64(unit))
	bytes := new(big.Int).Quo(r.Num(), r.Denom()) // rounds toward zero; r is never negative
	if !bytes.IsInt64() {
		return 0, fmt.Errorf("invalid size %q: too large; sizes must be below 8EiB", s)
	}
	return bytes.Int64(), nil
}

// splitNumber splits s into a leading decimal number (digits with at most one '.', and at
// least one digit) and the rest. If s does not start with such a number, num is "".
func splitNumber(s string) (num, rest string) {
	digits, dots, i := 0, 0, 0
	for ; i < len(s); i++ {
		c := s[i]
		if c >= '0' && c <= '9' {
			digits++
		} else if c == '.' && dots == 0 {
			dots++
		} else {
			break
		}
	}
	if digits == 0 {
		return "", s
	}
	return s[:i], s[i:]
}
