// Package workspace turns a git work tree on the host into what `banger vm run ./repo` ships
// into a guest: the list of files (tracked ones, submodules' included; optionally untracked
// but not ignored ones; never ignored ones), a tar stream of them read straight from the work
// tree (no temporary copy), and, for --branch, a git bundle of the history plus the work
// tree's uncommitted changes.
package workspace

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Repo is a git work tree.
type Repo struct {
	// Top is the work tree's top directory.
	Top string
	// Name is the name the guest copy gets by default (the top directory's base name).
	Name string
}

// Open finds the work tree that contains path. A path outside any work tree, or inside a bare
// repository, is a clear error.
func Open(path string) (*Repo, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("workspace %s: %w", path, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("workspace %s is not a directory; give the repository's directory", path)
	}
	if _, err := exec.LookPath("git"); err != nil {
		return nil, errors.New("workspace mode needs git on the host (Debian: apt-get install git)")
	}
	out, err := git(abs, "rev-parse", "--is-bare-repository", "--is-inside-work-tree", "--show-toplevel")
	if err != nil {
		if strings.Contains(err.Error(), "not a git repository") {
			return nil, fmt.Errorf("workspace %s is not inside a git work tree; banger ships the files git tracks (run `git init` and commit, or give the repository's directory)", path)
		}
		return nil, fmt.Errorf("workspace %s: %w", path, err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 || lines[0] == "true" || lines[1] != "true" {
		return nil, fmt.Errorf("workspace %s is a bare repository or a .git directory, not a work tree; give a checkout", path)
	}
	if len(lines) < 3 {
		return nil, fmt.Errorf("workspace %s: git did not name the work tree's top", path)
	}
	top := lines[2]
	return &Repo{Top: top, Name: filepath.Base(top)}, nil
}

// git runs git in dir and returns its stdout; the error carries its stderr.
func git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// File is one file to ship, relative to the work tree's top.
type File struct {
	Path string
	Size int64 // bytes (a symlink's target length)
	Link bool
}

// List is what a workspace ships.
type List struct {
	Files     []File
	Bytes     int64
	Untracked int // untracked, not ignored files that were left out (0 with includeUntracked)
}

// Files lists what ships: git's tracked files, recursing into submodules, that exist in the
// work tree, plus untracked but not ignored ones when includeUntracked. Directories, and
// files git tracks but the work tree has deleted, are not listed. The order is git's.
func (r *Repo) Files(includeUntracked bool) (List, error) {
	tracked, err := git(r.Top, "ls-files", "-z", "--recurse-submodules", "--cached")
	if err != nil {
		return List{}, err
	}
	untracked, err := git(r.Top, "ls-files", "-z", "--others", "--exclude-standard")
	if err != nil {
		return List{}, err
	}
	var l List
	seen := map[string]bool{}
	add := func(p string) error {
		if p == "" || seen[p] {
			return nil
		}
		seen[p] = true
		st, err := os.Lstat(filepath.Join(r.Top, p))
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted in the work tree: nothing to ship
		}
		if err != nil {
			return err
		}
		switch {
		case st.Mode().IsRegular():
			l.Files = append(l.Files, File{Path: p, Size: st.Size()})
			l.Bytes += st.Size()
		case st.Mode()&fs.ModeSymlink != 0:
			l.Files = append(l.Files, File{Path: p, Size: st.Size(), Link: true})
		}
		// Directories (a submodule git could not recurse into) and special files are skipped.
		return nil
	}
	for _, p := range strings.Split(tracked, "\x00") {
		if err := add(p); err != nil {
			return List{}, err
		}
	}
	for _, p := range strings.Split(untracked, "\x00") {
		if p == "" || seen[p] {
			continue
		}
		if includeUntracked {
			if err := add(p); err != nil {
				return List{}, err
			}
		} else {
			l.Untracked++
		}
	}
	return l, nil
}

// BranchFiles lists what a --branch workspace ships: the files of commit's tree (not the
// work tree's HEAD), with the work tree's uncommitted changes to tracked files on top, as the
// guest applies them. Submodules are not in a bundle and are not listed; untracked files
// do not ship. The order is by path.
func (r *Repo) BranchFiles(commit string) (List, error) {
	tree, err := git(r.Top, "ls-tree", "-r", "-l", "-z", commit)
	if err != nil {
		return List{}, err
	}
	files := map[string]File{}
	for _, rec := range strings.Split(tree, "\x00") {
		meta, p, ok := strings.Cut(rec, "\t")
		if !ok {
			continue
		}
		f := strings.Fields(meta) // mode type object size
		if len(f) != 4 || f[1] != "blob" {
			continue // a submodule's commit
		}
		size, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			return List{}, fmt.Errorf("git ls-tree %s: size %q of %s", commit, f[3], p)
		}
		files[p] = File{Path: p, Size: size, Link: f[0] == "120000"}
	}
	if r.Head() != "" {
		changed, err := git(r.Top, "diff", "--name-status", "-z", "--no-renames", "--ignore-submodules", "HEAD")
		if err != nil {
			return List{}, err
		}
		recs := strings.Split(changed, "\x00")
		for i := 0; i+1 < len(recs); i += 2 {
			status, p := recs[i], recs[i+1]
			if status == "D" {
				delete(files, p)
				continue
			}
			st, err := os.Lstat(filepath.Join(r.Top, p))
			if err != nil {
				delete(files, p)
				continue
			}
			switch {
			case st.Mode().IsRegular():
				files[p] = File{Path: p, Size: st.Size()}
			case st.Mode()&fs.ModeSymlink != 0:
				files[p] = File{Path: p, Size: st.Size(), Link: true}
			}
		}
	}
	var l List
	for _, f := range files {
		l.Files = append(l.Files, f)
		if !f.Link {
			l.Bytes += f.Size
		}
	}
	sort.Slice(l.Files, func(i, j int) bool { return l.Files[i].Path < l.Files[j].Path })
	return l, nil
}

