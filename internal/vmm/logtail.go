package vmm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/banger-dev/banger/internal/termtext"
)

// Bounds of LogTail: it reads at most tailWindow bytes from the end of a log (a guest writes
// its console log and can make it huge) and cuts each line it returns at maxTailLine bytes.
const (
	tailWindow  = 64 << 10
	maxTailLine = 240
)

// LogTail returns the last n non-empty lines of a log file, joined by " | ", for error
// messages; it says so when the file cannot be read. Only the end of the file is read; when
// it holds fewer than n lines, the end of the rotated log (path + ".1") supplies the earlier
// ones. Each line is cut at 240 bytes and its control characters are escaped (termtext), as
// the text can be the guest's.
func LogTail(path string, n int) string {
	lines, err := tailLines(path, n)
	if err != nil {
		return fmt.Sprintf("(no log at %s)", path)
	}
	if len(lines) < n {
		if older, err := tailLines(path+RotatedSuffix, n-len(lines)); err == nil {
			lines = append(older, lines...)
		}
	}
	if len(lines) == 0 {
		return fmt.Sprintf("(nothing in %s)", path)
	}
	return strings.Join(lines, " | ")
}

// tailLines returns up to n last non-empty lines from the last tailWindow bytes of path,
// cut and cleaned. A line cut by the window's start is dropped unless it is all there is.
func tailLines(path string, n int) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(st.Size()-tailWindow, 0)
	buf := make([]byte, min(st.Size(), tailWindow))
	k, err := f.ReadAt(buf, off)
	if err != nil && err != io.EOF {
		return nil, err
	}
	buf = buf[:k]
	if off > 0 {
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	var lines []string
	for len(buf) > 0 && len(lines) < n {
		i := bytes.LastIndexByte(buf[:len(buf)-1], '\n')
		line := buf[i+1:]
		buf = buf[:i+1]
		l := strings.TrimSpace(string(line))
		if l == "" || strings.HasPrefix(l, "--- ") {
			continue
		}
		lines = append(lines, termtext.CleanLine(termtext.Truncate(l, maxTailLine)))
	}
	for i, j := 0, len(lines)-1; i < j; i, j = i+1, j-1 {
		lines[i], lines[j] = lines[j], lines[i]
	}
	return lines, nil
}
