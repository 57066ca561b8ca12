package ext4test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/ext4"
)

func TestListing(t *testing.T) {
	if _, err := ext4.LookTool("debugfs"); err != nil {
		t.Skip(err)
	}
	tree := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(tree, "a dir/sub"), 0o755))
	must(os.WriteFile(filepath.Join(tree, "a dir/sub/f"), []byte("hello"), 0o644))
	must(os.Chmod(filepath.Join(tree, "a dir/sub/f"), os.ModeSetuid|0o755))
	must(os.Symlink("/proc/self/fd", filepath.Join(tree, "fd")))
	img := filepath.Join(t.TempDir(), "i.ext4")
	must(ext4.FromTree(context.Background(), ext4.Options{Tree: tree, Output: img, Label: "t"}))
	l := Listing(t, img, true)
	uid := os.Getuid()
	for p, want := range map[string]string{
		"/a dir":       "0040755 ",
		"/a dir/sub/f": "0104755 ",
		"/fd":          "0120777 ",
	} {
		if !strings.HasPrefix(l[p], want) {
			t.Errorf("%s: %q, want prefix %q", p, l[p], want)
		}
	}
	if !strings.HasSuffix(l["/a dir/sub/f"], " size 5") || !strings.HasSuffix(l["/fd"], "-> /proc/self/fd") {
		t.Errorf("listing: %q", l)
	}
	if !strings.Contains(l["/fd"], " "+itoa(uid)+":") {
		t.Errorf("/fd: %q, want uid %d", l["/fd"], uid)
	}
	if d := Diff(l, map[string]string{"/fd": l["/fd"]}, 10); len(d) != 4 {
		t.Errorf("Diff = %v", d)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
