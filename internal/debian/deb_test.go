package debian

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/untar"
)

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// listTree returns "path" for files, "path/" for dirs and "path -> target" for symlinks.
func listTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case rel == ".":
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out = append(out, rel+" -> "+target)
		case fi.IsDir():
			out = append(out, rel+"/")
		default:
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

var sampleEntries = []tarEntry{
	{name: "./", typ: tar.TypeDir},
	{name: "./boot/", typ: tar.TypeDir},
	{name: "./boot/vmlinuz-6.1.0-test", body: "kernel", mode: 0o600},
	{name: "./boot/config-6.1.0-test", body: "CONFIG_X=y\n"},
	{name: "./lib/modules/6.1.0-test/kernel/a.ko", body: "module a"},
	{name: "./lib/modules/6.1.0-test/build", typ: tar.TypeSymlink, linkname: "kernel"},
	{name: "./lib/modules/6.1.0-test/kernel/b.ko", typ: tar.TypeLink, linkname: "./lib/modules/6.1.0-test/kernel/a.ko"},
	{name: "./dev/null", typ: tar.TypeChar},
	{name: "./usr/share/doc/test/copyright", body: "GPL"},
	{name: "./usr/share/doc/test/link", typ: tar.TypeSymlink, linkname: "/usr/share/common-licenses/GPL"},
}

func TestExtractDebCodecs(t *testing.T) {
	keep := func(p string) bool { return strings.HasPrefix(p, "boot/") || strings.HasPrefix(p, "lib/") }
	want := []string{
		"boot/", "boot/config-6.1.0-test", "boot/vmlinuz-6.1.0-test",
		"lib/", "lib/modules/", "lib/modules/6.1.0-test/", "lib/modules/6.1.0-test/build -> kernel",
		"lib/modules/6.1.0-test/kernel/", "lib/modules/6.1.0-test/kernel/a.ko", "lib/modules/6.1.0-test/kernel/b.ko",
	}
	for _, codec := range []string{"xz", "zst", "gz", ""} {
		t.Run("data.tar."+codec, func(t *testing.T) {
			deb := writeTemp(t, "p.deb", buildDeb(t, codec, sampleEntries...))
			dst := filepath.Join(t.TempDir(), "out")
			if err := ExtractDeb(deb, dst, keep); err != nil {
				t.Fatalf("ExtractDeb: %v", err)
			}
			if got := listTree(t, dst); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("extracted tree:\n got %q\nwant %q", got, want)
			}
			b, err := os.ReadFile(filepath.Join(dst, "lib/modules/6.1.0-test/kernel/b.ko"))
			if err != nil || string(b) != "module a" {
				t.Fatalf("hard link content = %q, %v; want %q", b, err, "module a")
			}
			fi, err := os.Stat(filepath.Join(dst, "boot/vmlinuz-6.1.0-test"))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("vmlinuz mode = %v, %v; want 0600", fi.Mode(), err)
			}
		})
	}
}

func TestExtractDebNilKeepExtractsAllButAbsoluteSymlinksFail(t *testing.T) {
	// With keep == nil the absolute doc symlink is kept too, and must be refused.
	deb := writeTemp(t, "p.deb", buildDeb(t, "xz", sampleEntries...))
	err := ExtractDeb(deb, t.TempDir(), nil)
	if err == nil || !strings.Contains(err.Error(), "./usr/share/doc/test/link") || !strings.Contains(err.Error(), "absolute") {
		t.Fatalf("ExtractDeb(keep=nil) error = %v; want a refusal naming the absolute symlink entry", err)
	}
}

