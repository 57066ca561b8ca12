package image

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
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