// WriteTar writes the files as a tar stream, read one by one from the work tree: modes (the
// executable bit) and symlinks are kept, owners are root's. A file that changes size while
// it is read is an error rather than a corrupt archive.
func (r *Repo) WriteTar(w io.Writer, files []File) error {
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	buf := make([]byte, 1<<20)
	for _, f := range files {
		// Parent directories first, once each, so that the guest gets sane directory modes.
		var parents []string
		for d := filepath.Dir(f.Path); d != "." && d != "/" && !dirs[d]; d = filepath.Dir(d) {
			parents = append(parents, d)
			dirs[d] = true
		}
		sort.Strings(parents)
		for _, d := range parents {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, Format: tar.FormatPAX}); err != nil {
				return err
			}
		}
		full := filepath.Join(r.Top, f.Path)
		st, err := os.Lstat(full)
		if err != nil {
			return fmt.Errorf("read %s: %w", f.Path, err)
		}
		h := &tar.Header{Name: f.Path, ModTime: st.ModTime(), Format: tar.FormatPAX}
		if st.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(full)
			if err != nil {
				return fmt.Errorf("read link %s: %w", f.Path, err)
			}
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, target, 0o777
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			continue
		}
		if !st.Mode().IsRegular() {
			continue
		}
		h.Typeflag, h.Size = tar.TypeReg, st.Size()
		h.Mode = 0o644
		if st.Mode()&0o111 != 0 {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		file, err := os.Open(full)
		if err != nil {
			return fmt.Errorf("read %s: %w", f.Path, err)
		}
		n, err := io.CopyBuffer(tw, io.LimitReader(file, st.Size()), buf)
		file.Close()
		if err != nil {
			return fmt.Errorf("ship %s: %w", f.Path, err)
		}
		if n != st.Size() {
			return fmt.Errorf("%s changed while it was read (%d of %d bytes); run again", f.Path, n, st.Size())
		}
	}
	return tw.Close()
}

// Head is the work tree's HEAD commit ("" in a repository without commits).
func (r *Repo) Head() string {
	out, err := git(r.Top, "rev-parse", "--verify", "-q", "HEAD")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// ResolveCommit returns the commit a ref names, or a clear error.
func (r *Repo) ResolveCommit(ref string) (string, error) {
	out, err := git(r.Top, "rev-parse", "--verify", "-q", ref+"^{commit}")
	if err != nil {
		return "", fmt.Errorf("%q is not a commit in %s", ref, r.Top)
	}
	return strings.TrimSpace(out), nil
}

// Bundle writes a git bundle of everything reachable from commit (the history the guest copy
// needs) to w.
func (r *Repo) Bundle(w io.Writer, commit string) error {
	// A bundle needs a ref to carry; a temporary one under refs/banger names the commit.
	ref := fmt.Sprintf("refs/banger/ship-%d", os.Getpid())
	if _, err := git(r.Top, "update-ref", "--no-deref", ref, commit); err != nil {
		return err
	}
	defer git(r.Top, "update-ref", "-d", ref)
	cmd := exec.Command("git", "-C", r.Top, "bundle", "create", "-q", "-", ref)
	cmd.Stdout = w
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("git bundle create: %v: %s", err, strings.TrimSpace(errb.String()))
	}
	return nil
}

// UncommittedDiff is the work tree's uncommitted changes to tracked files against HEAD, as a
// binary patch ("" when there are none).
func (r *Repo) UncommittedDiff() (string, error) {
	if r.Head() == "" {
		return "", nil
	}
	return git(r.Top, "diff", "--binary", "HEAD")
}
