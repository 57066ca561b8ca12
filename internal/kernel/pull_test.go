package kernel

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/banger-dev/banger/internal/debian"
	"github.com/banger-dev/banger/internal/download"
	"github.com/banger-dev/banger/internal/progress"
)

const testRelease = "6.1.0-9-cloud-amd64"

// testDeb builds a .deb (data.tar.gz) from tar entries; a nil body makes a directory.
func testDeb(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h := &tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}
		if files[n] == nil {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		}
		tw.WriteHeader(h)
		tw.Write(files[n])
	}
	tw.Close()
	data := gzipBytes(tb.Bytes())
	var ar bytes.Buffer
	ar.WriteString("!<arch>\n")
	for _, m := range []struct {
		name string
		data []byte
	}{{"debian-binary", []byte("2.0\n")}, {"data.tar.gz", data}} {
		fmt.Fprintf(&ar, "%-16s%-12d%-6d%-6d%-8o%-10d`\n", m.name, 0, 0, 0, 0o100644, len(m.data))
		ar.Write(m.data)
		if len(m.data)%2 == 1 {
			ar.WriteByte('\n')
		}
	}
	return ar.Bytes()
}

// kernelDebFiles returns the files of a fake linux-image package shaped like Debian's.
func kernelDebFiles(vmlinux []byte) map[string][]byte {
	mod := "./lib/modules/" + testRelease + "/"
	return map[string][]byte{
		"./":                                       nil,
		"./boot/":                                  nil,
		"./boot/vmlinuz-" + testRelease:            makeBzImage(lz4Legacy(vmlinux, 0), len(vmlinux), bzImageOpts{setupSects: 39}),
		"./boot/config-" + testRelease:             []byte("CONFIG_KERNEL_LZ4=y\n"),
		"./boot/System.map-" + testRelease:         []byte("not wanted"),
		mod + "kernel/drivers/virtio/virtio.ko":    fakeModule("depends="),
		mod + "kernel/fs/overlayfs/overlay.ko":     fakeModule("depends="),
		mod + "kernel/drivers/block/virtio_blk.ko": fakeModule("depends=virtio"),
		mod + "modules.builtin":                    []byte("kernel/fs/ext4/ext4.ko\n"),
		"./usr/share/doc/linux-image/copyright":    []byte("GPL-2"),
	}
}

// testMirror serves a signed Debian archive holding a kernel metapackage and the given deb.
type testMirror struct {
	srv   *httptest.Server
	key   *openpgp.Entity
	mu    sync.Mutex
	files map[string][]byte
}

func newTestMirror(t *testing.T, deb []byte) *testMirror {
	t.Helper()
	key, err := openpgp.NewEntity("test", "", "test@test.invalid", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	m := &testMirror{key: key, files: map[string][]byte{}}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		body, ok := m.files[r.URL.Path]
		m.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(body)
	}))
	t.Cleanup(m.srv.Close)

	hexSum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	meta := []byte("meta")
	concrete := "linux-image-" + testRelease
	packages := fmt.Sprintf("Package: linux-image-cloud-amd64\nVersion: 6.1.99-1\nDepends: %s (= 6.1.99-1)\n"+
		"Filename: pool/main/l/meta.deb\nSize: %d\nSHA256: %s\n\n"+
		"Package: %s\nVersion: 6.1.99-1\nDepends: kmod, linux-base (>= 4.3~)\n"+
		"Filename: pool/main/l/linux-signed-amd64/%s_6.1.99-1_amd64.deb\nSize: %d\nSHA256: %s\n",
		concrete, len(meta), hexSum(meta), concrete, concrete, len(deb), hexSum(deb))
	xzIndex := xzBytes([]byte(packages))
	release := fmt.Sprintf("Suite: oldstable\nCodename: bookworm\nDate: %s\nSHA256:\n %s %d main/binary-amd64/Packages.xz\n",
		time.Now().UTC().Format(time.RFC1123), hexSum(xzIndex), len(xzIndex))
	var signed bytes.Buffer
	w, err := clearsign.Encode(&signed, key.PrivateKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(release))
	w.Close()
	m.files["/debian/dists/bookworm/InRelease"] = signed.Bytes()
	m.files["/debian/dists/bookworm/main/binary-amd64/Packages.xz"] = xzIndex
	m.files["/debian/pool/main/l/meta.deb"] = meta
	m.files["/debian/pool/main/l/linux-signed-amd64/"+concrete+"_6.1.99-1_amd64.deb"] = deb
	return m
}

func (m *testMirror) archive(t *testing.T) *debian.Archive {
	return &debian.Archive{
		Mirror:   m.srv.URL + "/debian",
		Suite:    "bookworm",
		Keyring:  debian.NewKeyring(openpgp.EntityList{m.key}),
		Client:   &download.Client{HTTP: m.srv.Client()},
		CacheDir: filepath.Join(t.TempDir(), "cache"),
	}
}

// recorder collects progress updates.
type recorder struct {
	mu      sync.Mutex
	updates []progress.Update
}

func (r *recorder) report(u progress.Update) {
	r.mu.Lock()
	r.updates = append(r.updates, u)
	r.mu.Unlock()
}

func (r *recorder) stages() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []string
	for _, u := range r.updates {
		if len(s) == 0 || s[len(s)-1] != u.Stage {
			s = append(s, u.Stage)
		}
	}
	return strings.Join(s, " ")
}

