package bytesize

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"512", 512 * MiB},
		{"0", 0},
		{"1", MiB},
		{"512M", 512 * MiB},
		{"512MiB", 512 * MiB},
		{"512MB", 512 * MiB},
		{"512m", 512 * MiB},
		{"512mib", 512 * MiB},
		{"512mb", 512 * MiB},
		{"4G", 4 * GiB},
		{"4GiB", 4 * GiB},
		{"4GB", 4 * GiB},
		{"4g", 4 * GiB},
		{"1T", TiB},
		{"1TiB", TiB},
		{"1tb", TiB},
		{"100K", 100 * KiB},
		{"100KiB", 100 * KiB},
		{"100kb", 100 * KiB},
		{"4096B", 4096},
		{"4096b", 4096},
		{"1.5G", GiB + GiB/2},
		{"1.5", MiB + MiB/2},
		{".5G", GiB / 2},
		{"0.25M", MiB / 4},
		{"1.0000000001K", KiB}, // fractions round down to whole bytes
		{"  8G  ", 8 * GiB},
		{"8 G", 8 * GiB},
		{"8 GiB", 8 * GiB},
		{"0G", 0},
		{"007M", 7 * MiB},
		{"5.", 5 * MiB},
		{"5.G", 5 * GiB},
		{"8388607T", 8388607 * TiB},         // largest whole TiB count that fits
		{"9223372036854775807B", 1<<63 - 1}, // max int64
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q) error: %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("Parse(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in, wantSub string
	}{
		{"empty", "", "empty"},
		{"only spaces", "   ", "empty"},
		{"negative", "-1G", "negative"},
		{"plus sign", "+1G", "no number"},
		{"garbage", "abc", "no number"},
		{"suffix only", "G", "no number"},
		{"dot only", ".", "no number"},
		{"unknown suffix", "5X", `unknown suffix "X"`},
		{"decimal exponent", "1e3", `unknown suffix "e3"`},
		{"two dots", "1.2.3G", `unknown suffix ".3G"`},
		{"peta not accepted", "1P", `unknown suffix "P"`},
		{"bits", "1Gbit", `unknown suffix "Gbit"`},
		{"trailing junk", "4G!", `unknown suffix "G!"`},
		{"overflow bytes", "9223372036854775808B", "too large"},
		{"overflow TiB", "8388608T", "too large"},
		{"overflow default unit", "99999999999999999", "too large"},
		{"too long", strings.Repeat("9", 100), "longer than 64 characters"},
		{"fractional overflow", "8388608.5T", "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %d, want an error containing %q", tt.in, got, tt.wantSub)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.wantSub) {
				t.Errorf("Parse(%q) error = %q, want it to contain %q", tt.in, msg, tt.wantSub)
			}
			if tt.name != "too long" && !strings.Contains(msg, "invalid size "+quote(tt.in)) {
				t.Errorf("Parse(%q) error = %q, want it to quote the input", tt.in, msg)
			}
			if tt.name != "overflow bytes" && !strings.Contains(msg, "too large") && !strings.Contains(msg, Accepted) {
				t.Errorf("Parse(%q) error = %q, want it to describe the accepted syntax", tt.in, msg)
			}
		})
	}
}

func quote(s string) string { return `"` + s + `"` }

func TestFormat(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0B"},
		{1, "1B"},
		{1023, "1023B"},
		{KiB, "1KiB"},
		{100 * KiB, "100KiB"},
		{512 * MiB, "512MiB"},
		{MiB + MiB/2, "1.5MiB"},
		{8 * GiB, "8GiB"},
		{GiB + GiB/2, "1.5GiB"},
		{3113851289, "2.9GiB"},        // 23.2GiB host / 8
		{GiB + GiB/4, "1.2GiB"},       // 1.25 is exact in binary; FormatFloat rounds half to even
		{1023*MiB + 1000*KiB, "1GiB"}, // 1023.98MiB carries to the next unit
		{TiB, "1TiB"},
		{3 * PiB, "3PiB"},
		{1<<63 - 1, "8EiB"},
		{-512 * MiB, "-512MiB"},
		{-1 << 63, "-8EiB"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := Format(tt.in); got != tt.want {
				t.Errorf("Format(%d) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestFormatParseRoundTrip(t *testing.T) {
	for _, n := range []int64{0, 1, 4096, KiB, 512 * MiB, 8 * GiB, GiB + GiB/2, 3 * TiB} {
		s := Format(n)
		got, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(Format(%d) = %q) error: %v", n, s, err)
		}
		if got != n {
			t.Errorf("Parse(Format(%d) = %q) = %d, want %d", n, s, got, n)
		}
	}
}
