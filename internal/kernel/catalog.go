package kernel

import (
	"fmt"
	"sort"
	"strings"
)

// Entry is a guest kernel banger knows how to pull: a Debian kernel package.
type Entry struct {
	Name    string // banger's name for it, e.g. "debian-6.1"
	Suite   string // Debian suite (codename) to take it from
	Package string // package to resolve; a metapackage is followed to the kernel it pins
}

// catalog is the list of known kernels. Adding a kernel is adding a line.
var catalog = []Entry{
	{Name: "debian-6.1", Suite: "bookworm", Package: "linux-image-cloud-amd64"},
}

// Catalog returns the known kernels, sorted by name.
func Catalog() []Entry {
	out := append([]Entry(nil), catalog...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Lookup returns the catalog entry with the given name.
func Lookup(name string) (Entry, error) {
	var names []string
	for _, e := range Catalog() {
		if e.Name == name {
			return e, nil
		}
		names = append(names, e.Name)
	}
	return Entry{}, fmt.Errorf("unknown kernel %q; known kernels: %s", name, strings.Join(names, ", "))
}
