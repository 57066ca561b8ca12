// Package catalogfile owns the catalog's files: the format of the list of images and kernels
// that can be had by name, its built-in copy (embedded) and the user's catalog files that add
// to or override it, read, validated and merged. It only reads; fetching and building what an
// entry names is package catalog's. It is a package of its own so that `banger doctor` can
// say what the default image and kernel are without linking the daemon's side.
package catalogfile

import (
	"bytes"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/banger-dev/banger/internal/download"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/kernel"
)

// builtinCatalog lists the images and kernels banger knows out of the box.
//
//go:embed catalog.json
var builtinCatalog []byte

// Dir is the directory, inside banger's config directory, whose *.json files add to or
// override the built-in catalog, in file name order.
const Dir = "catalogs"

// Catalog is the list of images and kernels that can be had by name.
type Catalog struct {
	Images  []ImageEntry  `json:"images"`
	Kernels []KernelEntry `json:"kernels"`
}

// ImageEntry is an image that can be had by name: exactly one of Recipe (built here from
// Debian packages), OCI (pulled from a registry) or Bundle (downloaded, pinned by sha256).
type ImageEntry struct {
	Name        string        `json:"name"`
	Description string        `json:"description,omitempty"`
	Recipe      string        `json:"recipe,omitempty"`
	OCI         string        `json:"oci,omitempty"`
	Bundle      *RemoteBundle `json:"bundle,omitempty"`
	Kernel      string        `json:"kernel,omitempty"` // the kernel its VMs boot by default
	From        string        `json:"from"`             // "builtin" or the catalog file
	Kind        string        `json:"kind"`             // "recipe", "oci" or "bundle"
}

// KernelEntry is a kernel that can be had by name: exactly one of Debian (a package of a
// Debian suite) or Bundle.
type KernelEntry struct {
	Name        string        `json:"name"`
	Description string        `json:"description,omitempty"`
	Debian      *DebianKernel `json:"debian,omitempty"`
	Bundle      *RemoteBundle `json:"bundle,omitempty"`
	From        string        `json:"from"`
	Kind        string        `json:"kind"` // "debian" or "bundle"
}

// DebianKernel is a kernel package of a Debian suite (a metapackage is followed).
type DebianKernel struct {
	Suite   string `json:"suite"`
	Package string `json:"package"`
}

// RemoteBundle is a bundle file to download, pinned by the sha256 of the whole file and
// optionally signed: Signature is the base64 ed25519 signature of the pinned sha256 (its 64
// hex digits) by the key <config dir>/keys/<Key>.pub.
type RemoteBundle struct {
	URL    string `json:"url"`
	SHA256 string `json:"sha256"`
	// Size is the bundle's size in bytes; a download is cut off past it (past
	// download.MaxSize when it is 0) and must end exactly at it.
	Size      int64  `json:"size,omitempty"`
	Signature string `json:"signature,omitempty"`
	Key       string `json:"key,omitempty"`
}

