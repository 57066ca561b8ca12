package image

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/banger-dev/banger/internal/ext4"
)

// Bootstrap tools Build knows.
const (
	Mmdebstrap  = "mmdebstrap"
	Debootstrap = "debootstrap"
)

// debianKeyring is the archive keyring debootstrap is pointed at explicitly: without a keyring
// debootstrap silently skips signature checks, and banger never builds unverified images.
const debianKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// bootstrapper is the tool that creates the Debian tree.
type bootstrapper struct {
	Name    string // Mmdebstrap or Debootstrap
	Path    string
	Version string
}

// findBootstrapper picks want, or when want is empty mmdebstrap and else debootstrap.
func findBootstrapper(ctx context.Context, want string) (bootstrapper, error) {
	var candidates []string
	switch want {
	case "":
		candidates = []string{Mmdebstrap, Debootstrap}
	case Mmdebstrap, Debootstrap:
		candidates = []string{want}
	default:
		return bootstrapper{}, fmt.Errorf("unknown bootstrap tool %q; use %q or %q", want, Mmdebstrap, Debootstrap)
	}
	for _, name := range candidates {
		p, err := lookTool(name)
		if err != nil {
			continue
		}
		return bootstrapper{Name: name, Path: p, Version: toolVersion(ctx, p, "--version")}, nil
	}
	if want != "" {
		return bootstrapper{}, fmt.Errorf("%s not found; install it (apt-get install %s)", want, want)
	}
	return bootstrapper{}, fmt.Errorf("neither mmdebstrap nor debootstrap found; install one (apt-get install mmdebstrap)")
}

// args returns the command line that bootstraps r into root from mirror. Neither tool is
// given any option that weakens archive signature verification. unshare says that the tool
// runs as root of a user namespace (an unprivileged build): mmdebstrap then uses its unshare
// mode, which makes its own mount and PID namespaces and, having no CAP_MKNOD, leaves /dev
// empty (mmdebstrapDevices are added to the image instead); debootstrap cannot work there.
func (b bootstrapper) args(r Recipe, arch, mirror, root string, unshare bool) ([]string, error) {
	components := r.Components
	if len(components) == 0 {
		components = []string{"main"}
	}
	var args []string
	switch b.Name {
	case Mmdebstrap:
		mode := "--mode=root"
		if unshare {
			mode = "--mode=unshare"
		}
		args = []string{
			mode,
			"--format=directory",
			"--variant=" + r.Variant,
			"--architectures=" + arch,
			"--components=" + strings.Join(components, ","),
		}
	case Debootstrap:
		if unshare {
			return nil, fmt.Errorf("debootstrap needs root; without root banger builds with mmdebstrap (apt-get install mmdebstrap)")
		}
		if _, err := os.Stat(debianKeyring); err != nil {
			return nil, fmt.Errorf("debootstrap needs the Debian archive keyring %s to verify the mirror; install it (apt-get install debian-archive-keyring)", debianKeyring)
		}
		args = []string{
			"--variant=" + r.Variant,
			"--arch=" + arch,
			"--components=" + strings.Join(components, ","),
			"--keyring=" + debianKeyring,
		}
	default:
		return nil, fmt.Errorf("unknown bootstrap tool %q", b.Name)
	}
	if len(r.Packages) > 0 {
		args = append(args, "--include="+strings.Join(r.Packages, ","))
	}
	return append(args, r.Suite, root, mirror), nil
}

// mmdebstrapDevices is /dev as mmdebstrap makes it in a root build (its @devfiles, as of
// mmdebstrap 1.3): an unprivileged build cannot make device nodes, so they are added to the
// image after mkfs, and a user's image holds the same /dev as root's.
var mmdebstrapDevices = []ext4.Node{
	{Path: "/dev/console", Mode: charDev | 0o666, Major: 5, Minor: 1},
	{Path: "/dev/fd", Mode: fs.ModeSymlink | 0o777, Target: "/proc/self/fd"},
	{Path: "/dev/full", Mode: charDev | 0o666, Major: 1, Minor: 7},
	{Path: "/dev/null", Mode: charDev | 0o666, Major: 1, Minor: 3},
	{Path: "/dev/ptmx", Mode: charDev | 0o666, Major: 5, Minor: 2},
	{Path: "/dev/pts", Mode: fs.ModeDir | 0o755},
	{Path: "/dev/random", Mode: charDev | 0o666, Major: 1, Minor: 8},
	{Path: "/dev/shm", Mode: fs.ModeDir | 0o755},
	{Path: "/dev/stderr", Mode: fs.ModeSymlink | 0o777, Target: "/proc/self/fd/2"},
	{Path: "/dev/stdin", Mode: fs.ModeSymlink | 0o777, Target: "/proc/self/fd/0"},
	{Path: "/dev/stdout", Mode: fs.ModeSymlink | 0o777, Target: "/proc/self/fd/1"},
	{Path: "/dev/tty", Mode: charDev | 0o666, Major: 5, Minor: 0},
	{Path: "/dev/urandom", Mode: charDev | 0o666, Major: 1, Minor: 9},
	{Path: "/dev/zero", Mode: charDev | 0o666, Major: 1, Minor: 5},
}

const charDev = fs.ModeDevice | fs.ModeCharDevice