func TestExtractDebRefusesEscapes(t *testing.T) {
	all := func(string) bool { return true }
	onlyBoot := func(p string) bool { return strings.HasPrefix(p, "boot/") }
	tests := []struct {
		name    string
		keep    func(string) bool
		entries []tarEntry
		wantErr string // substring; the entry name must appear too
		entry   string
	}{
		{"dotdot path", all, []tarEntry{{name: "../evil", body: "x"}}, `".."`, "../evil"},
		{"dotdot inside path", all, []tarEntry{{name: "./boot/../../evil", body: "x"}}, `".."`, "./boot/../../evil"},
		{"dotdot even when not kept", onlyBoot, []tarEntry{{name: "./usr/../../evil", body: "x"}}, `".."`, "./usr/../../evil"},
		{"absolute path", all, []tarEntry{{name: "/etc/passwd", body: "x"}}, "absolute path", "/etc/passwd"},
		{"symlink climbing out", all, []tarEntry{{name: "./boot/l", typ: tar.TypeSymlink, linkname: "../../etc"}}, "escapes", "./boot/l"},
		{"absolute symlink", all, []tarEntry{{name: "./l", typ: tar.TypeSymlink, linkname: "/etc/passwd"}}, "absolute", "./l"},
		{"write through symlinked dir", all, []tarEntry{
			{name: "./sub/", typ: tar.TypeDir},
			{name: "./d", typ: tar.TypeSymlink, linkname: "sub"},
			{name: "./d/f", body: "x"},
		}, "symlink", "./d/f"},
		{"dot symlink then parent link", all, []tarEntry{
			{name: "./x", typ: tar.TypeSymlink, linkname: "."},
			{name: "./x/y", typ: tar.TypeSymlink, linkname: ".."},
		}, "symlink", "./x/y"},
		{"hard link outside", all, []tarEntry{{name: "./h", typ: tar.TypeLink, linkname: "../../etc/passwd"}}, "hard link", "./h"},
		{"hard link to missing entry", all, []tarEntry{{name: "./h", typ: tar.TypeLink, linkname: "./nothing"}}, "hard link", "./h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			dst := filepath.Join(parent, "out")
			deb := writeTemp(t, "p.deb", buildDeb(t, "gz", tt.entries...))
			err := ExtractDeb(deb, dst, tt.keep)
			if err == nil {
				t.Fatalf("ExtractDeb succeeded; want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.entry) {
				t.Fatalf("error = %q; want it to contain %q and name entry %q", err, tt.wantErr, tt.entry)
			}
			if _, err := os.Lstat(filepath.Join(parent, "evil")); err == nil {
				t.Fatal("a file was written outside the destination")
			}
		})
	}
}

func TestExtractDebRejectsBadContainers(t *testing.T) {
	good := buildDeb(t, "xz", tarEntry{name: "./f", body: "x"})
	dataOnly := buildTar(t, tarEntry{name: "./f", body: strings.Repeat("x", 2000)})
	xzData := compress(t, "xz", dataOnly)
	tests := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"empty file", nil, "not an ar archive"},
		{"not ar", []byte("hello world, not an archive"), "not an ar archive"},
		{"truncated member", good[:len(good)-10], "runs past the end"},
		{"truncated header", good[:8+30], "truncated ar header"},
		{"bad size field", bytes.Replace(buildAr(arFile{"debian-binary", []byte("2.0\n")}), []byte("4         `"), []byte("x4        `"), 1), "bad size field"},
		{"bad terminator", bytes.Replace(buildAr(arFile{"debian-binary", []byte("2.0\n")}), []byte("`\n"), []byte("!!"), 1), "bad terminator"},
		{"first member not debian-binary", buildAr(arFile{"data.tar", dataOnly}), "first ar member is not debian-binary"},
		{"format 3", buildAr(arFile{"debian-binary", []byte("3.0\n")}, arFile{"data.tar", dataOnly}), "format"},
		{"no data member", buildAr(arFile{"debian-binary", []byte("2.0\n")}), "no data.tar"},
		{"bzip2 data", buildAr(arFile{"debian-binary", []byte("2.0\n")}, arFile{"data.tar.bz2", []byte("BZh9")}), "unsupported compression"},
		{"corrupt xz", buildAr(arFile{"debian-binary", []byte("2.0\n")}, arFile{"data.tar.xz", []byte("not xz at all")}), "data.tar.xz"},
		{"truncated tar", buildAr(arFile{"debian-binary", []byte("2.0\n")}, arFile{"data.tar", dataOnly[:1000]}), "truncated"},
		{"truncated xz stream", buildAr(arFile{"debian-binary", []byte("2.0\n")}, arFile{"data.tar.xz", xzData[:len(xzData)-8]}), "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			deb := writeTemp(t, "p.deb", tt.data)
			err := ExtractDeb(deb, t.TempDir(), nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ExtractDeb error = %v; want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestReadArOddSizesAndPadding(t *testing.T) {
	data := buildAr(arFile{"a", []byte("odd")}, arFile{"bb", []byte("even")}, arFile{"c", []byte("x")})
	members, err := readAr(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("readAr: %v", err)
	}
	var got []string
	for _, m := range members {
		got = append(got, m.Name+"="+string(data[m.Offset:m.Offset+m.Size]))
	}
	want := "a=odd bb=even c=x"
	if strings.Join(got, " ") != want {
		t.Fatalf("members = %q; want %q", strings.Join(got, " "), want)
	}
}

// A package whose data is larger than the limits is refused, naming the entry.
func TestExtractDebLimits(t *testing.T) {
	saved := debLimits
	t.Cleanup(func() { debLimits = saved })
	debLimits = untar.Limits{Bytes: 10}
	deb := writeTemp(t, "p.deb", buildDeb(t, "gz", tarEntry{name: "./a", body: "12345678"}, tarEntry{name: "./b", body: "12345678"}))
	err := ExtractDeb(deb, t.TempDir(), nil)
	var le *untar.LimitError
	if !errors.As(err, &le) || le.Entry != "./b" {
		t.Fatalf("err = %v; want a LimitError naming ./b", err)
	}
}
