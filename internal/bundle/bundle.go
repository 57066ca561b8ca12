// Package bundle owns banger's bundle files: a zstd-compressed tar whose first member,
// manifest.json, names what the bundle holds (an image or a kernel), for which architecture,
// and the size and sha256 of every other member. Writing a bundle checks the members against
// what the caller says they are; reading one refuses anything the manifest does not vouch
// for — an unknown, missing, duplicated, resized or altered member — before the caller
// publishes a byte of it.
//
// A bundle proves its own integrity, not where it came from: pin the bundle's sha256 (as
// catalog entries do) to trust it.
package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/banger-dev/banger/internal/progress"
	"github.com/banger-dev/banger/internal/sparse"
)

// ManifestName is the first member of every bundle.
const ManifestName = "manifest.json"

// Format is the bundle layout version this banger writes and reads.
const Format = 1

// Kinds of bundles.
const (
	KindImage  = "image"
	KindKernel = "kernel"
)

// Bounds of the zstd decoder: a frame may declare a window of up to 3.75 TB, which the
// decoder would allocate before decoding a byte; banger writes bundles with windows of a few
// MiB (zstd's -19 uses 8 MiB), so a larger one is refused as hostile.
const (
	zstdMaxWindow = 32 << 20
	zstdMaxMemory = 64 << 20
)

// maxManifest bounds manifest.json, which is read into memory.
const maxManifest = 1 << 20

// Manifest describes a bundle.
type Manifest struct {
	Format  int       `json:"format"`
	Kind    string    `json:"kind"`
	Name    string    `json:"name"`
	Arch    string    `json:"arch"`              // Debian architecture name, e.g. "amd64"
	Kernel  string    `json:"kernel,omitempty"`  // an image's default kernel
	Release string    `json:"release,omitempty"` // a kernel's release
	Created time.Time `json:"created"`
	Members []Member  `json:"members"` // every other member, in the order they are stored
}

// Member is one file of a bundle.
type Member struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Member returns the member called name.
func (m Manifest) Member(name string) (Member, bool) {
	for _, mb := range m.Members {
		if mb.Name == name {
			return mb, true
		}
	}
	return Member{}, false
}

// kindNoun names each kind of bundle in messages.
var kindNoun = map[string]string{KindImage: "an image", KindKernel: "a kernel"}

// CheckFor refuses a bundle that is not of kind or not for arch (a Debian architecture name).
func (m Manifest) CheckFor(kind, arch string) error {
	if m.Kind != kind {
		return fmt.Errorf("the bundle holds a %s, not %s", m.Kind, kindNoun[kind])
	}
	if m.Arch != arch {
		return fmt.Errorf("the bundle's %s is for %s; this host runs %s guests", kind, m.Arch, arch)
	}
	return nil
}

// CheckMembers refuses a bundle holding a member other than names.
func (m Manifest) CheckMembers(names ...string) error {
	for _, mb := range m.Members {
		if !slices.Contains(names, mb.Name) {
			return fmt.Errorf("the bundle holds %q, which %s bundles do not have", mb.Name, m.Kind)
		}
	}
	return nil
}

