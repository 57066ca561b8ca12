package ext4

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAddNodes(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := LookTool(tool); err != nil {
			t.Skip(err)
		}
	}
	tree := t.TempDir()
	if err := os.Mkdir(filepath.Join(tree, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(tree, "dev", "shm"), 0o700); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "img.ext4")
	nodes := []Node{
		{Path: "/dev/null", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o666, Major: 1, Minor: 3},
		{Path: "/dev/sda", Mode: fs.ModeDevice | 0o660, Major: 8, Minor: 0},
		{Path: "/dev/fd", Mode: fs.ModeSymlink | 0o777, Target: "/proc/self/fd"},
		{Path: "/dev/pts", Mode: fs.ModeDir | 0o755},
		{Path: "/dev/shm", Mode: fs.ModeDir | 0o755}, // present: left alone
	}
	if err := FromTree(context.Background(), Options{Tree: tree, Output: img, Label: "t", Nodes: nodes}); err != nil {
		t.Fatal(err)
	}
	out, err := execCommand(context.Background(), "debugfs", "-R", "ls -p /dev", img).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, want := range []string{"/020666/0/0/null/", "/060660/0/0/sda/", "/120777/0/0/fd/", "/040755/0/0/pts/", "/040700/0/0/shm/"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ls -p /dev lacks %q:\n%s", want, out)
		}
	}
	out, _ = execCommand(context.Background(), "debugfs", "-R", "stat /dev/null", img).CombinedOutput()
	if !strings.Contains(string(out), "Device major/minor number: 01:03") {
		t.Errorf("stat /dev/null:\n%s", out)
	}
	out, _ = execCommand(context.Background(), "debugfs", "-R", "stat /dev/fd", img).CombinedOutput()
	if !strings.Contains(string(out), `Fast link dest: "/proc/self/fd"`) {
		t.Errorf("stat /dev/fd:\n%s", out)
	}
	if err := AddNodes(context.Background(), img, []Node{{Path: "/dev/x y", Mode: 0o644}}); err == nil {
		t.Errorf("a path with a space was accepted")
	}
	if out, err := execCommand(context.Background(), "e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck: %v\n%s", err, out)
	}
}
