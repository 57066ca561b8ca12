package vmservice

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/config"
)

// syncTar runs writeFileSync with a deadline and returns the tar's files (name → content)
// and the notices.
func syncTar(t *testing.T, entries []config.FileSync) (map[string]string, string) {
	t.Helper()
	var mu sync.Mutex
	var notices []string
	warn := func(m string) { mu.Lock(); notices = append(notices, m); mu.Unlock() }
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeFileSync(pw, entries, warn)) }()
	files := map[string]string{}
	done := make(chan error, 1)
	go func() {
		tr := tar.NewReader(pr)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
			b, _ := io.ReadAll(tr)
			mu.Lock()
			files[h.Name] = string(b)
			mu.Unlock()
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("file_sync: %v", err)
		}
	case <-time.After(5 * time.Second):
		pr.CloseWithError(io.ErrClosedPipe)
		t.Fatal("file_sync blocked for 5 s")
	}
	mu.Lock()
	defer mu.Unlock()
	return files, strings.Join(notices, "\n")
}

// A named pipe, in a synced directory or named by an entry, is skipped with a notice; reading
// it would block the VM's creation forever.
func TestFileSyncSkipsNamedPipesWithoutBlocking(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	_ = os.MkdirAll(tree, 0o755)
	_ = os.WriteFile(filepath.Join(tree, "kept"), []byte("kept"), 0o644)
	for _, p := range []string{filepath.Join(tree, "pipe"), filepath.Join(dir, "toplevel-pipe")} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	files, notices := syncTar(t, []config.FileSync{
		{Host: filepath.Join(dir, "toplevel-pipe"), Guest: "/root/p"},
		{Host: tree, Guest: "/root/tree"},
	})
	if files["tree/kept"] != "kept" {
		t.Errorf("regular file next to the pipe not copied: %v", files)
	}
	if _, ok := files["tree/pipe"]; ok {
		t.Errorf("the pipe was copied")
	}
	for _, want := range []string{"file_sync[1]: " + filepath.Join(dir, "toplevel-pipe") + " is a named pipe; skipped",
		"file_sync[2]: " + filepath.Join(tree, "pipe") + " is a named pipe; skipped"} {
		if !strings.Contains(notices, want) {
			t.Errorf("notices lack %q:\n%s", want, notices)
		}
	}
}

// An entry replaced after the directory was listed (a symlink to a secret, a link inside the
// tree, a named pipe) is not followed, not read and not blocked on: it is skipped with a notice.
func TestFileSyncDoesNotFollowWhatIsSwappedInAfterTheListing(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	_ = os.WriteFile(secret, []byte("SECRET"), 0o600)
	tree := filepath.Join(dir, "tree")
	_ = os.MkdirAll(filepath.Join(tree, "sub"), 0o755)
	_ = os.MkdirAll(filepath.Join(tree, "zother"), 0o755)
	_ = os.WriteFile(filepath.Join(tree, "zother", "inner"), []byte("INNER"), 0o644)
	_ = os.WriteFile(filepath.Join(tree, "zinner-target"), []byte("IN-TREE"), 0o644)
	for _, n := range []string{"a-out", "b-in", "c-pipe", "d-plain"} {
		_ = os.WriteFile(filepath.Join(tree, n), []byte("plain "+n), 0o644)
	}
	swap := map[string]func(p string) error{
		"a-out":  func(p string) error { return os.Symlink(secret, p) },
		"b-in":   func(p string) error { return os.Symlink("zinner-target", p) },
		"c-pipe": func(p string) error { return syscall.Mkfifo(p, 0o600) },
		"sub":    func(p string) error { return os.Symlink("zother", p) },
	}
	fileSyncBeforeOpen = func(p string) {
		if f, ok := swap[filepath.Base(p)]; ok {
			if err := os.RemoveAll(p); err != nil {
				t.Error(err)
			}
			if err := f(p); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(func() { fileSyncBeforeOpen = nil })
	files, notices := syncTar(t, []config.FileSync{{Host: tree, Guest: "/root/tree"}})
	for name, content := range files {
		if strings.Contains(content, "SECRET") {
			t.Errorf("%s carries the secret a swapped-in symlink points at", name)
		}
	}
	for _, n := range []string{"tree/a-out", "tree/b-in", "tree/c-pipe", "tree/sub/inner"} {
		if _, ok := files[n]; ok {
			t.Errorf("%s was copied through what was swapped in", n)
		}
	}
	if files["tree/d-plain"] != "plain d-plain" || files["tree/zother/inner"] != "INNER" {
		t.Errorf("untouched files not copied: %v", files)
	}
	for _, n := range []string{"a-out", "b-in", "c-pipe", "sub"} {
		if !strings.Contains(notices, filepath.Join(tree, n)+" changed while being copied") {
			t.Errorf("no notice for %s:\n%s", n, notices)
		}
	}
}
