package oci

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// e is one crafted tar entry.
type e struct {
	name, link, data string
	typ              byte
	mode             int64
	uid, gid         int
	xattrs           map[string]string
}

func file(name, data string) e { return e{name: name, data: data, typ: tar.TypeReg, mode: 0o644} }
func dir(name string) e        { return e{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) e {
	return e{name: name, link: target, typ: tar.TypeSymlink, mode: 0o777}
}
func hardlink(name, target string) e {
	return e{name: name, link: target, typ: tar.TypeLink, mode: 0o644}
}
func device(name string, typ byte) e { return e{name: name, typ: typ, mode: 0o600} }
func withMode(x e, mode int64) e     { x.mode = mode; return x }
func owned(x e, uid, gid int) e      { x.uid, x.gid = uid, gid; return x }
func withXattr(x e, k, v string) e   { x.xattrs = map[string]string{k: v}; return x }
func layerTar(t testing.TB, es ...e) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, x := range es {
		h := &tar.Header{Name: x.name, Linkname: x.link, Typeflag: x.typ, Mode: x.mode, Uid: x.uid, Gid: x.gid,
			Size: int64(len(x.data)), ModTime: mtime, Format: tar.FormatPAX}
		if x.typ != tar.TypeReg {
			h.Size = 0
		}
		if x.typ == tar.TypeChar || x.typ == tar.TypeBlock {
			h.Devmajor, h.Devminor = 1, 3
		}
		for k, v := range x.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("craft %q: %v", x.name, err)
		}
		if h.Size > 0 {
			tw.Write([]byte(x.data))
		}
	}
	tw.Close()
	return b.Bytes()
}

// sandbox is a staging tree next to a sentinel directory that no layer may touch.
type sandbox struct {
	parent, tree, outside string
}

func newSandbox(t testing.TB) sandbox {
	t.Helper()
	p := t.TempDir()
	s := sandbox{parent: p, tree: filepath.Join(p, "tree"), outside: filepath.Join(p, "outside")}
	os.Mkdir(s.tree, 0o755)
	os.Mkdir(s.outside, 0o755)
	os.WriteFile(filepath.Join(s.outside, "passwd"), []byte("root:x:0:0\n"), 0o644)
	return s
}

// untouched fails the test if anything outside the tree changed.
func (s sandbox) untouched(t testing.TB) {
	t.Helper()
	entries, _ := os.ReadDir(s.parent)
	if len(entries) != 2 {
		t.Errorf("the staging dir's parent holds %v; want only tree and outside", entries)
	}
	var got []string
	filepath.WalkDir(s.outside, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(s.outside, p)
		got = append(got, rel)
		return nil
	})
	if strings.Join(got, ",") != ".,passwd" {
		t.Errorf("outside the staging dir now holds %v; want only passwd", got)
	}
	if b, _ := os.ReadFile(filepath.Join(s.outside, "passwd")); string(b) != "root:x:0:0\n" {
		t.Errorf("a file outside the staging dir was changed: %q", b)
	}
}

func apply(t *testing.T, tree string, layers ...[]byte) (*Flattener, error) {
	t.Helper()
	f, err := NewFlattener(tree, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		if err := f.Apply(bytes.NewReader(l), "sha256:layer"+string(rune('0'+i))); err != nil {
			return f, err
		}
	}
	return f, f.Finish()
}

func listTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, rel)
		return nil
	})
	sort.Strings(out)
	return out
}

func TestFlattenWhiteoutsAndOpaqueDirs(t *testing.T) {
	s := newSandbox(t)
	base := layerTar(t, dir("etc/"), file("etc/keep", "k"), file("etc/gone", "g"), dir("etc/sub/"), file("etc/sub/deep", "d"),
		dir("opq/"), file("opq/old", "o"), dir("opq/olddir/"), file("opq/olddir/x", "x"), dir("opq/mixed/"), file("opq/mixed/lower", "l"),
		file("replaced-by-dir", "f"), dir("replaced-by-file/"), file("replaced-by-file/child", "c"))
	top := layerTar(t,
		file("etc/.wh.gone", ""), file("etc/.wh.sub", ""), file("etc/.wh.never-existed", ""), file("nodir/.wh.x", ""),
		// This layer's own entries in the opaque dir survive, before or after the marker.
		file("opq/mixed/upper", "u"), file("opq/.wh..wh..opq", ""), file("opq/new", "n"),
		dir("replaced-by-dir/"), file("replaced-by-dir/inside", "i"), file("replaced-by-file", "now a file"),
		file(".wh..wh.plnk/123", ""))
	f, err := apply(t, s.tree, base, top)
	if err != nil {
		t.Fatalf("flatten: %v", err)
	}
	want := []string{"etc", "etc/keep", "opq", "opq/mixed", "opq/mixed/upper", "opq/new", "replaced-by-dir", "replaced-by-dir/inside", "replaced-by-file"}
	if got := listTree(t, s.tree); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("tree = %v\nwant  %v", got, want)
	}
	if st := f.Stats(); st.Whiteouts != 3 || st.OpaqueDirs != 1 {
		t.Errorf("stats = %+v; want 3 whiteouts applied (one under a missing dir is nothing), 1 opaque dir", st)
	}
	s.untouched(t)
}

