package userns

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Files of subordinate ids (shadow's, as newuidmap and newgidmap read them).
const (
	SubUIDFile = "/etc/subuid"
	SubGIDFile = "/etc/subgid"
)

// MinIDs is the fewest subordinate ids banger maps: a Debian tree uses ids up to 65534
// (nobody), and every one of them must be mapped for the image to record it.
const MinIDs = 65536

// Bounds on a subordinate id file: it is read whole, and a line longer than maxLine is refused.
const (
	maxFileBytes = 1 << 20
	maxLine      = 4096
)

// Range is a range of ids on the host: Start, Start+1, …, Start+Count-1.
type Range struct {
	Start, Count uint32
}

// End is one past the last id of the range.
func (r Range) End() uint64 { return uint64(r.Start) + uint64(r.Count) }

func (r Range) String() string {
	if r.Count == 0 {
		return "none"
	}
	return fmt.Sprintf("%d-%d", r.Start, r.End()-1)
}

// ErrNoSubordinate says the user has no (large enough) range of subordinate ids.
var ErrNoSubordinate = errors.New("no subordinate ids")

// Entry is one line of a subordinate id file: a range and its owner (a name or a numeric id).
type Entry struct {
	Owner string
	Range
}

// ParseSubIDFile reads a file in the format of /etc/subuid ("owner:start:count" lines, the
// owner a user name or a numeric id) and returns its entries in order. Lines that are blank,
// comments (#) or malformed are skipped, as newuidmap skips them; so is a range that is empty
// or overflows the 32-bit id space. The file is read up to maxFileBytes; a longer file, or a
// line longer than maxLine, is an error.
func ParseSubIDFile(r io.Reader) ([]Entry, error) {
	sc := bufio.NewScanner(io.LimitReader(r, maxFileBytes+1))
	sc.Buffer(make([]byte, 0, 256), maxLine)
	var found []Entry
	read := 0
	for sc.Scan() {
		line := sc.Text()
		read += len(line) + 1
		if read > maxFileBytes {
			return nil, fmt.Errorf("longer than %d bytes", maxFileBytes)
		}
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, ":")
		if len(fields) != 3 || fields[0] == "" {
			continue
		}
		start, err1 := parseID(fields[1])
		count, err2 := parseID(fields[2])
		if err1 != nil || err2 != nil || count == 0 {
			continue
		}
		rg := Range{Start: start, Count: count}
		if rg.End() > 1<<32-1 { // (uid_t)-1 is no id
			continue
		}
		found = append(found, Entry{Owner: fields[0], Range: rg})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("a line is longer than %d bytes", maxLine)
		}
		return nil, err
	}
	return found, nil
}

// ParseSubIDs returns the ranges of a subordinate id file (see ParseSubIDFile) that belong
// to the user called name or with the numeric id, in file order.
func ParseSubIDs(r io.Reader, name string, id uint32) ([]Range, error) {
	entries, err := ParseSubIDFile(r)
	if err != nil {
		return nil, err
	}
	return Owned(entries, name, id), nil
}

// FreeRange returns a range of MinIDs ids that overlaps no entry of the given files: the
// first one after every entry, on useradd's grid (100000 + k·65536). Its Count is 0 when the
// id space has no room left.
func FreeRange(files ...[]Entry) Range {
	start := uint64(100000)
	for _, entries := range files {
		for _, e := range entries {
			if e.End() > start {
				start = e.End()
			}
		}
	}
	if start > 100000 {
		start = 100000 + (start-100000+MinIDs-1)/MinIDs*MinIDs
	}
	if start+MinIDs > 1<<32-1 {
		return Range{}
	}
	return Range{Start: uint32(start), Count: MinIDs}
}

// parseID parses a decimal id: digits only (no sign, no spaces), within 32 bits.
func parseID(s string) (uint32, error) {
	if s == "" || len(s) > 10 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not an id", s)
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}

// pickRange returns the first range with at least MinIDs ids, or why there is none.
func pickRange(ranges []Range, file, user string) (Range, error) {
	for _, r := range ranges {
		if r.Count >= MinIDs {
			return r, nil
		}
	}
	if len(ranges) == 0 {
		return Range{}, fmt.Errorf("%w: %s has no entry for %s", ErrNoSubordinate, file, user)
	}
	return Range{}, fmt.Errorf("%w: the ranges of %s in %s hold fewer than %d ids each (%v)", ErrNoSubordinate, user, file, MinIDs, ranges)
}
