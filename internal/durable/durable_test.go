package durable

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// recordSyncs replaces fsync for the test and returns the paths synced, in order. Each entry
// notes what final held at that moment, so tests can check the order of syncs and renames.
func recordSyncs(t *testing.T, final string) *[]string {
	t.Helper()
	var log []string
	oldFsync, oldSyncfs := fsync, syncfs
	record := func(what string, f *os.File) {
		content, _ := os.ReadFile(filepath.Join(final, "vmlinux"))
		log = append(log, what+" "+f.Name()+" final="+string(content))
	}
	fsync = func(f *os.File) error { record("fsync", f); return oldFsync(f) }
	syncfs = func(f *os.File) error { record("syncfs", f); return oldSyncfs(f) }
	t.Cleanup(func() { fsync, syncfs = oldFsync, oldSyncfs })
	return &log
}

func writeTree(t *testing.T, dir, content string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vmlinux"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReplaceSyncsStagedBeforeRenameAndDirAfter(t *testing.T) {
	root := t.TempDir()
	final, staged, old := filepath.Join(root, "k"), filepath.Join(root, ".k.staging"), filepath.Join(root, ".k.old")
	writeTree(t, final, "old")
	writeTree(t, staged, "new")
	log := recordSyncs(t, final)

	moved, err := Replace(staged, final, old)
	if err != nil {
		t.Fatalf("Replace: %v", err)
	}
	if moved != old {
		t.Fatalf("Replace returned old=%q, want %q", moved, old)
	}
	if got, _ := os.ReadFile(filepath.Join(final, "vmlinux")); string(got) != "new" {
		t.Fatalf("final holds %q, want new", got)
	}
	if got, _ := os.ReadFile(filepath.Join(old, "vmlinux")); string(got) != "old" {
		t.Fatalf("old holds %q, want the previous version", got)
	}
	want := []string{
		"syncfs " + staged + " final=old", // the new tree, before it is in place
		"fsync " + root + " final=new",    // the renames, after them
	}
	if !slices.Equal(*log, want) {
		t.Fatalf("syncs:\n%q\nwant:\n%q", *log, want)
	}
}

func TestReplaceWithoutPreviousVersion(t *testing.T) {
	root := t.TempDir()
	final, staged := filepath.Join(root, "k"), filepath.Join(root, ".k.staging")
	writeTree(t, staged, "new")
	moved, err := Replace(staged, final, filepath.Join(root, ".k.old"))
	if err != nil || moved != "" {
		t.Fatalf("Replace = %q, %v; want \"\", nil", moved, err)
	}
	if got, _ := os.ReadFile(filepath.Join(final, "vmlinux")); string(got) != "new" {
		t.Fatalf("final holds %q, want new", got)
	}
}

func TestReplaceFailureKeepsPrevious(t *testing.T) {
	root := t.TempDir()
	final := filepath.Join(root, "k")
	writeTree(t, final, "old")
	// The staged tree does not exist: the second rename fails after the first moved final.
	_, err := Replace(filepath.Join(root, "missing"), final, filepath.Join(root, ".k.old"))
	if err == nil {
		t.Fatal("Replace of a missing staged tree succeeded")
	}
	if got, _ := os.ReadFile(filepath.Join(final, "vmlinux")); string(got) != "old" {
		t.Fatalf("after a failed Replace final holds %q, want the previous version", got)
	}
}

func TestPublishRefusesExisting(t *testing.T) {
	root := t.TempDir()
	final, staged := filepath.Join(root, "k"), filepath.Join(root, ".k.staging")
	writeTree(t, final, "old")
	writeTree(t, staged, "new")
	if err := Publish(staged, final); err == nil {
		t.Fatal("Publish over an existing directory succeeded")
	}
	if err := os.RemoveAll(final); err != nil {
		t.Fatal(err)
	}
	log := recordSyncs(t, final)
	if err := Publish(staged, final); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	want := []string{"syncfs " + staged + " final=", "fsync " + root + " final=new"}
	if !slices.Equal(*log, want) {
		t.Fatalf("syncs %q, want %q: the staged tree, then the parent after the rename", *log, want)
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("new"), 0o640); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("stat: %v, %v", fi, err)
	}
	if got, _ := os.ReadFile(p); string(got) != "new" {
		t.Fatalf("content %q", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only f (no staging leftovers)", len(entries))
	}
	if err := WriteFile(filepath.Join(dir, "no/such/dir/f"), nil, 0o600); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("WriteFile into a missing directory: %v", err)
	}
}

func TestRenameSyncsTheFileThenTheDirectory(t *testing.T) {
	root := t.TempDir()
	final := filepath.Join(root, "k")
	writeTree(t, final, "old")
	staged := filepath.Join(final, ".vmlinux.tmp")
	if err := os.WriteFile(staged, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	log := recordSyncs(t, final)
	if err := Rename(staged, filepath.Join(final, "vmlinux")); err != nil {
		t.Fatal(err)
	}
	want := []string{"fsync " + staged + " final=old", "fsync " + final + " final=new"}
	if !slices.Equal(*log, want) {
		t.Fatalf("syncs %q, want %q", *log, want)
	}
}
