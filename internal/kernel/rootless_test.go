package kernel

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/ext4/ext4test"
	"github.com/banger-dev/banger/internal/userns/usernstest"
)

// A module disk made by an ordinary user records the module tree as root's, as one made by
// root does (the tree, unpacked from the kernel package, is all the user's). Before, mkfs ran
// as the user and the disk recorded the user's uid on every file.
func TestEnsureModulesDiskRootless(t *testing.T) {
	if _, ok := usernstest.InChild(); ok {
		if os.Geteuid() == 0 {
			t.Fatal("the child runs as root")
		}
		modules := fakeModuleTree(t)
		kernelDir := filepath.Dir(filepath.Dir(filepath.Dir(modules)))
		p, err := EnsureModulesDisk(context.Background(), Manifest{Name: "k", Dir: kernelDir, Release: "6.1.0-test", ModulesDir: "lib/modules/6.1.0-test"})
		if err != nil {
			t.Fatalf("EnsureModulesDisk: %v", err)
		}
		list := ext4test.Listing(t, p, false)
		if len(list) < 10 {
			t.Fatalf("module disk lists %d paths", len(list))
		}
		for path, desc := range list {
			if path != "/lost+found" && !strings.Contains(desc, " 0:0") {
				t.Errorf("%s: %q, want owned by 0:0", path, desc)
			}
		}
		return
	}
	for _, tool := range []string{"depmod", "mkfs.ext4", "debugfs"} {
		if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	u := usernstest.User(t)
	out, ok := usernstest.Run(t, u, "TestEnsureModulesDiskRootless", "")
	t.Logf("as %s:\n%s", u.Username, out)
	if !ok {
		t.Fatalf("EnsureModulesDisk as %s failed", u.Username)
	}
}
