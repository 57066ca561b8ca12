package workspace

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func run(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_ALLOW_PROTOCOL=file")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func write(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// repo makes a work tree with tracked, executable, symlinked, ignored, untracked and deleted
// files and a submodule.
func repo(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	base := t.TempDir()
	sub := filepath.Join(base, "lib")
	run(t, base, "git", "init", "-q", sub)
	write(t, filepath.Join(sub, "lib.go"), "package lib\n", 0o644)
	run(t, sub, "git", "add", ".")
	run(t, sub, "git", "commit", "-q", "-m", "lib")

	top := filepath.Join(base, "myrepo")
	run(t, base, "git", "init", "-q", top)
	write(t, filepath.Join(top, "README.md"), "hello\n", 0o644)
	write(t, filepath.Join(top, "scripts/build.sh"), "#!/bin/sh\necho build\n", 0o755)
	write(t, filepath.Join(top, "gone.txt"), "soon deleted\n", 0o644)
	write(t, filepath.Join(top, ".gitignore"), "*.log\nbuild/\n", 0o644)
	if err := os.Symlink("README.md", filepath.Join(top, "link.md")); err != nil {
		t.Fatal(err)
	}
	run(t, top, "git", "-c", "protocol.file.allow=always", "submodule", "add", "-q", sub, "third_party/lib")
	run(t, top, "git", "add", ".")
	run(t, top, "git", "commit", "-q", "-m", "init")
	os.Remove(filepath.Join(top, "gone.txt"))
	write(t, filepath.Join(top, "debug.log"), "ignored\n", 0o644)
	write(t, filepath.Join(top, "build/out.bin"), "ignored\n", 0o644)
	write(t, filepath.Join(top, "notes.txt"), "untracked\n", 0o644)
	write(t, filepath.Join(top, "README.md"), "hello, changed\n", 0o644)
	return top
}

func paths(l List) []string {
	var out []string
	for _, f := range l.Files {
		out = append(out, f.Path)
	}
	sort.Strings(out)
	return out
}

func TestFiles(t *testing.T) {
	top := repo(t)
	r, err := Open(filepath.Join(top, "scripts"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Top != top || r.Name != "myrepo" {
		t.Errorf("Open from a subdirectory = %+v, want the top %s", r, top)
	}
	l, err := r.Files(false)
	if err != nil {
		t.Fatal(err)
	}
	want := ".gitignore .gitmodules README.md link.md scripts/build.sh third_party/lib/lib.go"
	if got := strings.Join(paths(l), " "); got != want {
		t.Errorf("tracked files = %s\nwant %s (submodule files in, deleted and ignored out)", got, want)
	}
	if l.Untracked != 1 {
		t.Errorf("untracked = %d, want 1 (notes.txt; ignored files do not count)", l.Untracked)
	}
	l, err = r.Files(true)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(paths(l), " "); !strings.Contains(got, "notes.txt") || strings.Contains(got, ".log") || strings.Contains(got, "build/") || l.Untracked != 0 {
		t.Errorf("with untracked: %s (untracked %d)", got, l.Untracked)
	}
}

func TestWriteTarKeepsModesAndLinks(t *testing.T) {
	top := repo(t)
	r, _ := Open(top)
	l, _ := r.Files(false)
	var buf bytes.Buffer
	if err := r.WriteTar(&buf, l.Files); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	got := map[string]*tar.Header{}
	contents := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h
		b, _ := io.ReadAll(tr)
		contents[h.Name] = string(b)
	}
	if h := got["scripts/build.sh"]; h == nil || h.Mode != 0o755 {
		t.Errorf("build.sh header %+v, want mode 0755", h)
	}
	if h := got["link.md"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "README.md" {
		t.Errorf("link.md header %+v, want a symlink to README.md", h)
	}
	if h := got["scripts/"]; h == nil || h.Typeflag != tar.TypeDir {
		t.Errorf("no directory entry for scripts/")
	}
	if contents["README.md"] != "hello, changed\n" {
		t.Errorf("README.md = %q, want the work tree's (uncommitted) content", contents["README.md"])
	}
}

func TestOpenRefusesWhatIsNotAWorkTree(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	plain := t.TempDir()
	if _, err := Open(plain); err == nil || !strings.Contains(err.Error(), "not inside a git work tree") {
		t.Errorf("plain dir: %v", err)
	}
	bare := filepath.Join(t.TempDir(), "b.git")
	run(t, filepath.Dir(bare), "git", "init", "-q", "--bare", bare)
	if _, err := Open(bare); err == nil || !strings.Contains(err.Error(), "bare") {
		t.Errorf("bare repo: %v", err)
	}
	f := filepath.Join(plain, "file")
	write(t, f, "x", 0o644)
	if _, err := Open(f); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("file: %v", err)
	}
	if _, err := Open(filepath.Join(plain, "missing")); err == nil {
		t.Error("missing path accepted")
	}
}

func TestBundleAndDiff(t *testing.T) {
	top := repo(t)
	r, _ := Open(top)
	head := r.Head()
	if len(head) != 40 {
		t.Fatalf("head %q", head)
	}
	var b bytes.Buffer
	if err := r.Bundle(&b, head); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.String(), "# v2 git bundle") && !strings.HasPrefix(b.String(), "# v3 git bundle") {
		t.Errorf("bundle starts %q", b.String()[:20])
	}
	if out := run(t, top, "git", "for-each-ref", "refs/banger"); out != "" {
		t.Errorf("temporary ref left behind: %s", out)
	}
	diff, err := r.UncommittedDiff()
	if err != nil || !strings.Contains(diff, "+hello, changed") || !strings.Contains(diff, "deleted file mode") {
		t.Errorf("diff = %q, %v", diff, err)
	}
	if _, err := r.ResolveCommit("no-such-ref"); err == nil {
		t.Error("ResolveCommit accepted a missing ref")
	}
}

// A --branch workspace ships the tree of the commit it starts at, with the work tree's
// uncommitted changes on top: that is what must be counted, not the work tree's files.
func TestBranchFiles(t *testing.T) {
	top := repo(t)
	first := strings.TrimSpace(run(t, top, "git", "rev-parse", "HEAD"))
	write(t, filepath.Join(top, "later.txt"), "only in the second commit\n", 0o644)
	run(t, top, "git", "add", "later.txt")
	run(t, top, "git", "commit", "-q", "-m", "later")
	r, _ := Open(top)

	l, err := r.BranchFiles(first)
	if err != nil {
		t.Fatal(err)
	}
	// gone.txt is deleted in the work tree; later.txt is not in the first commit; the
	// submodule's files and untracked notes.txt are not in a bundle.
	want := ".gitignore .gitmodules README.md link.md scripts/build.sh"
	if got := strings.Join(paths(l), " "); got != want {
		t.Errorf("files shipped from %s = %s\nwant %s", first[:7], got, want)
	}
	var readme, link File
	for _, f := range l.Files {
		switch f.Path {
		case "README.md":
			readme = f
		case "link.md":
			link = f
		}
	}
	if readme.Size != int64(len("hello, changed\n")) || !link.Link || link.Size != int64(len("README.md")) {
		t.Errorf("README.md %+v (want the work tree's size), link.md %+v", readme, link)
	}
	wantBytes := int64(len("*.log\nbuild/\n") + len("hello, changed\n") + len("#!/bin/sh\necho build\n"))
	gm, _ := os.ReadFile(filepath.Join(top, ".gitmodules"))
	if wantBytes += int64(len(gm)); l.Bytes != wantBytes {
		t.Errorf("bytes = %d, want %d", l.Bytes, wantBytes)
	}

	l, err = r.BranchFiles(r.Head())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(paths(l), " "); got != ".gitignore .gitmodules README.md later.txt link.md scripts/build.sh" {
		t.Errorf("files shipped from HEAD = %s", got)
	}
	if _, err := r.BranchFiles("no-such-ref"); err == nil {
		t.Error("BranchFiles accepted a missing commit")
	}
}
