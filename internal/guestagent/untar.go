package guestagent

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/wire"
)

// frameReader turns the Stdin frames of a stream into a plain reader, ending at StdinEOF.
type frameReader struct {
	r    *wire.Reader
	buf  []byte
	done bool
}

func (f *frameReader) Read(p []byte) (int, error) {
	for len(f.buf) == 0 {
		if f.done {
			return 0, io.EOF
		}
		t, payload, err := f.r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // the sender went away before the end of the upload
			}
			return 0, err
		}
		switch t {
		case wire.Stdin:
			f.buf = append(f.buf[:0], payload...)
		case wire.StdinEOF:
			f.done = true
		default:
			return 0, fmt.Errorf("unexpected %q frame in an upload", t)
		}
	}
	n := copy(p, f.buf)
	f.buf = f.buf[n:]
	return n, nil
}

// untar extracts the tar stream the host sends (as Stdin frames) into req.Dest, creating it.
// Every entry must stay inside Dest: absolute names and ".." components are refused, and
// nothing is ever written through a symlink out of it. With req.Keep, the stream is also
// saved there as it arrived (still compressed), replacing that file only once the whole
// stream was extracted: ExtractFile can later rebuild what was shipped from it.
func untar(r *wire.Reader, req agent.UntarRequest) (agent.UntarResult, error) {
	var src io.Reader = &frameReader{r: r}
	var kept *os.File
	if req.Keep != "" {
		if !filepath.IsAbs(req.Keep) {
			return agent.UntarResult{}, fmt.Errorf("keep %q is not an absolute path", req.Keep)
		}
		if err := os.MkdirAll(filepath.Dir(req.Keep), 0o700); err != nil {
			return agent.UntarResult{}, err
		}
		f, err := os.CreateTemp(filepath.Dir(req.Keep), filepath.Base(req.Keep)+".*.partial")
		if err != nil {
			return agent.UntarResult{}, err
		}
		defer os.Remove(f.Name()) // a no-op once renamed
		defer f.Close()
		kept = f
		src = io.TeeReader(src, f)
	}
	res, err := extract(src, req.Compression, req.Dest)
	if err != nil || kept == nil {
		return res, err
	}
	// Whatever follows the end of the archive (padding, the compressor's trailer) is kept
	// too, so that the saved stream is exactly the one sent.
	if _, err := io.Copy(io.Discard, src); err != nil {
		return res, err
	}
	if err := kept.Close(); err != nil {
		return res, err
	}
	return res, os.Rename(kept.Name(), req.Keep)
}

// ExtractFile extracts a tar file (compression "" or "zstd") into dest, under the same rules
// as an upload: `banger-agent extract` runs it in the guest, for instance on a stream an
// upload kept.
func ExtractFile(file, compression, dest string) (agent.UntarResult, error) {
	f, err := os.Open(file)
	if err != nil {
		return agent.UntarResult{}, err
	}
	defer f.Close()
	return extract(f, compression, dest)
}

