package image

import (
	"context"
	"fmt"
	"os"
	"strings"
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
// given any option that weakens archive signature verification.
func (b bootstrapper) args(r Recipe, arch, mirror, root string) ([]string, error) {
	components := r.Components
	if len(components) == 0 {
		components = []string{"main"}
	}
	var args []string
	switch b.Name {
	case Mmdebstrap:
		args = []string{
			"--mode=root",
			"--format=directory",
			"--variant=" + r.Variant,
			"--architectures=" + arch,
			"--components=" + strings.Join(components, ","),
		}
	case Debootstrap:
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