func TestPull(t *testing.T) {
	vmlinux := fakeVmlinux(64<<10, elf.EM_X86_64)
	deb := testDeb(t, kernelDebFiles(vmlinux))
	mirror := newTestMirror(t, deb)
	entry := debian61
	parent := t.TempDir()
	dst := filepath.Join(parent, "debian-6.1")

	var rec recorder
	m, err := Pull(context.Background(), entry, mirror.archive(t), dst, rec.report)
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if got, want := rec.stages(), "kernel.resolve kernel.download kernel.extract"; got != want {
		t.Errorf("progress stages = %q; want %q", got, want)
	}
	sum := sha256.Sum256(deb)
	if m.Name != "debian-6.1" || m.Release != testRelease || m.Package != "linux-image-"+testRelease || m.Version != "6.1.99-1" ||
		m.DebSHA256 != hex.EncodeToString(sum[:]) || m.VmlinuxSize != int64(len(vmlinux)) || m.ModulesDir != "lib/modules/"+testRelease ||
		m.Dir != dst || m.Mirror == "" || m.PulledAt.IsZero() {
		t.Errorf("manifest = %+v; want the pulled package's facts", m)
	}
	if got, _ := os.ReadFile(m.VmlinuxPath()); !bytes.Equal(got, vmlinux) {
		t.Error("vmlinux in the kernel dir differs from the ELF inside the bzImage")
	}
	for _, rel := range []string{"boot/System.map-" + testRelease, "usr"} {
		if _, err := os.Stat(filepath.Join(dst, rel)); err == nil {
			t.Errorf("%s was extracted; want only vmlinuz, config and modules", rel)
		}
	}
	entries, _ := os.ReadDir(parent)
	if len(entries) != 1 {
		t.Errorf("parent dir holds %d entries; want only the kernel dir (no staging left)", len(entries))
	}

	loaded, err := Load(dst)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !loaded.PulledAt.Equal(m.PulledAt) || loaded.Release != m.Release || loaded.Dir != dst {
		t.Errorf("Load = %+v; want %+v", loaded, m)
	}
	mods, err := ModuleClosure(loaded.ModulesPath(), []string{"virtio_blk", "overlay", "ext4"})
	if err != nil || moduleNames(mods) != "virtio virtio_blk overlay" {
		t.Errorf("closure of the pulled modules = %q, %v; want virtio virtio_blk overlay", moduleNames(mods), err)
	}

	if _, err := Pull(context.Background(), entry, mirror.archive(t), dst, nil); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second Pull to the same dir: error = %v; want already exists", err)
	}
}

func TestPullFailuresLeaveNothing(t *testing.T) {
	vmlinux := fakeVmlinux(16<<10, elf.EM_X86_64)
	noModules := kernelDebFiles(vmlinux)
	for k := range noModules {
		if strings.HasPrefix(k, "./lib/") {
			delete(noModules, k)
		}
	}
	badImage := kernelDebFiles(vmlinux)
	badImage["./boot/vmlinuz-"+testRelease] = []byte("not a bzImage")
	twoImages := kernelDebFiles(vmlinux)
	twoImages["./boot/vmlinuz-6.1.0-10-cloud-amd64"] = []byte("second")

	tests := []struct {
		name    string
		deb     []byte
		mutate  func(m *testMirror)
		suite   string
		wantErr string
	}{
		{name: "corrupt bzImage", deb: testDeb(t, badImage), wantErr: "too short to be a bzImage"},
		{name: "no modules", deb: testDeb(t, noModules), wantErr: "lacks the modules"},
		{name: "two kernels", deb: testDeb(t, twoImages), wantErr: "2 boot/vmlinuz-* files"},
		{name: "tampered deb", deb: testDeb(t, kernelDebFiles(vmlinux)), wantErr: "does not match the signed index",
			mutate: func(m *testMirror) {
				for p, b := range m.files {
					if strings.HasSuffix(p, "_amd64.deb") {
						b = bytes.Clone(b)
						b[len(b)-3] ^= 1
						m.files[p] = b
					}
				}
			}},
		{name: "archive for another suite", deb: testDeb(t, kernelDebFiles(vmlinux)), suite: "trixie", wantErr: "set up for \"trixie\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mirror := newTestMirror(t, tt.deb)
			if tt.mutate != nil {
				tt.mutate(mirror)
			}
			a := mirror.archive(t)
			if tt.suite != "" {
				a.Suite = tt.suite
			}
			parent := t.TempDir()
			dst := filepath.Join(parent, "k")
			entry := debian61
			_, err := Pull(context.Background(), entry, a, dst, nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Pull error = %v; want one containing %q", err, tt.wantErr)
			}
			if entries, _ := os.ReadDir(parent); len(entries) != 0 {
				t.Fatalf("after a failed Pull the parent dir holds %v; want nothing", entries)
			}
		})
	}
}

func TestLoadRejects(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "not a pulled kernel") {
		t.Fatalf("Load(empty) = %v; want not a pulled kernel", err)
	}
	os.WriteFile(filepath.Join(dir, ManifestName), []byte("{not json"), 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Load(bad json) = %v; want corrupt", err)
	}
	m := Manifest{Name: "k", Release: "r", Vmlinuz: "boot/vmlinuz-r", Vmlinux: "vmlinux", VmlinuxSize: 10, ModulesDir: "lib/modules/r"}
	writeManifest(dir, m)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "vmlinux is missing") {
		t.Fatalf("Load(no vmlinux) = %v; want vmlinux is missing", err)
	}
	m.Vmlinux = "../../etc/passwd"
	writeManifest(dir, m)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "invalid vmlinux") {
		t.Fatalf("Load(escaping path) = %v; want invalid vmlinux", err)
	}
}

// debian61 is the catalog's debian-6.1 entry (the catalog itself is package catalog's).
var debian61 = Entry{Name: "debian-6.1", Suite: "bookworm", Package: "linux-image-cloud-amd64"}
