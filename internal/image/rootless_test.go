package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/ext4/ext4test"
	"github.com/banger-dev/banger/internal/progress"
	"github.com/banger-dev/banger/internal/userns/usernstest"
)

// rootlessRecipe is small (a minbase tree, a couple of minutes for both builds) but holds what
// a rootless build could get wrong: setuid files (sudo), a file capability (ping, set by
// libcap2-bin's setcap in iputils-ping's postinst), files of other groups (/etc/shadow), and
// every step kind.
const rootlessRecipe = `
name = "rootless-check"
suite = "bookworm"
variant = "minbase"
packages = ["iputils-ping", "libcap2-bin", "sudo"]

[[steps]]
truncate = "/etc/machine-id"
[[steps]]
remove = "/etc/hostname"
[[steps]]
remove = "/etc/resolv.conf"
[[steps]]
write = "/etc/banger-check"
content = "x\n"
mode = "0600"
[[steps]]
symlink = "/etc/banger-link"
target = "/etc/banger-check"
[[steps]]
mask = "getty@tty1.service"
[[steps]]
lock_password = "root"
`

// An image built by an ordinary user (with subordinate ids) holds exactly what the same recipe
// built by root holds: the same paths with the same owners, modes (setuid and setgid bits
// included), device numbers, symlink targets and extended attributes (file capabilities).
// Before, Build refused to run without root.
func TestBuildRootlessMatchesRoot(t *testing.T) {
	if dir, ok := usernstest.InChild(); ok {
		buildRootlessChild(t, dir)
		return
	}
	requireBuildHost(t)
	u := usernstest.User(t)
	recipe, err := ParseRecipe([]byte(rootlessRecipe))
	if err != nil {
		t.Fatal(err)
	}
	dir := usernstest.Dir(t, u)
	out, ok := usernstest.Run(t, u, "TestBuildRootlessMatchesRoot", dir, "BANGER_TEST_MIRROR="+hostMirror())
	t.Logf("as %s:\n%s", u.Username, out)
	if !ok {
		t.Fatalf("Build as %s failed", u.Username)
	}

	tmp := t.TempDir()
	rootImage := filepath.Join(tmp, "image")
	if _, err := Build(context.Background(), BuildOptions{Recipe: recipe, Mirror: hostMirror(), Dest: rootImage, WorkDir: tmp}); err != nil {
		t.Fatalf("Build as root: %v", err)
	}

	userImage := filepath.Join(dir, "images", "x")
	rootList := ext4test.Listing(t, filepath.Join(rootImage, RootfsFile), false)
	userList := ext4test.Listing(t, filepath.Join(userImage, RootfsFile), false)
	if d := ext4test.Diff(rootList, userList, 40); len(d) > 0 {
		t.Errorf("the images differ (root vs %s) in %d paths:\n%s", u.Username, len(d), strings.Join(d, "\n"))
	}
	t.Logf("%d paths compared", len(rootList))
	for p, want := range map[string]string{
		"/usr/bin/sudo":     "0104755 0:0",
		"/etc/shadow":       "0100640 0:42",
		"/dev/null":         "0020666 0:0 dev 01:03",
		"/etc/banger-link":  "0120777 0:0 -> /etc/banger-check",
		"/etc/banger-check": "0100600 0:0",
	} {
		if userList[p] != want {
			t.Errorf("%s in the user's image: %q, want %q", p, userList[p], want)
		}
	}
	if !strings.Contains(userList["/usr/bin/ping"], "security.capability") {
		t.Errorf("/usr/bin/ping in the user's image has no file capability: %q", userList["/usr/bin/ping"])
	}
	if err := Verify(userImage); err != nil {
		t.Errorf("Verify(user's image): %v", err)
	}
}