// extract reads a tar stream from src into dest, creating it. Every entry must stay inside
// dest: absolute names and ".." components are refused, and nothing is ever written through
// a symlink out of it.
func extract(src io.Reader, compression, dest string) (agent.UntarResult, error) {
	var res agent.UntarResult
	if !filepath.IsAbs(dest) {
		return res, fmt.Errorf("destination %q is not an absolute path", dest)
	}
	if compression == "zstd" {
		zr, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return res, err
		}
		defer zr.Close()
		src = zr
	} else if compression != "" {
		return res, fmt.Errorf("compression %q: want zstd or none", compression)
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return res, err
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return res, err
	}
	defer root.Close()
	dirs := newDirCache(root)
	defer dirs.close()
	tr := tar.NewReader(src)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("read upload: %w", err)
		}
		name, err := cleanName(h.Name)
		if err != nil {
			return res, err
		}
		if name == "." {
			continue
		}
		mode := os.FileMode(h.Mode) & os.ModePerm
		if h.Typeflag == tar.TypeDir {
			if err := dirs.mkdirAll(name); err != nil {
				return res, fmt.Errorf("%s: %w", h.Name, err)
			}
			_ = root.Chmod(name, mode|0o700)
			continue
		}
		// Files are made through a root opened on their directory: names inside it take
		// one system call each instead of a walk from the top (it counts under emulation).
		dir, base := filepath.Split(name)
		parent, err := dirs.open(filepath.Clean(dir))
		if err != nil {
			return res, fmt.Errorf("%s: %w", h.Name, err)
		}
		switch h.Typeflag {
		case tar.TypeReg:
			// Replace, never write through: whatever is at the name (a symlink included) is
			// removed first.
			f, err := parent.OpenFile(base, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
			if errors.Is(err, fs.ErrExist) {
				_ = parent.Remove(base)
				f, err = parent.OpenFile(base, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
			}
			if err != nil {
				return res, fmt.Errorf("%s: %w", h.Name, err)
			}
			n, err := io.Copy(f, tr)
			if err == nil && mode&^dirs.umask != mode {
				err = f.Chmod(mode) // the umask took bits the entry has
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return res, fmt.Errorf("%s: %w", h.Name, err)
			}
			res.Files++
			res.Bytes += n
		case tar.TypeSymlink:
			// Kept as the repository has it, wherever it points: it is only data. Writes go
			// through os.Root, which never follows a link out of the destination.
			_ = parent.Remove(base)
			dirs.forget(name) // if a directory was there, it is gone now
			if err := parent.Symlink(h.Linkname, base); err != nil {
				return res, fmt.Errorf("%s: %w", h.Name, err)
			}
			res.Files++
		default:
			return res, fmt.Errorf("%s: entries of type %q are not accepted in an upload", h.Name, h.Typeflag)
		}
	}
	return res, nil
}

// dirCache remembers the directories an extraction made and keeps a root open on the one
// files last went to: a tar lists a directory's files together, so most files need no
// directory work at all.
type dirCache struct {
	root  *os.Root
	made  map[string]bool
	name  string // the directory cur is opened on
	cur   *os.Root
	umask os.FileMode
}

func newDirCache(root *os.Root) *dirCache {
	return &dirCache{root: root, made: map[string]bool{".": true}, umask: processUmask()}
}

func (c *dirCache) mkdirAll(dir string) error {
	if c.made[dir] {
		return nil
	}
	if err := c.root.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	c.made[dir] = true
	return nil
}

// open returns a root on dir (made if needed), valid until the next call.
func (c *dirCache) open(dir string) (*os.Root, error) {
	if c.cur != nil && c.name == dir {
		return c.cur, nil
	}
	if err := c.mkdirAll(dir); err != nil {
		return nil, err
	}
	r := c.root
	if dir != "." {
		var err error
		if r, err = c.root.OpenRoot(dir); err != nil {
			return nil, err
		}
	}
	c.close()
	c.cur, c.name = r, dir
	return r, nil
}

// forget drops what the cache knows about name and everything under it.
func (c *dirCache) forget(name string) {
	under := func(d string) bool { return d == name || strings.HasPrefix(d, name+"/") }
	if c.cur != nil && under(c.name) {
		c.close()
	}
	for d := range c.made {
		if under(d) {
			delete(c.made, d)
		}
	}
}

func (c *dirCache) close() {
	if c.cur != nil && c.cur != c.root {
		c.cur.Close()
	}
	c.cur, c.name = nil, ""
}

// processUmask reads the process's umask from /proc/self/status (Linux 4.7+), without
// changing it under the agent's other goroutines; when unknown, every file gets its mode set
// explicitly.
func processUmask() os.FileMode {
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				var m uint32
				if _, err := fmt.Sscanf(strings.TrimSpace(v), "%o", &m); err == nil {
					return os.FileMode(m)
				}
			}
		}
	}
	return 0o777
}

// cleanName validates a tar entry name and returns it cleaned and relative.
func cleanName(name string) (string, error) {
	if name == "" || filepath.IsAbs(name) || strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("upload entry %q: absolute names are not accepted", name)
	}
	clean := filepath.Clean(name)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("upload entry %q leaves the destination", name)
	}
	return clean, nil
}
