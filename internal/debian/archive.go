package debian

import (
	"github.com/banger-dev/banger/internal/download"

	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Archive is one suite, component and architecture of a Debian archive mirror. Everything it
// returns has been verified through the archive's signed chain: InRelease signature → Release
// SHA256 list → Packages index → package SHA256. The zero values of Component, Arch, Keyring,
// Client and Now select "main", "amd64", DefaultKeyring, a download.Client with its default
// timeouts, and time.Now. Every download is bounded by the size the signed chain declares
// for it.
//
// An Archive fetches the Release and the Packages index once and keeps them for its lifetime;
// create a new Archive to see a newer archive state. It is safe for concurrent use.
type Archive struct {
	Mirror    string // e.g. "http://deb.debian.org/debian"
	Suite     string // codename such as "bookworm" (the Release must name it)
	Component string
	Arch      string
	Keyring   *Keyring
	Client    *download.Client
	CacheDir  string // where Download keeps verified packages, named by SHA-256
	Now       func() time.Time
	// History, when set, protects against rollback: a Release dated before the newest one
	// accepted from this mirror and suite is refused with ErrRollback, and each accepted
	// Release's Date is recorded.
	History ReleaseHistory

	mu      sync.Mutex
	release *Release
	index   map[string][]Package // package name → every version the index lists
}

// Package is one stanza of a Packages index, reduced to what is needed to fetch it.
type Package struct {
	Name         string
	Version      string
	Architecture string
	Depends      string // raw Depends field, continuation lines joined with "\n"
	Filename     string // path of the .deb relative to the mirror root ("pool/main/…")
	Size         int64
	SHA256       string
}

// maxMetadataSize bounds InRelease downloads; Debian's are ~150 KB.
const maxMetadataSize = 32 << 20

func (a *Archive) component() string {
	if a.Component == "" {
		return "main"
	}
	return a.Component
}

func (a *Archive) arch() string {
	if a.Arch == "" {
		return "amd64"
	}
	return a.Arch
}

func (a *Archive) client() *download.Client {
	if a.Client == nil {
		return &download.Client{}
	}
	return a.Client
}

func (a *Archive) now() time.Time {
	if a.Now == nil {
		return time.Now()
	}
	return a.Now()
}

func (a *Archive) distURL(path string) string {
	return strings.TrimRight(a.Mirror, "/") + "/dists/" + a.Suite + "/" + path
}

// Release fetches dists/<suite>/InRelease, verifies its signature against the keyring and
// returns the parsed Release. It fails if the Release has expired or names another suite.
func (a *Archive) Release(ctx context.Context) (*Release, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.releaseLocked(ctx)
}

func (a *Archive) releaseLocked(ctx context.Context) (*Release, error) {
	if a.release != nil {
		return a.release, nil
	}
	if a.Mirror == "" || a.Suite == "" {
		return nil, errors.New("debian archive: Mirror and Suite must be set")
	}
	keyring := a.Keyring
	if keyring == nil {
		k, err := DefaultKeyring()
		if err != nil {
			return nil, err
		}
		keyring = k
	}
	url := a.distURL("InRelease")
	data, err := a.get(ctx, url, maxMetadataSize)
	if err != nil {
		return nil, err
	}
	rel, err := VerifyInRelease(data, keyring, a.now())
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", url, err)
	}
	if rel.Suite != a.Suite && rel.Codename != a.Suite {
		return nil, fmt.Errorf("verify %s: signed Release is for suite %q (codename %q), not %q; the mirror may be misconfigured or replaying another suite",
			url, rel.Suite, rel.Codename, a.Suite)
	}
	if err := a.checkRollback(ctx, url, rel); err != nil {
		return nil, err
	}
	a.release = rel
	return rel, nil
}

// ReleaseHistory remembers, per mirror and suite, the Date of the newest Release accepted,
// so that an older one — validly signed but replayed by a stale or hostile mirror — is
// refused. Implementations must be safe for concurrent use.
type ReleaseHistory interface {
	// NewestDebianRelease returns the Date recorded for mirror and suite; ok is false when
	// none is.
	NewestDebianRelease(ctx context.Context, mirror, suite string) (date time.Time, ok bool, err error)
	// RecordDebianRelease records date for mirror and suite unless a later one is recorded.
	RecordDebianRelease(ctx context.Context, mirror, suite string, date time.Time) error
}