// buildRootlessChild is the build, run as the test user.
func buildRootlessChild(t *testing.T, dir string) {
	if os.Geteuid() == 0 {
		t.Fatal("the child runs as root")
	}
	recipe, err := ParseRecipe([]byte(rootlessRecipe))
	if err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "work")
	images := filepath.Join(dir, "images")
	for _, d := range []string{work, images} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	m, err := Build(context.Background(), BuildOptions{Recipe: recipe, Mirror: hostMirror(), Dest: filepath.Join(images, "x"), WorkDir: work,
		Progress: nil})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Logf("built in %.1fs: %v", m.BuildSeconds, m.StageSeconds)
	if entries, _ := os.ReadDir(work); len(entries) != 0 {
		t.Errorf("work dir not cleaned up: %v", entries)
	}
}

// An ordinary user's build cancelled while packages are being installed leaves nothing behind
// but its log: the tree (files of the user's subordinate ids, which the user cannot remove
// outside the namespace) is removed from inside it, and no process of the namespace is left.
// Leftover trees of such a build (a daemon killed mid-build) are removed at start.
func TestBuildRootlessCancelledLeavesNothingBehind(t *testing.T) {
	if dir, ok := usernstest.InChild(); ok {
		cancelRootlessChild(t, dir)
		return
	}
	requireBuildHost(t)
	u := usernstest.User(t)
	dir := usernstest.Dir(t, u)
	out, ok := usernstest.Run(t, u, "TestBuildRootlessCancelledLeavesNothingBehind", dir, "BANGER_TEST_MIRROR="+hostMirror())
	t.Logf("as %s:\n%s", u.Username, out)
	if !ok {
		t.Fatalf("failed as %s", u.Username)
	}
}

func cancelRootlessChild(t *testing.T, dir string) {
	recipe, err := ParseRecipe([]byte(rootlessRecipe))
	if err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "work")
	images := filepath.Join(dir, "images")
	for _, d := range []string{work, images} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	report := func(u progress.Update) {
		if u.Stage == StageBootstrap && strings.Contains(u.Message, "installing") {
			once.Do(func() { t.Logf("cancelling at %q", u.Message); cancel() })
		}
	}
	_, err = Build(ctx, BuildOptions{Recipe: recipe, Mirror: hostMirror(), Dest: filepath.Join(images, "x"), WorkDir: work, Progress: report})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Build error = %v, want context.Canceled", err)
	}
	if entries, _ := os.ReadDir(images); len(entries) != 0 {
		t.Errorf("images dir holds %v after a cancelled build", entries)
	}
	entries, _ := os.ReadDir(work)
	if len(entries) != 1 || !strings.HasSuffix(entries[0].Name(), ".log") {
		t.Errorf("work dir holds %v, want only the build log", entries)
	}
	if procs := processesMentioning(dir); len(procs) > 0 {
		t.Errorf("processes still running on the build tree: %v", procs)
	}

	// A tree left by a killed build: files of subordinate ids in directories of their own.
	ns, err := buildNamespace()
	if err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(work, "image-x-tree-123")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	steps := []Step{{Kind: StepWrite, Path: "/home/user/.profile", Content: "x", Mode: 0o600}, {Kind: StepLockPassword, User: "root"}}
	if err := os.MkdirAll(filepath.Join(tree, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "etc/shadow"), []byte("root:x:1::::::\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := applyStepsIn(context.Background(), ns, tree, steps); err != nil {
		t.Fatal(err)
	}
	if out, err := ns.Command("chown", "-R", "1000:1000", filepath.Join(tree, "home")).Output(); err != nil {
		t.Fatalf("chown inside: %v %s", err, out)
	}
	if out, err := ns.Command("chmod", "0700", filepath.Join(tree, "home/user")).Output(); err != nil {
		t.Fatalf("chmod inside: %v %s", err, out)
	}
	if err := os.RemoveAll(tree); err == nil {
		t.Fatal("the user removed a tree of subordinate ids outside the namespace")
	}
	if err := RemoveLeftovers(work, time.Hour); err != nil {
		t.Fatalf("RemoveLeftovers: %v", err)
	}
	if _, err := os.Lstat(tree); !os.IsNotExist(err) {
		t.Errorf("RemoveLeftovers left %s: %v", tree, err)
	}
}
