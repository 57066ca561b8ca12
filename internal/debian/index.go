package debian

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/ulikunitz/xz"
)

// packages returns the verified, parsed Packages index, fetching it on first use.
func (a *Archive) packages(ctx context.Context) (map[string][]Package, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.index != nil {
		return a.index, nil
	}
	rel, err := a.releaseLocked(ctx)
	if err != nil {
		return nil, err
	}
	dir := a.component() + "/binary-" + a.arch() + "/"
	var errs []error
	tried := 0
	for _, name := range []string{"Packages.xz", "Packages.gz"} {
		want, listed := rel.SHA256[dir+name]
		if !listed {
			continue
		}
		tried++
		index, err := a.fetchIndex(ctx, rel, dir, name, want)
		if err == nil {
			a.index = index
			return index, nil
		}
		errs = append(errs, err)
	}
	if tried == 0 {
		return nil, fmt.Errorf("the %s Release lists no %sPackages.xz or .gz; check Component (%q) and Arch (%q)",
			a.Suite, dir, a.component(), a.arch())
	}
	return nil, errors.Join(errs...)
}

// fetchIndex downloads one compressed Packages file, verifies it against the Release and
// parses it. With Acquire-By-Hash it asks for by-hash/SHA256/<hash> first, which cannot race
// with a mirror update, and falls back to the plain name if the mirror lacks it.
func (a *Archive) fetchIndex(ctx context.Context, rel *Release, dir, name string, want FileHash) (map[string][]Package, error) {
	url := a.distURL(dir + name)
	var data []byte
	var err error
	if rel.AcquireByHash {
		data, err = a.get(ctx, a.distURL(dir+"by-hash/SHA256/"+want.SHA256), want.Size)
		if err != nil && !errors.Is(err, errNotFound) {
			return nil, err
		}
	}
	if data == nil {
		if data, err = a.get(ctx, url, want.Size); err != nil {
			return nil, err
		}
	}
	if err := checkBytes(data, want); err != nil {
		return nil, fmt.Errorf("verify %s against the signed Release (corrupt or tampered index; retry later): %w", url, err)
	}
	var r io.Reader
	switch {
	case strings.HasSuffix(name, ".xz"):
		r, err = xz.NewReader(bytes.NewReader(data))
	default:
		r, err = gzip.NewReader(bytes.NewReader(data))
	}
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %w", url, err)
	}
	index, err := parsePackages(r)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	return index, nil
}

func checkBytes(data []byte, want FileHash) error {
	if int64(len(data)) != want.Size {
		return fmt.Errorf("size %d bytes does not match the signed %d", len(data), want.Size)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != want.SHA256 {
		return fmt.Errorf("sha256 %s does not match the signed %s", got, want.SHA256)
	}
	return nil
}

func parsePackages(r io.Reader) (map[string][]Package, error) {
	index := map[string][]Package{}
	err := readParagraphs(r, func(p paragraph) error {
		name := p.get("Package")
		if name == "" {
			return nil
		}
		size, _ := strconv.ParseInt(p.get("Size"), 10, 64)
		index[name] = append(index[name], Package{
			Name:         name,
			Version:      p.get("Version"),
			Architecture: p.get("Architecture"),
			Depends:      p.get("Depends"),
			Filename:     p.get("Filename"),
			Size:         size,
			SHA256:       strings.ToLower(p.get("SHA256")),
		})
		return nil
	})
	return index, err
}
