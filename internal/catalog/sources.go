package catalog

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/banger-dev/banger/internal/catalog/catalogfile"
	"github.com/banger-dev/banger/internal/debian"
	"github.com/banger-dev/banger/internal/failure"
)

// sources is what images and kernels share: where they come from — the catalog files and
// the remote bundles their entries pin (remote.go) — and the options both use (store,
// layout, config, log, downloads).
type sources struct {
	o Options
}

func (s *sources) mirror() string {
	if cfg, err := s.o.Config(); err == nil && cfg.DebianMirror != "" {
		return cfg.DebianMirror
	}
	return debian.DefaultMirror("/")
}

// catalog returns the built-in catalog merged with the user's catalog files.
func (s *sources) catalog() (catalogfile.Catalog, error) {
	c, err := catalogfile.Load(s.o.Layout.ConfigDir)
	if err != nil {
		return catalogfile.Catalog{}, failure.Default(failure.Invalid, err)
	}
	return c, nil
}

// removeLeftovers removes what interrupted pulls, builds and imports left in dir and in the
// directories in it (an image's versions being made, a kernel's initramfs and module disk):
// the hidden staging names both kinds of artifact are made under.
func (s *sources) removeLeftovers(dir string) {
	isLeftover := func(n string) bool {
		if !strings.HasPrefix(n, ".") {
			return false
		}
		for _, mark := range []string{".pull-", ".build-", ".old-", ".staging-", ".import", ".register-", ".tmp-", ".initrd-"} {
			if strings.Contains(n, mark) {
				return true
			}
		}
		return false
	}
	remove := func(dir string) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if isLeftover(e.Name()) {
				s.o.Log.Info("removing leftover of an interrupted pull or build", "path", filepath.Join(dir, e.Name()))
				_ = os.RemoveAll(filepath.Join(dir, e.Name()))
			}
		}
	}
	remove(dir)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			remove(filepath.Join(dir, e.Name()))
		}
	}
}
