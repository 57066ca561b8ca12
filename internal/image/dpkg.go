package image

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Package is one Debian package installed in an image.
type Package struct {
	Name         string `json:"name"`
	Version      string `json:"version"`
	Architecture string `json:"architecture,omitempty"`
}

// parseDpkgStatus reads a dpkg status file (<root>/var/lib/dpkg/status) and returns the
// packages whose status is "installed", sorted by name. Packages that are only half
// installed or have just their config files left are skipped.
func parseDpkgStatus(r io.Reader) ([]Package, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024) // Description fields can be long
	var pkgs []Package
	var cur Package
	var status string
	flush := func() {
		if cur.Name != "" && cur.Version != "" && isInstalled(status) {
			pkgs = append(pkgs, cur)
		}
		cur, status = Package{}, ""
	}
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			flush()
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // continuation of a multi-line field
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch key {
		case "Package":
			cur.Name = value
		case "Version":
			cur.Version = value
		case "Architecture":
			cur.Architecture = value
		case "Status":
			status = value
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read dpkg status: %w", err)
	}
	flush()
	sort.Slice(pkgs, func(i, j int) bool {
		if pkgs[i].Name != pkgs[j].Name {
			return pkgs[i].Name < pkgs[j].Name
		}
		return pkgs[i].Architecture < pkgs[j].Architecture
	})
	return pkgs, nil
}

// isInstalled reports whether a dpkg Status value ("want flag status") says installed.
func isInstalled(status string) bool {
	f := strings.Fields(status)
	return len(f) == 3 && f[2] == "installed"
}

// installedPackages reads the dpkg database of the tree.
func installedPackages(tree string) ([]Package, error) {
	p := filepath.Join(tree, "var/lib/dpkg/status")
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("read installed packages: %w", err)
	}
	defer f.Close()
	pkgs, err := parseDpkgStatus(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return pkgs, nil
}

// checkInstalled makes sure every package the recipe asked for ended up installed.
func checkInstalled(want []string, have []Package) error {
	installed := map[string]bool{}
	for _, p := range have {
		installed[p.Name] = true
	}
	var missing []string
	for _, name := range want {
		if !installed[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("recipe packages not installed after bootstrap: %s", strings.Join(missing, ", "))
	}
	return nil
}
