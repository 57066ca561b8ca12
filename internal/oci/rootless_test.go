package oci

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/banger-dev/banger/internal/ext4/ext4test"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/userns"
	"github.com/banger-dev/banger/internal/userns/usernstest"
)

// capNetRaw is a version 2 security.capability value: cap_net_raw in the permitted and
// effective sets.
const capNetRaw = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"

// rootlessLayers are two layers whose files have owners other than root, setuid and setgid
// bits, a file capability, a hard link, a FIFO, a device under /dev (skipped), a whiteout and
// an opaque directory.
func rootlessLayers(t testing.TB) [][]byte {
	base := layerTar(t,
		dir("bin/"), withMode(file("bin/sh", "#!fake"), 0o755),
		dir("usr/"), dir("usr/bin/"),
		withMode(file("usr/bin/su", "su"), 0o4755),
		owned(withMode(file("usr/bin/wall", "wall"), 0o2755), 0, 5),
		withXattr(withMode(file("usr/bin/ping", "ping"), 0o755), "security.capability", capNetRaw),
		hardlink("usr/bin/ping2", "usr/bin/ping"),
		dir("etc/"), owned(withMode(file("etc/shadow", "root:*:1::::::\n"), 0o640), 0, 42),
		owned(dir("home/"), 0, 0), owned(withMode(dir("home/user/"), 0o700), 1000, 1000),
		owned(file("home/user/notes", "n"), 1000, 1000),
		owned(withMode(e{name: "run/fifo", typ: '6', mode: 0o620}, 0o620), 65534, 65534),
		dir("dev/"), device("dev/null", '3'),
		dir("opt/"), dir("opt/old/"), file("opt/old/x", "x"), file("etc/gone", "g"),
	)
	top := layerTar(t, file("etc/.wh.gone", ""), file("opt/old/.wh..wh..opq", ""), owned(file("opt/old/new", "y"), 33, 33))
	return [][]byte{base, top}
}

// pullToImage pulls the layers from a registry of its own into a tree and makes an image of
// it (image.FromTree), as the catalog does.
func pullToImage(t *testing.T, dir string) {
	ref, _ := testRegistry(t, "test/rootless:1", "amd64", rootlessLayers(t)...)
	tree := filepath.Join(dir, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	res, err := Pull(context.Background(), PullOptions{Ref: ref, Cache: Cache{Dir: filepath.Join(dir, "cache")}, Tree: tree, Keychain: authn.NewMultiKeychain()})
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if res.Stats.DevicesSkipped != 1 || res.Stats.Hardlinks != 1 || res.Stats.Whiteouts != 1 || res.Stats.OpaqueDirs != 1 {
		t.Errorf("stats = %+v", res.Stats)
	}
	m := image.Manifest{Source: image.SourceOCI, OCI: &image.OCIOrigin{Reference: res.Reference, Digest: res.Digest, Env: []string{"PATH=/bin"}}}
	if _, err := image.FromTree(context.Background(), image.TreeOptions{Tree: tree, Dest: filepath.Join(dir, "image"), Name: "t", Manifest: m}); err != nil {
		t.Fatalf("FromTree: %v", err)
	}
}

// Pulled as an ordinary user with subordinate ids, an OCI image keeps its layers' owners,
// modes, setuid bits and file capabilities exactly as pulled by root: the tree holds them
// (on the host, as the user's subordinate ids) and the ext4 image records them identically.
// Before, untar kept owners only as root: the user's tree and image held the user's files.
func TestPullRootlessMatchesRoot(t *testing.T) {
	if dir, ok := usernstest.InChild(); ok {
		if os.Geteuid() == 0 {
			t.Fatal("the child runs as root")
		}
		pullToImage(t, dir)
		return
	}
	if _, err := userns.LookTool("debugfs"); err != nil {
		t.Skip(err)
	}
	u := usernstest.User(t)
	dir := usernstest.Dir(t, u)
	out, ok := usernstest.Run(t, u, "TestPullRootlessMatchesRoot", dir)
	t.Logf("as %s:\n%s", u.Username, out)
	if !ok {
		t.Fatalf("pull as %s failed", u.Username)
	}
	rootDir := t.TempDir()
	pullToImage(t, rootDir)

	// On the host, the user's tree is owned by the user (root inside) and its subordinate
	// ids (id k inside is the range's start + k - 1).
	uid, gid := usernstest.IDs(u)
	sub := usernstest.Subordinate(t, u.Username, uint32(uid))
	for p, want := range map[string][2]int{
		"usr/bin/su":      {uid, gid},
		"etc/shadow":      {uid, int(sub.SubGID.Start) + 41},
		"home/user/notes": {int(sub.SubUID.Start) + 999, int(sub.SubGID.Start) + 999},
		"opt/old/new":     {int(sub.SubUID.Start) + 32, int(sub.SubGID.Start) + 32},
	} {
		fi, err := os.Lstat(filepath.Join(dir, "tree", p))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Uid) != want[0] || int(st.Gid) != want[1] {
			t.Errorf("%s on the host: %d:%d, want %d:%d", p, st.Uid, st.Gid, want[0], want[1])
		}
	}

	rootList := ext4test.Listing(t, filepath.Join(rootDir, "image", image.RootfsFile), true)
	userList := ext4test.Listing(t, filepath.Join(dir, "image", image.RootfsFile), true)
	if d := ext4test.Diff(rootList, userList, 40); len(d) > 0 {
		t.Errorf("the images differ (root vs %s):\n%s", u.Username, strings.Join(d, "\n"))
	}
	for p, want := range map[string]string{
		"/usr/bin/su":      "0104755 0:0 size 2",
		"/usr/bin/wall":    "0102755 0:5 size 4",
		"/etc/shadow":      "0100640 0:42 size 15",
		"/home/user":       "0040700 1000:1000",
		"/home/user/notes": "0100644 1000:1000 size 1",
		"/run/fifo":        "0010620 65534:65534",
		"/opt/old/new":     "0100644 33:33 size 1",
	} {
		if userList[p] != want {
			t.Errorf("%s in the user's image: %q, want %q", p, userList[p], want)
		}
	}
	if !strings.Contains(userList["/usr/bin/ping"], "security.capability") {
		t.Errorf("/usr/bin/ping has no file capability: %q", userList["/usr/bin/ping"])
	}
	for _, p := range []string{"/etc/gone", "/opt/old/x", "/dev/null"} {
		if _, ok := userList[p]; ok {
			t.Errorf("%s is in the user's image", p)
		}
	}
}
