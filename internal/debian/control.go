package debian

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// paragraph is one deb822 paragraph (a Packages stanza, the Release body, a .sources entry):
// field name as written → value. A multi-line value keeps its continuation lines, each trimmed
// and joined with "\n"; the first line (possibly empty) comes first.
type paragraph map[string]string

// get returns the value of a field. Field names are case-insensitive in deb822; the exact
// spelling is tried first because archives spell them consistently.
func (p paragraph) get(name string) string {
	if v, ok := p[name]; ok {
		return v
	}
	for k, v := range p {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// maxControlLine bounds one line of a control file so a hostile index cannot make the parser
// buffer without limit. Real lines are far shorter (the longest Packages lines are a few KiB).
const maxControlLine = 1 << 20

// readParagraphs parses deb822 data from r and calls fn for each paragraph in order. Lines
// starting with '#' are comments (allowed in .sources files, absent from archive indices).
// A stop error returned by fn ends parsing early without being reported.
func readParagraphs(r io.Reader, fn func(paragraph) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	// Lines of each field, joined when the paragraph ends: appending each continuation line
	// to a string would copy the value so far every time, quadratic in a field's length.
	fields := map[string][]string{}
	last := "" // field that continuation lines extend
	lineNo := 0
	flush := func() error {
		if len(fields) == 0 {
			return nil
		}
		p := make(paragraph, len(fields))
		for name, lines := range fields {
			p[name] = strings.Join(lines, "\n")
		}
		err := fn(p)
		clear(fields)
		last = ""
		return err
	}
	for {
		line, err := readLine(br)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("line %d: %w", lineNo+1, err)
		}
		lineNo++
		switch {
		case strings.TrimSpace(line) == "":
			if err := flush(); err != nil {
				return unstop(err)
			}
		case line[0] == '#':
			// comment
		case line[0] == ' ' || line[0] == '\t':
			if last == "" {
				return fmt.Errorf("line %d: continuation line without a field", lineNo)
			}
			fields[last] = append(fields[last], strings.TrimSpace(line))
		default:
			name, value, ok := strings.Cut(line, ":")
			if !ok || name == "" || strings.ContainsAny(name, " \t") {
				return fmt.Errorf("line %d: malformed field %q", lineNo, truncate(line, 60))
			}
			fields[name] = []string{strings.TrimSpace(value)}
			last = name
		}
	}
	return unstop(flush())
}

// errStop lets a paragraph callback end parsing early.
var errStop = errors.New("stop")

func unstop(err error) error {
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// readLine returns the next line without its line ending; io.EOF only when no bytes remain.
func readLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		if err != nil {
			if err == io.EOF && len(b) > 0 {
				return string(b), nil
			}
			return "", err
		}
		if !isPrefix && b == nil {
			return string(chunk), nil
		}
		b = append(b, chunk...)
		if len(b) > maxControlLine {
			return "", fmt.Errorf("line longer than %d bytes", maxControlLine)
		}
		if !isPrefix {
			return string(b), nil
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
