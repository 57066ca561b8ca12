package durable

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestStagingPublishes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		filesSynced bool
		firstSync   string // how the staged content is made durable
	}{
		{"whole file system", false, "syncfs"},
		{"files synced by the caller", true, "fsync"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			final := filepath.Join(root, "k")
			st, err := Stage(root, "k.pull")
			if err != nil {
				t.Fatal(err)
			}
			defer st.Discard()
			if filepath.Dir(st.Dir) != root || !strings.HasPrefix(filepath.Base(st.Dir), ".k.pull-") {
				t.Errorf("staging directory %s: want a hidden .k.pull-* in %s", st.Dir, root)
			}
			st.FilesSynced = tc.filesSynced
			writeTree(t, st.Dir, "new")
			log := recordSyncs(t, final)
			if err := st.Publish(final); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			want := []string{tc.firstSync + " " + st.Dir + " final=", "fsync " + root + " final=new"}
			if !slices.Equal(*log, want) {
				t.Errorf("syncs %q, want %q: the staged content, then the parent after the rename", *log, want)
			}
			if err := st.Discard(); err != nil {
				t.Fatal(err)
			}
			if b, err := os.ReadFile(filepath.Join(final, "vmlinux")); err != nil || string(b) != "new" {
				t.Errorf("after Discard of a published staging: %q, %v; want the published content kept", b, err)
			}
		})
	}
}

func TestStagingDiscardLeavesNothing(t *testing.T) {
	root := t.TempDir()
	final := filepath.Join(root, "k")
	writeTree(t, final, "old")
	st, err := Stage(root, "k.pull")
	if err != nil {
		t.Fatal(err)
	}
	writeTree(t, filepath.Join(st.Dir, "sub"), "new")
	if err := st.Publish(final); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("Publish over an existing directory: %v; want it refused", err)
	}
	if err := st.Discard(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "k" {
		t.Errorf("left in %s: %v; want only k", root, entries)
	}
	if b, _ := os.ReadFile(filepath.Join(final, "vmlinux")); string(b) != "old" {
		t.Errorf("final holds %q; want what it held before", b)
	}
}

func TestStageFailureSaysWhere(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	if _, err := Stage(missing, "k.pull"); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Stage in a missing directory: %v; want an error naming it", err)
	}
}
