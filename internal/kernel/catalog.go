package kernel

// Entry is a guest kernel banger knows how to pull from a Debian archive. The list of known
// kernels is the catalog's (package catalog); this is one entry's Debian side.
type Entry struct {
	Name    string // banger's name for it, e.g. "debian-6.1"
	Suite   string // Debian suite (codename) to take it from
	Package string // package to resolve; a metapackage is followed to the kernel it pins
}
