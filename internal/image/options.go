package image

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/banger-dev/banger/internal/progress"
)

// BuildOptions says what to build and where.
type BuildOptions struct {
	Recipe Recipe
	// Name of the image; the recipe's name when empty.
	Name string
	// Mirror is the Debian archive to bootstrap from, e.g. "http://deb.debian.org/debian".
	Mirror string
	// Dest is the image directory to create. It must not exist; its parent must.
	Dest string
	// WorkDir holds the bootstrap tree while it is built (a few hundred MB) and the build log.
	// It must exist. Put it on a local filesystem with room to spare.
	WorkDir string
	// Bootstrapper forces Mmdebstrap or Debootstrap; empty picks mmdebstrap when installed.
	Bootstrapper string
	// Progress receives the stages; may be nil.
	Progress progress.Func
}

// check validates the options and makes Dest and WorkDir absolute.
func (o *BuildOptions) check() error {
	if !namePattern.MatchString(o.Name) {
		return fmt.Errorf("name %q must be lower-case letters, digits, '.' and '-'", o.Name)
	}
	if err := o.Recipe.Validate(); err != nil {
		return err
	}
	u, err := url.Parse(o.Mirror)
	if err != nil || !(((u.Scheme == "http" || u.Scheme == "https") && u.Host != "") || (u.Scheme == "file" && u.Path != "")) {
		return fmt.Errorf("mirror %q is not an http(s) or file URL like \"http://deb.debian.org/debian\"", o.Mirror)
	}
	if o.Dest == "" {
		return errors.New("no destination directory given")
	}
	if o.Dest, err = filepath.Abs(o.Dest); err != nil {
		return err
	}
	if _, err := os.Lstat(o.Dest); err == nil {
		return fmt.Errorf("image directory %s already exists; remove it or choose another name", o.Dest)
	}
	if fi, err := os.Stat(filepath.Dir(o.Dest)); err != nil || !fi.IsDir() {
		return fmt.Errorf("parent of image directory %s does not exist; create it first", o.Dest)
	}
	if o.WorkDir == "" {
		return errors.New("no work directory given")
	}
	if o.WorkDir, err = filepath.Abs(o.WorkDir); err != nil {
		return err
	}
	if fi, err := os.Stat(o.WorkDir); err != nil || !fi.IsDir() {
		return fmt.Errorf("work directory %s does not exist; create it first", o.WorkDir)
	}
	return nil
}
