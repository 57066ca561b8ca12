package image

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// A killed bootstrap can leave filesystems mounted in the tree; removeTree must detach them
// instead of deleting what is mounted there.
func TestRemoveTreeDetachesMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	base := t.TempDir()
	tree := filepath.Join(base, "tree")
	mnt := filepath.Join(tree, "proc")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	writeTestFile(t, filepath.Join(mnt, "inside-mount"), "x", 0o644)
	writeTestFile(t, filepath.Join(tree, "etc/file"), "x", 0o644)
	if err := removeTree(tree); err != nil {
		exec.Command("umount", "-l", mnt).Run()
		t.Fatalf("removeTree: %v", err)
	}
	if _, err := os.Lstat(tree); !os.IsNotExist(err) {
		t.Errorf("tree still exists: %v", err)
	}
	if mounts, _ := mountsUnder(base); len(mounts) != 0 {
		t.Errorf("mounts left: %v", mounts)
	}
}

func TestRemoveLeftovers(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "image-debian-bookworm-tree-123")
	if err := os.MkdirAll(filepath.Join(tree, "usr/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	oldLog := filepath.Join(dir, "image-debian-bookworm-1.log")
	newLog := filepath.Join(dir, "image-debian-bookworm-2.log")
	for _, p := range []string{oldLog, newLog} {
		if err := os.WriteFile(p, []byte("log"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(oldLog, past, past); err != nil {
		t.Fatal(err)
	}
	if err := RemoveLeftovers(dir, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{tree: false, oldLog: false, newLog: true} {
		_, err := os.Stat(p)
		if got := err == nil; got != want {
			t.Errorf("%s exists = %v, want %v (trees always go, logs only when old)", filepath.Base(p), got, want)
		}
	}
	if err := RemoveLeftovers(filepath.Join(dir, "missing"), time.Hour); err != nil {
		t.Errorf("missing dir: %v, want nil", err)
	}
}
