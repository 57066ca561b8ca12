package image

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"strings"
)

var (
	namePattern    = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,62}$`)
	tokenPattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	packagePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	userPattern    = regexp.MustCompile(`^[a-z_][a-z0-9_-]*\$?$`)
	unitPattern    = regexp.MustCompile(`^[A-Za-z0-9:_.@\\-]+\.(service|socket|target|timer|path|mount|automount|swap|slice|scope|device)$`)
)

// Validate checks a recipe: names and package names are well formed, and every step is
// complete and only touches absolute, clean paths. Errors name the offending step by index.
func (r Recipe) Validate() error {
	name := r.displayName()
	if !namePattern.MatchString(r.Name) {
		return fmt.Errorf("image recipe %s: name must be lower-case letters, digits, '.' and '-'", name)
	}
	if !tokenPattern.MatchString(r.Suite) {
		return fmt.Errorf("image recipe %s: suite %q is not a Debian suite name like \"bookworm\"", name, r.Suite)
	}
	if !tokenPattern.MatchString(r.Variant) {
		return fmt.Errorf("image recipe %s: variant %q is not a bootstrap variant like \"minbase\"", name, r.Variant)
	}
	for _, c := range r.Components {
		if !tokenPattern.MatchString(c) {
			return fmt.Errorf("image recipe %s: component %q is not an archive component like \"main\"", name, c)
		}
	}
	seen := map[string]bool{}
	for _, p := range append(append([]string(nil), r.Packages...), r.Optional...) {
		if !packagePattern.MatchString(p) {
			return fmt.Errorf("image recipe %s: %q is not a Debian package name", name, p)
		}
		if seen[p] {
			return fmt.Errorf("image recipe %s: package %q is listed twice", name, p)
		}
		seen[p] = true
	}
	for i, s := range r.Steps {
		if err := s.validate(); err != nil {
			return fmt.Errorf("image recipe %s: step %d (%s): %w", name, i, s.Kind, err)
		}
	}
	return nil
}

func (s Step) validate() error {
	switch s.Kind {
	case StepWrite, StepRemove, StepSymlink, StepTruncate:
		if err := checkImagePath(s.Path, s.Kind == StepRemove); err != nil {
			return err
		}
	case StepMask:
		if !unitPattern.MatchString(s.Unit) {
			return fmt.Errorf("%q is not a systemd unit name like \"getty@tty1.service\"", s.Unit)
		}
	case StepLockPassword:
		if !userPattern.MatchString(s.User) {
			return fmt.Errorf("%q is not a user name", s.User)
		}
	default:
		return fmt.Errorf("unknown step kind %q; known kinds: %s", s.Kind, kindList())
	}
	if s.Kind == StepSymlink && s.Target == "" {
		return errors.New("a symlink step needs a target")
	}
	if s.Kind != StepSymlink && s.Target != "" {
		return errors.New("only symlink steps take a target")
	}
	if s.Kind != StepWrite && (s.Content != "" || s.Mode != 0) {
		return errors.New("only write steps take content and mode")
	}
	if s.Mode&^(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
		return fmt.Errorf("mode %v may only hold permission bits", s.Mode)
	}
	return nil
}

// checkImagePath accepts absolute, clean paths below "/" without ".." elements. Glob
// metacharacters are allowed in the last element only, and only when glob is set.
func checkImagePath(p string, glob bool) error {
	switch {
	case p == "":
		return errors.New("path is empty")
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("path %q is relative; paths are absolute inside the image, like \"/etc/hosts\"", p)
	case p == "/":
		return errors.New(`path "/" is the image root itself`)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("path %q contains a NUL byte", p)
	}
	for _, elem := range strings.Split(p[1:], "/") {
		if elem == ".." {
			return fmt.Errorf("path %q contains \"..\"; paths must stay inside the image", p)
		}
	}
	if path.Clean(p) != p {
		return fmt.Errorf("path %q is not clean; write it as %q", p, path.Clean(p))
	}
	dir, base := path.Split(p)
	if strings.ContainsAny(dir, `*?[\`) {
		return fmt.Errorf("path %q: only the last element may be a glob", p)
	}
	if strings.ContainsAny(base, `*?[\`) {
		if !glob {
			return fmt.Errorf("path %q: globs are only allowed in remove steps", p)
		}
		if _, err := path.Match(base, ""); err != nil {
			return fmt.Errorf("path %q: bad glob: %v", p, err)
		}
	}
	return nil
}
