package termtext

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCleanEscapesWhatATerminalWouldAct(t *testing.T) {
	for in, want := range map[string]string{
		"nginx":                          "nginx",
		"héllo wörld ✓ 日本":               "héllo wörld ✓ 日本",
		"a\tb\nc":                        "a\tb\nc",
		"\x1b]0;owned\a\x1b[2J":          `\x1b]0;owned\x07\x1b[2J`,
		"cr\rover":                       `cr\rover`,
		"del\x7f":                        `del\u007f`,
		"c1\u009b31m":                    `c1\u009b31m`,
		"bad\xffutf8\xc3":                `bad\xffutf8\xc3`,
		"rtl\u202eevil":                  `rtl\u202eevil`,
		"nul\x00":                        `nul\x00`,
		"already \\x1b stays as written": "already \\x1b stays as written",
	} {
		if got := Clean(in); got != want {
			t.Errorf("Clean(%q) = %q, want %q", in, got, want)
		}
	}
	if got := CleanLine("one\ntwo\x1b"); got != `one\ntwo\x1b` {
		t.Errorf("CleanLine = %q", got)
	}
	if got := CleanLines([]string{"a\x1b", "b"}); got[0] != `a\x1b` || got[1] != "b" {
		t.Errorf("CleanLines = %q", got)
	}
}

func TestTruncateKeepsUTF8Whole(t *testing.T) {
	if got := Truncate("ab日本", 3); got != "ab…" {
		t.Errorf("Truncate = %q", got)
	}
	if got := Truncate("abc", 3); got != "abc" {
		t.Errorf("Truncate = %q", got)
	}
}

// The writer gives the same result however the stream is cut, and drops the \r of \r\n.
func TestWriterCutAnywhere(t *testing.T) {
	in := "boot\r\nok ✓\x1b[2J\r\nlone\rcr 日本\xff end\r"
	want := "boot\nok ✓\\x1b[2J\nlone\\rcr 日本\\xff end\\r"
	for cut := 0; cut <= len(in); cut++ {
		var out bytes.Buffer
		w := NewWriter(&out)
		w.Write([]byte(in[:cut]))
		w.Write([]byte(in[cut:]))
		w.Flush()
		if out.String() != want {
			t.Fatalf("cut at %d: got %q, want %q", cut, out.String(), want)
		}
	}
}

// noControls fails when s holds anything a terminal would act on.
func noControls(t *testing.T, s string, newline bool) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("output is not UTF-8: %q", s)
	}
	for _, r := range s {
		if r == '\t' || (newline && r == '\n') {
			continue
		}
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) || r == '\u202e' {
			t.Fatalf("control %U left in %q", r, s)
		}
	}
}

func FuzzClean(f *testing.F) {
	for _, s := range []string{"", "plain", "\x1b]0;owned\a\x1b[2J", "a\r\nb", "\xff\xfe", "\u009b2J", "日本\xe6\x97"} {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, s string, cut int) {
		c := Clean(s)
		noControls(t, c, true)
		if Clean(c) != c {
			t.Fatalf("Clean is not idempotent on %q", s)
		}
		if isClean(s) && c != s {
			t.Fatalf("clean text %q changed to %q", s, c)
		}
		noControls(t, CleanLine(s), false)
		var out bytes.Buffer
		w := NewWriter(&out)
		if cut < 0 {
			cut = -cut
		}
		if len(s) > 0 {
			cut %= len(s) + 1
		} else {
			cut = 0
		}
		w.Write([]byte(s[:cut]))
		w.Write([]byte(s[cut:]))
		w.Flush()
		noControls(t, out.String(), true)
		if want := Clean(strings.ReplaceAll(s, "\r\n", "\n")); out.String() != want && !strings.Contains(s, "\r\r\n") {
			t.Fatalf("Writer(%q) = %q, Clean of it = %q", s, out.String(), want)
		}
	})
}
