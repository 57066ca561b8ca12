package untar

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ent is one crafted tar entry.
type ent struct {
	name, link, data string
	typ              byte
	mode             int64
}

func reg(name, data string) ent { return ent{name: name, data: data, typ: tar.TypeReg, mode: 0o644} }
func dir(name string) ent       { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func sym(name, target string) ent {
	return ent{name: name, link: target, typ: tar.TypeSymlink, mode: 0o777}
}
func hard(name, target string) ent {
	return ent{name: name, link: target, typ: tar.TypeLink, mode: 0o644}
}

func tarOf(t testing.TB, es ...ent) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, x := range es {
		h := &tar.Header{Name: x.name, Linkname: x.link, Typeflag: x.typ, Mode: x.mode, ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if x.typ == tar.TypeReg {
			h.Size = int64(len(x.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("craft %q: %v", x.name, err)
		}
		tw.Write([]byte(x.data))
	}
	tw.Close()
	return b.Bytes()
}

// sandbox is an extraction root next to a directory nothing may touch.
type sandbox struct{ parent, root, outside string }

func newSandbox(t testing.TB) sandbox {
	t.Helper()
	p := t.TempDir()
	s := sandbox{parent: p, root: filepath.Join(p, "root"), outside: filepath.Join(p, "outside")}
	os.Mkdir(s.root, 0o755)
	os.Mkdir(s.outside, 0o755)
	os.WriteFile(filepath.Join(s.outside, "passwd"), []byte("root:x:0:0\n"), 0o644)
	return s
}

// check returns what changed outside the root ("" when nothing did).
func (s sandbox) check() string {
	entries, _ := os.ReadDir(s.parent)
	if len(entries) != 2 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return fmt.Sprintf("the root's parent holds %v; want only root and outside", names)
	}
	var got []string
	filepath.WalkDir(s.outside, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(s.outside, p)
		got = append(got, rel)
		return nil
	})
	if strings.Join(got, ",") != ".,passwd" {
		return fmt.Sprintf("outside the root now holds %v; want only passwd", got)
	}
	if fi, err := os.Lstat(filepath.Join(s.outside, "passwd")); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
		return fmt.Sprintf("passwd outside the root changed: %v %v", fi, err)
	}
	if b, _ := os.ReadFile(filepath.Join(s.outside, "passwd")); string(b) != "root:x:0:0\n" {
		return fmt.Sprintf("a file outside the root was changed: %q", b)
	}
	if fi, err := os.Lstat(s.outside); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		return fmt.Sprintf("the outside directory changed: %v %v", fi, err)
	}
	return ""
}

