package daemon

import (
	"os"
	"path/filepath"
	"testing"
)

// A follower notices when the console log it reads was rotated away.
func TestRotatedNoticesARenamedLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(path, []byte("a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if rotated(f, path) {
		t.Fatal("the open file counts as rotated")
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if !rotated(f, path) {
		t.Error("a renamed-away file (no new one yet) does not count as rotated")
	}
	if err := os.WriteFile(path, []byte("b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !rotated(f, path) {
		t.Error("a renamed-away file with a new one in its place does not count as rotated")
	}
}
