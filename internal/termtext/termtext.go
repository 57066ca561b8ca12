// Package termtext makes text that came from a guest safe to print on a terminal. A guest
// controls process names, agent error messages, console output and more; printed raw, an
// escape sequence in any of them can retitle the window, clear the screen, move the cursor
// over earlier output or (on some terminals) answer back with input. Clean and Writer
// replace every control character and invalid UTF-8 byte with a visible Go-style escape
// (\x1b, \u009b, \xff) so that what the guest sent can still be read but never acts.
package termtext

import (
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Clean returns s with everything but printable UTF-8, spaces, tabs and newlines written as
// visible escapes: C0 controls (ESC, BEL, CR, …) as \xNN, DEL and C1 controls and other
// non-printing runes (bidi overrides, …) as \uNNNN, bytes that are not UTF-8 as \xNN. Text
// without any of those is returned unchanged.
func Clean(s string) string {
	if isClean(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		appendRune(&b, s[i:i+size], r, true)
		i += size
	}
	return b.String()
}

// CleanLine is Clean for one line of a table or a message: newlines are escaped too, so a
// guest cannot start a line that looks like banger's own output.
func CleanLine(s string) string {
	if isClean(s) && !strings.Contains(s, "\n") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		appendRune(&b, s[i:i+size], r, false)
		i += size
	}
	return b.String()
}

// CleanLines applies CleanLine to each line, in a new slice.
func CleanLines(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = CleanLine(l)
	}
	return out
}

// Truncate cuts s to at most max bytes without splitting a UTF-8 sequence, marking a cut
// with "…".
func Truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && cut < len(s) && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func isClean(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 {
			return isCleanSlow(s[i:])
		}
		if (c < 0x20 && c != '\t' && c != '\n') || c == 0x7f {
			return false
		}
	}
	return true
}

func isCleanSlow(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if !allowed(r, size, true) {
			return false
		}
		i += size
	}
	return true
}

// allowed says whether rune r (decoded from size bytes) may be printed as it is.
func allowed(r rune, size int, newline bool) bool {
	switch {
	case r == utf8.RuneError && size <= 1:
		return false
	case r == '\t':
		return true
	case r == '\n':
		return newline
	case r == ' ':
		return true
	}
	return unicode.IsPrint(r) || unicode.IsSpace(r) && r > 0x9f && r != 0x2028 && r != 0x2029
}

// appendRune writes one decoded rune (raw holds its bytes) to b, escaped when not allowed.
func appendRune(b *strings.Builder, raw string, r rune, newline bool) {
	if allowed(r, len(raw), newline) {
		b.WriteString(raw)
		return
	}
	switch {
	case r == utf8.RuneError && len(raw) <= 1:
		fmt.Fprintf(b, `\x%02x`, raw[0])
	case r == '\n':
		b.WriteString(`\n`)
	case r == '\r':
		b.WriteString(`\r`)
	case r < 0x20:
		fmt.Fprintf(b, `\x%02x`, r)
	default:
		fmt.Fprintf(b, `\u%04x`, r)
	}
}

// Writer cleans a stream of text (a console log) on its way to a terminal: like Clean, but a
// UTF-8 sequence split across writes is kept whole, and a carriage return right before a
// newline (serial consoles end lines with \r\n) is dropped instead of escaped.
type Writer struct {
	w       io.Writer
	pending []byte // an incomplete UTF-8 sequence or a lone \r from the end of the last write
	buf     strings.Builder
}

// NewWriter returns a Writer that writes cleaned text to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write cleans p and writes it on. It reports len(p) written unless the underlying writer
// failed.
func (cw *Writer) Write(p []byte) (int, error) {
	data := p
	if len(cw.pending) > 0 {
		data = append(cw.pending, p...)
		cw.pending = nil
	}
	cw.buf.Reset()
	for i := 0; i < len(data); {
		c := data[i]
		if c == '\r' {
			if i+1 == len(data) {
				cw.pending = append(cw.pending[:0], '\r')
				break
			}
			if data[i+1] == '\n' {
				i++
				continue
			}
		}
		if c >= 0x80 && !utf8.FullRune(data[i:]) {
			cw.pending = append(cw.pending[:0], data[i:]...)
			break
		}
		r, size := utf8.DecodeRune(data[i:])
		appendRune(&cw.buf, string(data[i:i+size]), r, true)
		i += size
	}
	if cw.buf.Len() > 0 {
		if _, err := io.WriteString(cw.w, cw.buf.String()); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush writes out what a previous Write held back (a lone \r or a cut UTF-8 sequence at the
// end of the stream), escaped.
func (cw *Writer) Flush() error {
	if len(cw.pending) == 0 {
		return nil
	}
	s := Clean(string(cw.pending))
	cw.pending = nil
	_, err := io.WriteString(cw.w, s)
	return err
}