func list(t *testing.T, root string) string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if p != root {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestExtractsFilesDirsLinks(t *testing.T) {
	s := newSandbox(t)
	st, err := Dir(bytes.NewReader(tarOf(t, dir("./a/"), reg("a/f", "hello"), sym("a/l", "f"), hard("b/h", "a/f"),
		ent{name: "x/y/exec", data: "#!", typ: tar.TypeReg, mode: 0o775})), s.root, Options{HardLinks: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := list(t, s.root); got != "a a/f a/l b b/h x x/y x/y/exec" {
		t.Errorf("tree = %s", got)
	}
	if st.Files != 2 || st.Symlinks != 1 || st.Hardlinks != 1 || st.Bytes != 7 {
		t.Errorf("stats = %+v", st)
	}
	if fi, _ := os.Stat(filepath.Join(s.root, "x/y/exec")); fi.Mode().Perm() != 0o775 {
		t.Errorf("exec mode %v; want 0775 whatever the umask", fi.Mode())
	}
	a, _ := os.Stat(filepath.Join(s.root, "a/f"))
	b, _ := os.Stat(filepath.Join(s.root, "b/h"))
	if !os.SameFile(a, b) {
		t.Error("b/h is not a hard link to a/f")
	}
}

// TestRefuses feeds archives that try to leave the root or write through a link: each is
// refused with an error naming the entry and saying why, and nothing outside changes.
func TestRefuses(t *testing.T) {
	tests := []struct {
		name  string
		pre   func(s sandbox) // what is in the root before
		es    func(s sandbox) []ent
		opts  Options
		entry string
		why   string
	}{
		{"dot-dot", nil, func(sandbox) []ent { return []ent{reg("../outside/passwd", "x")} }, Options{}, "../outside/passwd", `".."`},
		{"dot-dot in the middle", nil, func(sandbox) []ent { return []ent{reg("a/../../outside/passwd", "x")} }, Options{}, "a/../../outside/passwd", `".."`},
		{"absolute", nil, func(s sandbox) []ent { return []ent{reg(s.outside+"/passwd", "x")} }, Options{}, "/", "absolute"},
		{"through an absolute symlink", nil, func(s sandbox) []ent { return []ent{sym("evil", s.outside), reg("evil/passwd", "x")} },
			Options{Symlinks: SymlinksAny}, "evil/passwd", "symlink"},
		{"through a symlink already there", func(s sandbox) { os.Symlink(s.outside, filepath.Join(s.root, "etc")) },
			func(sandbox) []ent { return []ent{reg("etc/passwd", "x")} }, Options{}, "etc/passwd", "symlink"},
		{"through a relative symlink", nil, func(sandbox) []ent { return []ent{dir("a/"), sym("a/b", ".."), reg("a/b/x", "x")} },
			Options{}, "a/b/x", "symlink"},
		{"directory through a symlink", nil, func(s sandbox) []ent { return []ent{sym("evil", s.outside), dir("evil/sub/")} },
			Options{Symlinks: SymlinksAny}, "evil/sub/", "symlink"},
		{"symlink escaping", nil, func(sandbox) []ent { return []ent{sym("a/up", "../../outside")} }, Options{Symlinks: SymlinksAbsolute}, "a/up", "escapes the root"},
		{"absolute symlink", nil, func(s sandbox) []ent { return []ent{sym("up", s.outside)} }, Options{}, "up", "absolute"},
		{"hard link out", nil, func(sandbox) []ent { return []ent{hard("pw", "../outside/passwd")} }, Options{HardLinks: true}, "pw", `".."`},
		{"hard link absolute", nil, func(s sandbox) []ent { return []ent{hard("pw", s.outside+"/passwd")} }, Options{HardLinks: true}, "pw", "absolute"},
		{"hard link through a symlink", nil, func(s sandbox) []ent { return []ent{sym("evil", s.outside), hard("pw", "evil/passwd")} },
			Options{HardLinks: true, Symlinks: SymlinksAny}, "pw", "symlink"},
		{"hard link to a directory", nil, func(sandbox) []ent { return []ent{dir("d/"), hard("l", "d")} }, Options{HardLinks: true}, "l", "directory"},
		{"hard link to nothing", nil, func(sandbox) []ent { return []ent{hard("l", "missing")} }, Options{HardLinks: true}, "l", "not in the tree"},
		{"hard links not accepted", nil, func(sandbox) []ent { return []ent{reg("a", "x"), hard("l", "a")} }, Options{}, "l", "not accepted"},
		{"device", nil, func(sandbox) []ent { return []ent{{name: "mem", typ: tar.TypeChar, mode: 0o600}} }, Options{Fifos: true}, "mem", "device"},
		{"fifo", nil, func(sandbox) []ent { return []ent{{name: "p", typ: tar.TypeFifo, mode: 0o600}} }, Options{}, "p", "FIFO"},
		{"duplicate", nil, func(sandbox) []ent { return []ent{reg("a/x", "1"), reg("a/x", "2")} }, Options{RefuseDuplicates: true}, "a/x", "duplicate"},
		{"file under a file", nil, func(sandbox) []ent { return []ent{reg("f", "x"), reg("f/g", "y")} }, Options{}, "f/g", "not a directory"},
		{"whiteout through a symlink", nil, func(s sandbox) []ent { return []ent{sym("evil", s.outside), reg("evil/.wh.passwd", "")} },
			Options{Whiteouts: true, Symlinks: SymlinksAny}, "evil/.wh.passwd", "symlink"},
		{"opaque through a symlink", nil, func(s sandbox) []ent { return []ent{sym("evil", s.outside), reg("evil/.wh..wh..opq", "")} },
			Options{Whiteouts: true, Symlinks: SymlinksAny}, "evil/.wh..wh..opq", "symlink"},
		{"long component", nil, func(sandbox) []ent { return []ent{reg("d/"+strings.Repeat("x", 256), "x")} }, Options{}, "d/xxx", "256 bytes"},
		{"unsupported type", nil, func(sandbox) []ent { return []ent{{name: "w", typ: 'Z'}} }, Options{}, "w", "unsupported entry type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSandbox(t)
			if tt.pre != nil {
				tt.pre(s)
			}
			_, err := Dir(bytes.NewReader(tarOf(t, tt.es(s)...)), s.root, tt.opts)
			if err == nil {
				t.Fatal("accepted")
			}
			var ee *EntryError
			if !errors.As(err, &ee) || !strings.Contains(err.Error(), `entry "`+tt.entry) || !strings.Contains(err.Error(), tt.why) {
				t.Errorf("error = %v\nwant an *EntryError naming %q and saying %q", err, tt.entry, tt.why)
			}
			if msg := s.check(); msg != "" {
				t.Error(msg)
			}
		})
	}
}

// A later entry replaces an earlier one of any kind, and a symlink at a file's name is
// replaced, never written through.
func TestReplaces(t *testing.T) {
	s := newSandbox(t)
	os.Symlink(filepath.Join(s.outside, "passwd"), filepath.Join(s.root, "f"))
	_, err := Dir(bytes.NewReader(tarOf(t, reg("f", "mine"), dir("d/"), reg("d/x", "1"), reg("d", "now a file"), sym("g", "f"), dir("g/"), reg("g/y", "2"))),
		s.root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if msg := s.check(); msg != "" {
		t.Fatal(msg)
	}
	for name, want := range map[string]string{"f": "mine", "d": "now a file", "g/y": "2"} {
		if b, err := os.ReadFile(filepath.Join(s.root, name)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", name, b, err, want)
		}
	}
}

func TestLimits(t *testing.T) {
	for _, tt := range []struct {
		limits Limits
		entry  string
		limit  string
	}{
		{Limits{Bytes: 10}, "c", "total size"},
		{Limits{EntryBytes: 5}, "c", "entry size"},
		{Limits{Entries: 3}, "d/", "entry count"},
	} {
		s := newSandbox(t)
		_, err := Dir(bytes.NewReader(tarOf(t, reg("a", "1234"), reg("b", "1234"), reg("c", "123456"), dir("d/"))), s.root, Options{Limits: tt.limits})
		var le *LimitError
		if !errors.As(err, &le) || le.Entry != tt.entry || le.Limit != tt.limit || !strings.Contains(err.Error(), tt.entry) {
			t.Errorf("%+v: err = %v; want a LimitError on %q for %s", tt.limits, err, tt.entry, tt.limit)
		}
		if _, err := os.Stat(filepath.Join(s.root, "c")); tt.limit != "entry count" && err == nil {
			t.Errorf("%+v: the entry over the limit was written", tt.limits)
		}
	}
}

// sparseTar is a PAX GNU sparse 1.0 entry of size bytes that is all hole: a 2 KiB archive.
func sparseTar(name string, size int64) []byte {
	var out bytes.Buffer
	block := func(name string, typ byte, size int) {
		var h [512]byte
		copy(h[0:], name)
		copy(h[100:], "0000644\x00")
		copy(h[108:], "0000000\x00")
		copy(h[116:], "0000000\x00")
		copy(h[124:], fmt.Sprintf("%011o\x00", size))
		copy(h[136:], fmt.Sprintf("%011o\x00", 1700000000))
		h[156] = typ
		copy(h[257:], "ustar\x0000")
		copy(h[148:], "        ")
		sum := 0
		for _, c := range h {
			sum += int(c)
		}
		copy(h[148:], fmt.Sprintf("%06o\x00 ", sum))
		out.Write(h[:])
	}
	pad := func() {
		if n := out.Len() % 512; n != 0 {
			out.Write(make([]byte, 512-n))
		}
	}
	rec := func(k, v string) string {
		s := " " + k + "=" + v + "\n"
		n := len(s)
		for len(fmt.Sprint(n+len(fmt.Sprint(n)))) != len(fmt.Sprint(n)) {
			n++
		}
		n += len(fmt.Sprint(n))
		return fmt.Sprint(n) + s
	}
	pax := rec("GNU.sparse.major", "1") + rec("GNU.sparse.minor", "0") + rec("GNU.sparse.name", name) + rec("GNU.sparse.realsize", fmt.Sprint(size))
	block("PaxHeaders/"+name, 'x', len(pax))
	out.WriteString(pax)
	pad()
	block("GNUSparseFile.0/"+name, '0', 513)
	out.WriteString("1\n" + fmt.Sprint(size-1) + "\n1\n") // one data byte, at the very end
	pad()
	out.WriteString("z")
	pad()
	out.Write(make([]byte, 1024))
	return out.Bytes()
}

// A sparse entry is written sparse: a 1 GiB entry takes a few blocks on disk, not 1 GiB.
func TestSparseEntryStaysSparse(t *testing.T) {
	s := newSandbox(t)
	const size = 1 << 30
	st, err := Dir(bytes.NewReader(sparseTar("big", size)), s.root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(s.root, "big"))
	if err != nil || fi.Size() != size || st.Bytes != size {
		t.Fatalf("big: %v %v, stats %+v", fi, err, st)
	}
	if blocks := fi.Sys().(*syscall.Stat_t).Blocks; blocks*512 > 1<<20 {
		t.Errorf("big takes %d bytes on disk; want it sparse", blocks*512)
	}
	f, _ := os.Open(filepath.Join(s.root, "big"))
	b := make([]byte, 2)
	f.ReadAt(b, size-2)
	f.Close()
	if string(b) != "\x00z" {
		t.Errorf("tail = %q", b)
	}
	// The limit counts the size it expands to.
	_, err = Dir(bytes.NewReader(sparseTar("big2", size)), t.TempDir(), Options{Limits: Limits{Bytes: size / 2}})
	if le := (*LimitError)(nil); !errors.As(err, &le) || le.Entry != "big2" {
		t.Errorf("err = %v; want a LimitError naming big2", err)
	}
}

func TestWhiteouts(t *testing.T) {
	s := newSandbox(t)
	x, err := New(s.root, Options{Whiteouts: true})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if err := x.Extract(bytes.NewReader(tarOf(t, reg("a/old", "o"), reg("a/sub/deep", "d"), reg("b/gone", "g"), reg("keep", "k")))); err != nil {
		t.Fatal(err)
	}
	if err := x.Extract(bytes.NewReader(tarOf(t, reg("a/new", "n"), reg("a/.wh..wh..opq", ""), reg("b/.wh.gone", ""), reg(".wh.missing", "")))); err != nil {
		t.Fatal(err)
	}
	if got := list(t, s.root); got != "a a/new b keep" {
		t.Errorf("tree = %s", got)
	}
	if st := x.Stats(); st.Whiteouts != 2 || st.OpaqueDirs != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestCleanName(t *testing.T) {
	for name, ok := range map[string]bool{"a/b": true, "./a/": true, ".": true, "/": true, "//": true, "": false, "/a": false, "/.": false, "a/../b": false, "..": false, "a\x00b": false} {
		if _, err := CleanName(name); (err == nil) != ok {
			t.Errorf("CleanName(%q) = %v; want ok %v", name, err, ok)
		}
	}
}

func TestCheckSymlink(t *testing.T) {
	for _, tt := range []struct {
		rel, target string
		rule        SymlinkRule
		ok          bool
	}{
		{"usr/lib/x", "../../bin/y", SymlinksInside, true},
		{"usr/lib/x", "../../../bin/y", SymlinksInside, false},
		{"lib64", "usr/lib64", SymlinksInside, true},
		{"x", "..", SymlinksInside, false},
		{"a/b/c", "./../d/../..", SymlinksInside, true},
		{"a/b/c", "/absolute/anything", SymlinksAbsolute, true},
		{"a/b/c", "/absolute/anything", SymlinksInside, false},
		{"a", "../../anything", SymlinksAny, true},
		{"a", "", SymlinksAny, false},
	} {
		if err := CheckSymlink(tt.rel, tt.target, tt.rule); (err == nil) != tt.ok {
			t.Errorf("CheckSymlink(%q, %q, %d) = %v; want ok %v", tt.rel, tt.target, tt.rule, err, tt.ok)
		}
	}
}
