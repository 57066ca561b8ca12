package vmm

import (
	"fmt"
	"os"
	"strings"
)

// LogTail returns the last n non-empty lines of a log file, joined by " | ", for error
// messages; it says so when the file cannot be read.
func LogTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log at %s)", path)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "--- ") {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 0 {
		return fmt.Sprintf("(nothing in %s)", path)
	}
	return strings.Join(lines, " | ")
}