// ErrRollback is matched by the error for a Release older than one accepted before from the
// same mirror and suite.
var ErrRollback = errors.New("the mirror serves an older Release than it did before")

// checkRollback refuses rel if History has a newer Release for this mirror and suite, and
// records rel's Date otherwise.
func (a *Archive) checkRollback(ctx context.Context, url string, rel *Release) error {
	if a.History == nil {
		return nil
	}
	mirror := strings.TrimRight(a.Mirror, "/")
	newest, ok, err := a.History.NewestDebianRelease(ctx, mirror, a.Suite)
	if err != nil {
		return fmt.Errorf("verify %s: read the newest Release accepted before: %w", url, err)
	}
	if ok && rel.Date.Before(newest) {
		return fmt.Errorf("verify %s: %w: the signed Release is dated %s, but one dated %s was accepted from this mirror before; "+
			"the mirror is stale or replaying old metadata: wait for it to catch up or use another mirror",
			url, ErrRollback, rel.Date.UTC().Format(time.RFC3339), newest.UTC().Format(time.RFC3339))
	}
	if err := a.History.RecordDebianRelease(ctx, mirror, a.Suite, rel.Date); err != nil {
		return fmt.Errorf("verify %s: record the Release's date: %w", url, err)
	}
	return nil
}

// ErrNoPackage is matched by the error of Resolve for a package the archive does not have.
var ErrNoPackage = errors.New("no such package")

// Resolve returns the newest version of the named package in the archive's Packages index.
func (a *Archive) Resolve(ctx context.Context, name string) (Package, error) {
	index, err := a.packages(ctx)
	if err != nil {
		return Package{}, err
	}
	versions := index[name]
	if len(versions) == 0 {
		return Package{}, fmt.Errorf("package %q not found in %s %s/%s/binary-%s: %w", name, a.Mirror, a.Suite, a.component(), a.arch(), ErrNoPackage)
	}
	best := versions[0]
	for _, p := range versions[1:] {
		if CompareVersions(p.Version, best.Version) > 0 {
			best = p
		}
	}
	return best, nil
}

// maxMetaHops bounds how many metapackage pins ResolveMetapackage follows.
const maxMetaHops = 4

// ResolveMetapackage resolves name and, while the package's Depends is exactly one dependency
// pinned with "(= version)" — how Debian's kernel metapackages point at the current kernel
// (linux-image-cloud-amd64 → linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)) — follows it to
// that exact version. A package that is not such a metapackage is returned as is.
func (a *Archive) ResolveMetapackage(ctx context.Context, name string) (Package, error) {
	pkg, err := a.Resolve(ctx, name)
	if err != nil {
		return Package{}, err
	}
	for range maxMetaHops {
		dep, version, ok := exactPin(pkg.Depends)
		if !ok {
			return pkg, nil
		}
		index, err := a.packages(ctx)
		if err != nil {
			return Package{}, err
		}
		found := false
		for _, p := range index[dep] {
			if p.Version == version {
				pkg, found = p, true
				break
			}
		}
		if !found {
			return Package{}, fmt.Errorf("%s depends on %s (= %s), which the index does not list; the mirror may be mid-update, retry later",
				pkg.Name, dep, version)
		}
	}
	return Package{}, fmt.Errorf("%s: more than %d chained metapackages; refusing to follow further", name, maxMetaHops)
}

// exactPin reports whether a Depends field is a single "name (= version)" relation.
func exactPin(depends string) (name, version string, ok bool) {
	dep := strings.Join(strings.Fields(depends), " ")
	if dep == "" || strings.ContainsAny(dep, ",|") {
		return "", "", false
	}
	open := strings.IndexByte(dep, '(')
	if open < 0 || !strings.HasSuffix(dep, ")") {
		return "", "", false
	}
	name, _, _ = strings.Cut(strings.TrimSpace(dep[:open]), ":") // drop an arch qualifier
	rel := strings.TrimSpace(dep[open+1 : len(dep)-1])
	op, version, _ := strings.Cut(rel, " ")
	if op != "=" {
		if !strings.HasPrefix(rel, "=") || strings.HasPrefix(rel, "==") {
			return "", "", false
		}
		version = rel[1:]
	}
	version = strings.TrimSpace(version)
	if name == "" || version == "" || strings.Contains(version, " ") {
		return "", "", false
	}
	return name, version, true
}
