package guestinit

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ModuleList is the file, in the initramfs's module directory, that lists the modules to load
// in order (paths relative to that directory, one per line). The host writes it when it builds
// the initramfs, from the modules' own dependency information.
const ModuleList = "banger.modules"

// LoadModules loads every module listed in dir/banger.modules, in order. A module that is
// already loaded is fine. It returns how many modules it loaded.
func LoadModules(dir string) (int, error) {
	f, err := os.Open(filepath.Join(dir, ModuleList))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil // a kernel with everything built in
	}
	if err != nil {
		return 0, fmt.Errorf("read module list: %w", err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rel := strings.TrimSpace(sc.Text())
		if rel == "" || strings.HasPrefix(rel, "#") {
			continue
		}
		if err := loadModule(filepath.Join(dir, rel)); err != nil {
			return n, err
		}
		n++
	}
	return n, sc.Err()
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load module: %w", err)
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if err == unix.ENOSYS {
		var b []byte
		if b, err = os.ReadFile(path); err == nil {
			err = unix.InitModule(b, "")
		}
	}
	if err != nil && err != unix.EEXIST {
		return fmt.Errorf("load module %s: %w", filepath.Base(path), err)
	}
	return nil
}
