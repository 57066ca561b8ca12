package doctor

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Summary counts the verdicts.
type Summary struct {
	Pass int `json:"pass"`
	Warn int `json:"warn"`
	Fail int `json:"fail"`
}

// Summarize counts rs by status.
func Summarize(rs []Result) Summary {
	var s Summary
	for _, r := range rs {
		switch r.Status {
		case Pass:
			s.Pass++
		case Warn:
			s.Warn++
		case Fail:
			s.Fail++
		}
	}
	return s
}

// Report is what `banger doctor --json` prints.
type Report struct {
	// OK is false when any check failed (banger doctor then exits 1).
	OK      bool     `json:"ok"`
	Summary Summary  `json:"summary"`
	Checks  []Result `json:"checks"`
}

// WriteJSON writes rs as a Report.
func WriteJSON(w io.Writer, rs []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(Report{OK: !Failed(rs), Summary: Summarize(rs), Checks: rs})
}

var colors = map[Status]string{Pass: "\x1b[32m", Warn: "\x1b[33m", Fail: "\x1b[31m"}

// WriteText writes one line per check — verdict, check, what was found — with the fix on an
// indented line under every WARN and FAIL, then a summary line. color paints the verdicts.
func WriteText(w io.Writer, rs []Result, color bool) error {
	width := 0
	for _, r := range rs {
		width = max(width, len(r.Check))
	}
	var b strings.Builder
	for _, r := range rs {
		status := string(r.Status)
		if color {
			status = colors[r.Status] + status + "\x1b[0m"
		}
		fmt.Fprintf(&b, "%s  %-*s  %s\n", status, width, r.Check, r.Detail)
		if r.Fix != "" {
			fmt.Fprintf(&b, "%s  %-*s  fix: %s\n", "    ", width, "", r.Fix)
		}
	}
	s := Summarize(rs)
	fmt.Fprintf(&b, "\n%d checks: %d passed, %d %s, %d failed\n", len(rs), s.Pass, s.Warn, plural(s.Warn, "warning"), s.Fail)
	_, err := io.WriteString(w, b.String())
	return err
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
