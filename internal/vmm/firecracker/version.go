package firecracker

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"time"
)

// Version is a Firecracker (or jailer) release version.
type Version struct{ Major, Minor, Patch int }

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Less reports whether v is older than w.
func (v Version) Less(w Version) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	return v.Patch < w.Patch
}

// The supported range: 1.8 is the first release that describes virtio-mmio devices to the
// guest through ACPI, which is how Debian's kernel (no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES)
// finds its disks and vsock. A 2.x release may change the API; it is refused until tested.
var (
	MinVersion = Version{1, 8, 0}
	maxMajor   = 1
)

// SupportedRange says which versions banger runs, for messages and `banger doctor`.
const SupportedRange = "1.8 or newer within 1.x"

// ReleasesURL is where users get official Firecracker (and jailer) binaries.
const ReleasesURL = "https://github.com/firecracker-microvm/firecracker/releases"

var versionRE = regexp.MustCompile(`v?(\d+)\.(\d+)\.(\d+)`)

// ParseVersion reads "1.14.2", "v1.14.2" or the first line of `firecracker --version`
// ("Firecracker v1.14.2").
func ParseVersion(s string) (Version, error) {
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return Version{}, fmt.Errorf("no version number in %q", truncate(s, 100))
	}
	var v Version
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	v.Patch, _ = strconv.Atoi(m[3])
	return v, nil
}

// CheckSupported returns nil if banger supports Firecracker v, or an error saying what to do.
func CheckSupported(v Version) error {
	if v.Less(MinVersion) {
		return fmt.Errorf("firecracker %s is too old: banger needs %s (guests find their devices through ACPI, which Firecracker has from 1.8); get a newer release from %s", v, SupportedRange, ReleasesURL)
	}
	if v.Major > maxMajor {
		return fmt.Errorf("firecracker %s is newer than banger supports (%s); use a 1.x release from %s", v, SupportedRange, ReleasesURL)
	}
	return nil
}

// BinaryVersion runs `<bin> --version` and parses its answer. It works for the jailer too.
func BinaryVersion(ctx context.Context, bin string) (Version, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return Version{}, fmt.Errorf("%s --version: %w", bin, err)
	}
	// The first line is "Firecracker v1.14.2" (or "Jailer v1.7.0"); Firecracker then logs
	// its exit, which may contain other numbers.
	first := string(out)
	for i, c := range first {
		if c == '\n' {
			first = first[:i]
			break
		}
	}
	v, err := ParseVersion(first)
	if err != nil {
		return Version{}, fmt.Errorf("%s --version: %w", bin, err)
	}
	return v, nil
}