func TestFlattenKeepsMetadata(t *testing.T) {
	s := newSandbox(t)
	layer := layerTar(t,
		dir("usr/"), dir("usr/bin/"),
		owned(withMode(file("usr/bin/su", "suid"), 0o4755), 0, 0),
		withMode(dir("srv/"), 0o2775),
		owned(file("home/user/notes", "n"), 1000, 1001),
		hardlink("usr/bin/su-again", "usr/bin/su"),
		symlink("usr/bin/sh", "dash"),
		symlink("etc/localtime", "/usr/share/zoneinfo/Etc/UTC"),
		withXattr(file("usr/bin/ping", "p"), "user.banger.test", "yes"),
		withMode(dir("tmp/"), 0o1777),
		e{name: "run/fifo", typ: tar.TypeFifo, mode: 0o640},
		device("dev/null", tar.TypeChar),
	)
	var gz, zs bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(layer)
	zw.Close()
	ze, _ := zstd.NewWriter(&zs)
	ze.Write(layerTar(t, file("from-zstd", "z")))
	ze.Close()
	f, err := apply(t, s.tree, gz.Bytes(), zs.Bytes())
	if err != nil {
		t.Fatalf("flatten: %v", err)
	}
	stat := func(rel string) (os.FileInfo, *syscall.Stat_t) {
		fi, err := os.Lstat(filepath.Join(s.tree, rel))
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		return fi, fi.Sys().(*syscall.Stat_t)
	}
	if fi, _ := stat("usr/bin/su"); fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("setuid file mode = %v; want setuid 0755", fi.Mode())
	}
	if fi, _ := stat("srv"); fi.Mode()&os.ModeSetgid == 0 {
		t.Errorf("setgid dir mode = %v", fi.Mode())
	}
	if fi, _ := stat("tmp"); fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("sticky dir mode = %v", fi.Mode())
	}
	_, a := stat("usr/bin/su")
	_, b := stat("usr/bin/su-again")
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link: inodes %d and %d, nlink %d; want one inode with 2 links", a.Ino, b.Ino, a.Nlink)
	}
	if l, _ := os.Readlink(filepath.Join(s.tree, "etc/localtime")); l != "/usr/share/zoneinfo/Etc/UTC" {
		t.Errorf("absolute symlink = %q; kept as it is (the guest resolves it in its own root)", l)
	}
	if fi, _ := stat("run/fifo"); fi.Mode()&os.ModeNamedPipe == 0 || fi.Mode().Perm() != 0o640 {
		t.Errorf("fifo mode = %v", fi.Mode())
	}
	if fi, _ := stat("usr/bin/ping"); fi.ModTime().Year() != 2024 {
		t.Errorf("mtime = %v; want the layer's", fi.ModTime())
	}
	if fi, _ := stat("usr/bin"); fi.ModTime().Year() != 2024 {
		t.Errorf("directory mtime = %v; want the layer's even after files were written into it", fi.ModTime())
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(s.tree, "usr/bin/ping"), "user.banger.test", buf); err != nil || string(buf[:n]) != "yes" {
		t.Errorf("xattr = %q, %v; want yes", buf[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(s.tree, "dev/null")); err == nil {
		t.Error("a device node under /dev was created on the host")
	}
	if st := f.Stats(); st.DevicesSkipped != 1 || st.Hardlinks != 1 || st.Symlinks != 2 {
		t.Errorf("stats = %+v", st)
	}
	if os.Geteuid() == 0 {
		if _, st := stat("home/user/notes"); st.Uid != 1000 || st.Gid != 1001 {
			t.Errorf("owner = %d:%d; want 1000:1001", st.Uid, st.Gid)
		}
	} else {
		t.Log("not root: ownership is not checked")
	}
	s.untouched(t)
}

func TestFlattenOddNames(t *testing.T) {
	s := newSandbox(t)
	odd := []string{"with space", "new\nline", "ünïcödé-名前", "-leading-dash", strings.Repeat("n", 255), "back\\slash", "*?[glob]"}
	var es []e
	for _, n := range odd {
		es = append(es, file("odd/"+n, n))
	}
	if _, err := apply(t, s.tree, layerTar(t, es...)); err != nil {
		t.Fatalf("odd but valid names: %v", err)
	}
	for _, n := range odd {
		if b, err := os.ReadFile(filepath.Join(s.tree, "odd", n)); err != nil || string(b) != n {
			t.Errorf("%q: %q, %v", n, b, err)
		}
	}
	s.untouched(t)
}

// TestFlattenRejectsAttacks feeds layers that try to write outside the tree or smuggle in what
// an image must not have: each is rejected with an error naming the entry, and nothing
// outside the staging dir changes.
func TestFlattenRejectsAttacks(t *testing.T) {
	huge := strings.Repeat("x", 300)
	tests := []struct {
		name   string
		layers func(s sandbox) [][]e
		entry  string // the entry the error must name
		why    string
	}{
		{"tar-slip", func(sandbox) [][]e { return [][]e{{file("../../etc/passwd", "pwned")}} }, "../../etc/passwd", `".."`},
		{"tar-slip in the middle", func(sandbox) [][]e { return [][]e{{file("etc/../../outside/passwd", "pwned")}} }, "etc/../../outside/passwd", `".."`},
		{"absolute path", func(sandbox) [][]e { return [][]e{{file("/etc/passwd", "pwned")}} }, "/etc/passwd", "absolute"},
		{"write through an absolute symlink", func(s sandbox) [][]e {
			return [][]e{{symlink("evil", s.outside), file("evil/passwd", "pwned")}}
		}, "evil/passwd", "symlink"},
		{"write through a symlink of a lower layer", func(s sandbox) [][]e {
			return [][]e{{symlink("etc", s.outside)}, {file("etc/passwd", "pwned")}}
		}, "etc/passwd", "symlink"},
		{"write through a relative symlink", func(s sandbox) [][]e {
			return [][]e{{dir("a/"), symlink("a/b", ".."), file("a/b/x", "x")}}
		}, "a/b/x", "symlink"},
		{"relative symlink escaping the root", func(sandbox) [][]e { return [][]e{{symlink("etc/up", "../../outside")}} }, "etc/up", "escapes the root"},
		{"whiteout through a symlink", func(s sandbox) [][]e {
			return [][]e{{symlink("evil", s.outside)}, {file("evil/.wh.passwd", "")}}
		}, "evil/.wh.passwd", "symlink"},
		{"opaque dir through a symlink", func(s sandbox) [][]e {
			return [][]e{{symlink("evil", s.outside)}, {file("evil/.wh..wh..opq", "")}}
		}, "evil/.wh..wh..opq", "symlink"},
		{"hard link out of the tree", func(sandbox) [][]e { return [][]e{{hardlink("pw", "../../outside/passwd")}} }, "pw", `".."`},
		{"hard link to an absolute path", func(s sandbox) [][]e { return [][]e{{hardlink("pw", filepath.Join(s.outside, "passwd"))}} }, "pw", "absolute"},
		{"hard link through a symlink", func(s sandbox) [][]e {
			return [][]e{{symlink("evil", s.outside), hardlink("pw", "evil/passwd")}}
		}, "pw", "symlink"},
		{"hard link to a directory", func(sandbox) [][]e { return [][]e{{dir("d/"), hardlink("l", "d")}} }, "l", "directory"},
		{"hard link to nothing", func(sandbox) [][]e { return [][]e{{hardlink("l", "missing")}} }, "l", "not in the tree"},
		{"block device outside /dev", func(sandbox) [][]e { return [][]e{{device("disk", tar.TypeBlock)}} }, "disk", "device node outside /dev"},
		{"char device outside /dev", func(sandbox) [][]e { return [][]e{{device("usr/mem", tar.TypeChar)}} }, "usr/mem", "device node outside /dev"},
		{"name component too long for ext4", func(sandbox) [][]e { return [][]e{{file("d/"+huge, "x")}} }, ("d/" + huge)[:100] + "… (302 bytes)", "300 bytes"},
		{"path too long", func(sandbox) [][]e { return [][]e{{file(strings.Repeat("abcdefgh/", 500)+"f", "x")}} }, "abcdefgh/abcdefgh", "the limit is 4095"},
		{"file under a file", func(sandbox) [][]e { return [][]e{{file("f", "x"), file("f/g", "y")}} }, "f/g", "not a directory"},
		{"unsupported type", func(sandbox) [][]e { return [][]e{{e{name: "weird", typ: 'Z', mode: 0o644}}} }, "weird", "unsupported entry type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSandbox(t)
			var layers [][]byte
			for _, es := range tt.layers(s) {
				layers = append(layers, layerTar(t, es...))
			}
			_, err := apply(t, s.tree, layers...)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), "entry \""+tt.entry) || !strings.Contains(err.Error(), tt.why) {
				t.Errorf("error = %v\nwant one naming entry %q and saying %q", err, tt.entry, tt.why)
			}
			s.untouched(t)
		})
	}
}