var entryName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,62}$`)

// ValidName reports whether name can name an image, a kernel or a signing key: lower-case
// letters, digits, '.' and '-', starting with a letter or digit, at most 63 bytes.
func ValidName(name string) bool { return entryName.MatchString(name) }

// parseCatalog reads one catalog file (from names it in errors and entries).
func parseCatalog(data []byte, from string) (Catalog, error) {
	var c Catalog
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Catalog{}, fmt.Errorf("catalog %s: %w", from, err)
	}
	for i := range c.Images {
		e := &c.Images[i]
		e.From = from
		if err := e.validate(); err != nil {
			return Catalog{}, fmt.Errorf("catalog %s: image %q: %w", from, e.Name, err)
		}
	}
	for i := range c.Kernels {
		e := &c.Kernels[i]
		e.From = from
		if err := e.validate(); err != nil {
			return Catalog{}, fmt.Errorf("catalog %s: kernel %q: %w", from, e.Name, err)
		}
	}
	return c, nil
}

func (e *ImageEntry) validate() error {
	if !entryName.MatchString(e.Name) {
		return errors.New("name must be lower-case letters, digits, '.' and '-'")
	}
	n := 0
	if e.Recipe != "" {
		n++
		e.Kind = image.SourceRecipe
		if _, err := image.BuiltinRecipe(e.Recipe); err != nil {
			return err
		}
	}
	if e.OCI != "" {
		n++
		e.Kind = image.SourceOCI
	}
	if e.Bundle != nil {
		n++
		e.Kind = image.SourceBundle
		if err := e.Bundle.validate(); err != nil {
			return err
		}
	}
	if n != 1 {
		return errors.New(`needs exactly one of "recipe", "oci" or "bundle"`)
	}
	if e.Kernel != "" && !entryName.MatchString(e.Kernel) {
		return fmt.Errorf("kernel %q is not a kernel name", e.Kernel)
	}
	return nil
}

func (e *KernelEntry) validate() error {
	if !entryName.MatchString(e.Name) {
		return errors.New("name must be lower-case letters, digits, '.' and '-'")
	}
	switch {
	case e.Debian != nil && e.Bundle == nil:
		e.Kind = kernel.SourceDebian
		if e.Debian.Suite == "" || e.Debian.Package == "" {
			return errors.New(`"debian" needs a suite and a package`)
		}
	case e.Bundle != nil && e.Debian == nil:
		e.Kind = kernel.SourceBundle
		return e.Bundle.validate()
	default:
		return errors.New(`needs exactly one of "debian" or "bundle"`)
	}
	return nil
}

func (b *RemoteBundle) validate() error {
	u, err := url.Parse(b.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http" && u.Scheme != "file") {
		return fmt.Errorf("bundle url %q is not an http(s) or file URL", b.URL)
	}
	if _, err := hex.DecodeString(b.SHA256); err != nil || len(b.SHA256) != 64 {
		return fmt.Errorf("bundle sha256 %q is not 64 hex digits; a remote bundle must be pinned", b.SHA256)
	}
	if b.Size < 0 || b.Size > download.MaxSize {
		return fmt.Errorf("bundle size %d is not between 0 (unknown) and %d", b.Size, download.MaxSize)
	}
	if (b.Signature == "") != (b.Key == "") {
		return errors.New(`a bundle signature needs both "signature" and "key"`)
	}
	return nil
}

// Load merges the built-in catalog with the user's catalog files (configDir/catalogs/*.json):
// a user entry replaces a built-in (or earlier) one of the same name. A file that cannot be
// read or parsed, or holds an invalid entry, fails the whole load with an error naming it.
func Load(configDir string) (Catalog, error) {
	c, err := parseCatalog(builtinCatalog, "builtin")
	if err != nil {
		return Catalog{}, err // a broken binary; the tests catch it
	}
	files, _ := filepath.Glob(filepath.Join(configDir, Dir, "*.json"))
	sort.Strings(files)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return Catalog{}, fmt.Errorf("catalog %s: %w", f, err)
		}
		user, err := parseCatalog(data, f)
		if err != nil {
			return Catalog{}, err
		}
		for _, e := range user.Images {
			c.Images = replaceOrAdd(c.Images, e, func(x ImageEntry) string { return x.Name })
		}
		for _, e := range user.Kernels {
			c.Kernels = replaceOrAdd(c.Kernels, e, func(x KernelEntry) string { return x.Name })
		}
	}
	sort.Slice(c.Images, func(i, j int) bool { return c.Images[i].Name < c.Images[j].Name })
	sort.Slice(c.Kernels, func(i, j int) bool { return c.Kernels[i].Name < c.Kernels[j].Name })
	return c, nil
}

func replaceOrAdd[T any](list []T, e T, name func(T) string) []T {
	for i := range list {
		if name(list[i]) == name(e) {
			list[i] = e
			return list
		}
	}
	return append(list, e)
}

// Image returns the catalog entry called name.
func (c Catalog) Image(name string) (ImageEntry, bool) {
	for _, e := range c.Images {
		if e.Name == name {
			return e, true
		}
	}
	return ImageEntry{}, false
}

// Kernel returns the catalog entry called name.
func (c Catalog) Kernel(name string) (KernelEntry, bool) {
	for _, e := range c.Kernels {
		if e.Name == name {
			return e, true
		}
	}
	return KernelEntry{}, false
}

// ImageNames lists the names of its images, comma-separated, for error messages.
func (c Catalog) ImageNames() string {
	var names []string
	for _, e := range c.Images {
		names = append(names, e.Name)
	}
	return strings.Join(names, ", ")
}

// KernelNames lists the names of its kernels, comma-separated, for error messages.
func (c Catalog) KernelNames() string {
	var names []string
	for _, e := range c.Kernels {
		names = append(names, e.Name)
	}
	return strings.Join(names, ", ")
}