var memberName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Validate checks the manifest's own consistency.
func (m Manifest) Validate() error {
	switch {
	case m.Format != Format:
		return fmt.Errorf("bundle format %d; this banger reads format %d", m.Format, Format)
	case m.Kind != KindImage && m.Kind != KindKernel:
		return fmt.Errorf("bundle kind %q is neither %q nor %q", m.Kind, KindImage, KindKernel)
	case m.Name == "" || m.Arch == "":
		return errors.New("bundle manifest lacks a name or an architecture")
	case len(m.Members) == 0:
		return errors.New("bundle manifest lists no members")
	}
	seen := map[string]bool{ManifestName: true}
	for _, mb := range m.Members {
		if !memberName.MatchString(mb.Name) || seen[mb.Name] {
			return fmt.Errorf("bundle manifest lists an invalid or duplicate member %q", mb.Name)
		}
		seen[mb.Name] = true
		if mb.Size < 0 || len(mb.SHA256) != 64 || !isHex(mb.SHA256) {
			return fmt.Errorf("bundle manifest: member %s has an invalid size or sha256", mb.Name)
		}
	}
	return nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// File is a member to write: its data is read from Path. Size and SHA256, when set, are what
// the caller knows the file to be (an image's manifest records them); they are checked while
// writing, and computed first when not set.
type File struct {
	Name   string
	Path   string
	Size   int64
	SHA256 string
}

// Result describes a written bundle file.
type Result struct {
	Path     string   `json:"path"`
	Size     int64    `json:"size"`
	SHA256   string   `json:"sha256"`
	Manifest Manifest `json:"manifest"`
}

// StageWrite is the progress stage of Write; Done/Total count member bytes.
const StageWrite = "bundle.write"

// Write writes a bundle of files described by m (its Members are filled in) to path, through
// a temporary file renamed into place at the end.
func Write(ctx context.Context, path string, m Manifest, files []File, report progress.Func) (Result, error) {
	m.Format, m.Members = Format, nil
	var total int64
	for i, f := range files {
		if f.SHA256 == "" {
			sum, size, err := hashFile(ctx, f.Path)
			if err != nil {
				return Result{}, err
			}
			files[i].SHA256, files[i].Size = sum, size
		}
		m.Members = append(m.Members, Member{Name: f.Name, Size: files[i].Size, SHA256: files[i].SHA256})
		total += files[i].Size
	}
	if m.Created.IsZero() {
		m.Created = time.Now().UTC().Truncate(time.Second)
	}
	if err := m.Validate(); err != nil {
		return Result{}, err
	}
	manifest, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Result{}, err
	}

	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return Result{}, fmt.Errorf("create %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h := sha256.New()
	counted := &counter{w: io.MultiWriter(tmp, h)}
	zw, err := zstd.NewWriter(counted, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(runtime.NumCPU()))
	if err != nil {
		tmp.Close()
		return Result{}, err
	}
	tw := tar.NewWriter(zw)
	err = writeMember(tw, ManifestName, int64(len(manifest)), m.Created, bytes.NewReader(manifest))
	var done int64
	for i := 0; err == nil && i < len(files); i++ {
		err = copyMember(ctx, tw, files[i], m.Created, func(n int64) {
			report.Report(progress.Update{Stage: StageWrite, Message: "writing " + files[i].Name, Done: done + n, Total: total})
		})
		done += files[i].Size
	}
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Result{}, fmt.Errorf("write bundle %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return Result{}, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return Result{}, fmt.Errorf("write bundle %s: %w", path, err)
	}
	return Result{Path: path, Size: counted.n, SHA256: hex.EncodeToString(h.Sum(nil)), Manifest: m}, nil
}

func writeMember(tw *tar.Writer, name string, size int64, mtime time.Time, r io.Reader) error {
	hdr := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: mtime, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := io.Copy(tw, r)
	return err
}

// copyMember writes one file, checking that it is what the manifest says.
func copyMember(ctx context.Context, tw *tar.Writer, f File, mtime time.Time, report func(int64)) error {
	in, err := os.Open(f.Path)
	if err != nil {
		return err
	}
	defer in.Close()
	h := sha256.New()
	r := io.TeeReader(&ctxReader{ctx: ctx, r: in, report: report}, h)
	if err := writeMember(tw, f.Name, f.Size, mtime, io.LimitReader(r, f.Size)); err != nil {
		return fmt.Errorf("%s: %w (did it change while being exported?)", f.Name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		return fmt.Errorf("%s has sha256 %s, but it should be %s; it changed or is damaged", f.Path, got, f.SHA256)
	}
	return nil
}

// Read reads a bundle from r into dir (an existing, empty directory): the manifest first,
// given to check (which may refuse it, e.g. for its kind or architecture), then every member
// into dir/<name>, sparse where it is zeros. It fails, naming the member, unless every member
// is exactly what the manifest says and nothing else is in the bundle; dir then holds partial
// files the caller removes.
func Read(ctx context.Context, r io.Reader, dir string, check func(Manifest) error, report progress.Func) (Manifest, error) {
	zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(2),
		zstd.WithDecoderMaxWindow(zstdMaxWindow), zstd.WithDecoderMaxMemory(zstdMaxMemory))
	if err != nil {
		return Manifest{}, fmt.Errorf("not a bundle (zstd): %w", err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	hdr, err := tr.Next()
	if err != nil {
		return Manifest{}, fmt.Errorf("not a bundle: %w", err)
	}
	if hdr.Name != ManifestName || hdr.Typeflag != tar.TypeReg || hdr.Size > maxManifest {
		return Manifest{}, fmt.Errorf("not a bundle: the first member is %q, not %s", hdr.Name, ManifestName)
	}
	data, err := io.ReadAll(io.LimitReader(tr, maxManifest))
	if err != nil {
		return Manifest{}, fmt.Errorf("bundle: read %s: %w", ManifestName, err)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("bundle: %s is not valid: %w", ManifestName, err)
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, fmt.Errorf("bundle: %w", err)
	}
	if check != nil {
		if err := check(m); err != nil {
			return m, err
		}
	}
	var total int64
	for _, mb := range m.Members {
		total += mb.Size
	}
	seen := map[string]bool{}
	var done int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return m, fmt.Errorf("bundle is damaged: %w", err)
		}
		mb, ok := m.Member(hdr.Name)
		switch {
		case !ok:
			return m, fmt.Errorf("bundle holds %q, which its manifest does not list; refusing it", hdr.Name)
		case seen[hdr.Name]:
			return m, fmt.Errorf("bundle holds %q twice; refusing it", hdr.Name)
		case hdr.Typeflag != tar.TypeReg:
			return m, fmt.Errorf("bundle member %q is not a regular file; refusing it", hdr.Name)
		case hdr.Size != mb.Size:
			return m, fmt.Errorf("bundle member %s is %d bytes, its manifest says %d; the bundle was altered or is damaged", mb.Name, hdr.Size, mb.Size)
		}
		seen[hdr.Name] = true
		sum, err := extractMember(ctx, tr, filepath.Join(dir, mb.Name), mb.Size, func(n int64) {
			report.Report(progress.Update{Stage: StageRead, Message: "verifying " + mb.Name, Done: done + n, Total: total})
		})
		if err != nil {
			return m, fmt.Errorf("bundle member %s: %w", mb.Name, err)
		}
		if sum != mb.SHA256 {
			return m, fmt.Errorf("bundle member %s has sha256 %s, its manifest says %s; the bundle was altered or is damaged, refusing it", mb.Name, sum, mb.SHA256)
		}
		done += mb.Size
	}
	for _, mb := range m.Members {
		if !seen[mb.Name] {
			return m, fmt.Errorf("bundle lacks %s, which its manifest lists; it is truncated or was altered", mb.Name)
		}
	}
	return m, nil
}

// StageRead is the progress stage of Read; Done/Total count member bytes.
const StageRead = "bundle.read"

// extractMember writes size bytes from r to a new file at p, leaving holes for zero blocks,
// and returns their sha256.
func extractMember(ctx context.Context, r io.Reader, p string, size int64, report func(int64)) (string, error) {
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", err
	}
	defer out.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	var off int64
	last := time.Now()
	for off < size {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), size-off)])
		if n > 0 {
			h.Write(buf[:n])
			if _, err := sparse.WriteAt(out, buf[:n], off); err != nil {
				return "", err
			}
			off += int64(n)
		}
		if err != nil {
			return "", fmt.Errorf("truncated: %w", err)
		}
		if time.Since(last) > 200*time.Millisecond {
			last = time.Now()
			report(off)
		}
	}
	if err := out.Truncate(size); err != nil {
		return "", err
	}
	if err := out.Sync(); err != nil {
		return "", err
	}
	report(off)
	return hex.EncodeToString(h.Sum(nil)), out.Close()
}

// hashFile returns a file's sha256 and size.
func hashFile(ctx context.Context, p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, &ctxReader{ctx: ctx, r: f})
	if err != nil {
		return "", 0, fmt.Errorf("hash %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// FileSHA256 returns the sha256 (hex) and size of the file at p.
func FileSHA256(ctx context.Context, p string) (string, int64, error) { return hashFile(ctx, p) }

type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type ctxReader struct {
	ctx    context.Context
	r      io.Reader
	n      int64
	last   time.Time
	report func(int64)
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.report != nil && time.Since(c.last) > 200*time.Millisecond {
		c.last = time.Now()
		c.report(c.n)
	}
	return n, err
}
