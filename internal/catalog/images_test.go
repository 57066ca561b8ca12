package catalog

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/banger-dev/banger/internal/catalog/catalogfile"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/store"
)

// fakeVersion stages an image directory with a made-up rootfs and publishes it as the image's
// new version, the way a build or pull ends.
func fakeVersion(t *testing.T, s *Service, name, content string) image.Manifest {
	t.Helper()
	return fakeVersionOf(t, s, image.Manifest{Name: name}, content, "recipe:test")
}

// fakeVersionOf is fakeVersion with the manifest's other fields (a recipe and its hash, say)
// and the source given.
func fakeVersionOf(t *testing.T, s *Service, m image.Manifest, content, source string) image.Manifest {
	t.Helper()
	staged, err := s.Images.stagingPath(m.Name, "build")
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(staged, 0o755)
	os.WriteFile(filepath.Join(staged, image.RootfsFile), []byte(content), 0o444)
	sum := sha256.Sum256([]byte(content))
	m.Format, m.RootfsSHA256, m.RootfsSize = 1, hex.EncodeToString(sum[:]), int64(len(content))
	image.WriteManifest(staged, m)
	m, err = s.Images.publish(context.Background(), m, staged, source)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func addVM(t *testing.T, st *store.Store, name, img, kernel string) {
	t.Helper()
	if err := st.CreateVM(context.Background(), &store.VM{Name: name, State: "stopped", Image: img, Kernel: kernel, VMM: "qemu", Accel: "tcg", Dir: "/d"}); err != nil {
		t.Fatal(err)
	}
}

func versionsOf(t *testing.T, s *Service, name string) []string {
	t.Helper()
	info, err := s.Images.Show(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, v := range info.Versions {
		out = append(out, v.Version)
	}
	return out
}

func TestVersionsStayWhileVMsUseThem(t *testing.T) {
	s, _, st := newService(t)
	ctx := context.Background()
	v1 := fakeVersion(t, s, "img", "one")
	// A VM created from v1 (Image hands it out, the VM records name@version).
	got, err := s.Image(ctx, "img", nil)
	if err != nil || got.Ref() != "img@"+v1.Version() {
		t.Fatalf("Image = %+v, %v", got, err)
	}
	addVM(t, st, "vm1", got.Ref(), "k")
	s.Release(got) // the VM record protects it now

	v2 := fakeVersion(t, s, "img", "two")
	if vs := versionsOf(t, s, "img"); len(vs) != 2 {
		t.Fatalf("versions = %v; want v1 (used by vm1) and v2 (current)", vs)
	}
	// The VM still gets exactly its version, and the name resolves to the new one.
	if img, err := s.Image(ctx, "img@"+v1.Version(), nil); err != nil || img.Version != v1.Version() {
		t.Errorf("Image(pinned) = %+v, %v", img, err)
	}
	if img, _ := s.Image(ctx, "img", nil); img.Version != v2.Version() {
		t.Errorf("Image(name) = %s; want the new version %s", img.Version, v2.Version())
	} else {
		s.Release(img)
	}

	// v3 replaces v2, which no VM uses: collected at once. v1 stays while vm1 exists.
	fakeVersion(t, s, "img", "three")
	if vs := versionsOf(t, s, "img"); len(vs) != 2 {
		t.Errorf("versions after v3 = %v; want v1 and v3", vs)
	}
	if _, err := os.Stat(filepath.Join(s.Images.imageDir("img"), v2.Version())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("v2's directory is still there: %v", err)
	}
	// Deleting the image is refused while vm1 exists.
	if _, err := s.Images.Delete(ctx, "img"); !errors.Is(err, failure.Conflict) || !strings.Contains(err.Error(), "used by VM vm1") {
		t.Errorf("DeleteImage with a VM on it = %v", err)
	}
	st.DeleteVM(ctx, mustVM(t, st, "vm1").ID)
	removed, err := s.Images.CollectVersions(ctx, false)
	if err != nil || len(removed) != 1 || removed[0].Version != v1.Version() {
		t.Errorf("CollectVersions after the VM is gone = %+v, %v; want v1", removed, err)
	}
	if _, err := s.Image(ctx, "img@"+v1.Version(), nil); !errors.Is(err, failure.NotFound) {
		t.Errorf("a collected version resolves: %v", err)
	}
	if _, err := s.Images.Delete(ctx, "img"); err != nil {
		t.Errorf("DeleteImage: %v", err)
	}
	if _, err := os.Stat(s.Images.imageDir("img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("image directory left after delete: %v", err)
	}
}

func mustVM(t *testing.T, st *store.Store, name string) store.VM {
	vm, err := st.GetVM(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

func TestLeasedVersionIsNotCollected(t *testing.T) {
	s, _, _ := newService(t)
	v1 := fakeVersion(t, s, "img", "one")
	if _, err := s.Image(context.Background(), "img", nil); err != nil { // a create is under way
		t.Fatal(err)
	}
	fakeVersion(t, s, "img", "two")
	if vs := versionsOf(t, s, "img"); len(vs) != 2 || !strings.Contains(strings.Join(vs, " "), v1.Version()) {
		t.Errorf("versions = %v; the version just handed out to a VM being created must stay", vs)
	}
}

func TestKernelInUseIsNotDeleted(t *testing.T) {
	s, l, st := newService(t)
	ctx := context.Background()
	dir := filepath.Join(l.KernelsDir(), "k")
	os.MkdirAll(dir, 0o755)
	st.PutKernel(ctx, &store.Kernel{Name: "k", Release: "6.1", Dir: dir})
	addVM(t, st, "a", "img@x", "k")
	if _, err := s.Kernels.Delete(ctx, "k"); !errors.Is(err, failure.Conflict) || !strings.Contains(err.Error(), "used by VM a") {
		t.Errorf("DeleteKernel with a VM on it = %v", err)
	}
	st.DeleteVM(ctx, mustVM(t, st, "a").ID)
	if _, err := s.Kernels.Delete(ctx, "k"); err != nil {
		t.Errorf("DeleteKernel: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("kernel dir left: %v", err)
	}
}

func TestCleanupRemovesWhatInterruptedWorkLeft(t *testing.T) {
	s, l, _ := newService(t)
	keep := fakeVersion(t, s, "img", "kept")
	left := []string{
		filepath.Join(l.ImagesDir(), "img", ".register-1234"),
		filepath.Join(l.ImagesDir(), "img", ".pull-1234"),
		filepath.Join(l.ImagesDir(), "img", ".x.staging-99"),
		filepath.Join(l.ImagesDir(), ".import.staging-5"),
		filepath.Join(l.KernelsDir(), ".k.pull-77"),
		filepath.Join(l.KernelsDir(), "k", ".modules.ext4.tmp-1"),
		filepath.Join(l.KernelsDir(), "k", ".initrd-2.tmp"),
	}
	for _, p := range left {
		os.MkdirAll(filepath.Dir(p), 0o700)
		os.WriteFile(p, nil, 0o600)
	}
	s.Cleanup()
	for _, p := range left {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s survived Cleanup", p)
		}
	}
	if _, err := s.Image(context.Background(), "img@"+keep.Version(), nil); err != nil {
		t.Errorf("a published version did not survive Cleanup: %v", err)
	}
}

func TestLegacyImageMovesIntoItsVersionDirectory(t *testing.T) {
	s, l, st := newService(t)
	ctx := context.Background()
	legacy := filepath.Join(l.ImagesDir(), "old")
	os.MkdirAll(legacy, 0o700)
	os.WriteFile(filepath.Join(legacy, image.RootfsFile), []byte("x"), 0o444)
	st.PutImage(ctx, &store.Image{Name: "old", Version: "abcdef012345", Dir: legacy, SizeBytes: 1})
	s.Cleanup()
	img, err := s.Image(ctx, "old", nil)
	if err != nil || img.Rootfs != filepath.Join(legacy, "abcdef012345", image.RootfsFile) {
		t.Errorf("after Cleanup: %+v, %v; want the rootfs in images/old/abcdef012345", img, err)
	}
}

// The service reports a broken catalog file as the user's to fix (Invalid); catalogfile's
// tests cover what it reads.
func TestCatalogFileErrorsAreInvalid(t *testing.T) {
	s, l, _ := newService(t)
	dir := filepath.Join(l.ConfigDir, catalogfile.Dir)
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "20-bad.json"), []byte(`{"images": [{"name": "x"}]}`), 0o644)
	if _, err := s.Catalog(); !errors.Is(err, failure.Invalid) || !strings.Contains(err.Error(), "20-bad.json") {
		t.Errorf("Catalog() = %v; want an Invalid error naming 20-bad.json", err)
	}
}

// bundleServer exports an image made from a tree as a bundle and serves it over HTTP.
func bundleServer(t *testing.T, s *Service) (url, sum string) {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		if _, err := os.Stat("/usr/sbin/mkfs.ext4"); err != nil {
			t.Skip("mkfs.ext4 not installed")
		}
	}
	tree := t.TempDir()
	os.MkdirAll(filepath.Join(tree, "etc"), 0o755)
	os.WriteFile(filepath.Join(tree, "etc/motd"), []byte("bundled\n"), 0o644)
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := image.FromTree(context.Background(), image.TreeOptions{Tree: tree, Dest: dir, Name: "bundled", Manifest: image.Manifest{Kernel: "k1"}}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "b.bundle")
	res, err := image.Export(context.Background(), dir, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(filepath.Dir(out))))
	t.Cleanup(srv.Close)
	return srv.URL + "/b.bundle", res.SHA256
}

func writeCatalog(t *testing.T, s *Service, entries ...string) {
	t.Helper()
	dir := filepath.Join(s.o.Layout.ConfigDir, catalogfile.Dir)
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "test.json"), []byte(`{"images": [`+strings.Join(entries, ",")+`]}`), 0o644)
}

func TestRemoteBundlePinnedAndSigned(t *testing.T) {
	s, l, _ := newService(t)
	ctx := context.Background()
	url, sum := bundleServer(t, s)
	pub, priv, _ := ed25519.GenerateKey(nil)
	os.MkdirAll(filepath.Join(l.ConfigDir, KeysDir), 0o700)
	os.WriteFile(filepath.Join(l.ConfigDir, KeysDir, "team.pub"), []byte(base64.StdEncoding.EncodeToString(pub)+"\n"), 0o644)
	sig := base64.StdEncoding.EncodeToString(ed25519.Sign(priv, []byte(sum)))
	badSig := base64.StdEncoding.EncodeToString(ed25519.Sign(priv, []byte(strings.Repeat("0", 64))))
	entry := func(name, pin, extra string) string {
		return fmt.Sprintf(`{"name": %q, "bundle": {"url": %q, "sha256": %q%s}}`, name, url, pin, extra)
	}
	writeCatalog(t, s,
		entry("good", sum, ""),
		entry("signed", sum, `, "signature": "`+sig+`", "key": "team"`),
		entry("badpin", strings.Repeat("1", 64), ""),
		entry("badsig", sum, `, "signature": "`+badSig+`", "key": "team"`),
		entry("unknownkey", sum, `, "signature": "`+sig+`", "key": "stranger"`))

	for _, name := range []string{"good", "signed"} {
		img, err := s.Image(ctx, name, nil)
		if err != nil {
			t.Fatalf("Image(%s): %v", name, err)
		}
		if img.Kernel != "k1" {
			t.Errorf("%s: kernel %q; want the bundle's k1", name, img.Kernel)
		}
	}
	for name, want := range map[string]string{"badpin": "but the catalog pins", "badsig": "does not verify", "unknownkey": "not trusted here"} {
		if _, err := s.Image(ctx, name, nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Image(%s) = %v; want %q", name, err, want)
		}
		if _, err := s.Images.Show(ctx, name); err == nil {
			t.Errorf("%s was installed anyway", name)
		}
	}
	// The download is cached by sha256; a prune frees it.
	res, err := s.PruneCache(ctx, false)
	if err != nil || len(res.Bundles) != 1 {
		t.Errorf("PruneCache = %+v, %v; want the one downloaded bundle freed", res, err)
	}
}

func TestPullOCICoalescesAndNamesSafely(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		if _, err := os.Stat("/usr/sbin/mkfs.ext4"); err != nil {
			t.Skip("mkfs.ext4 not installed")
		}
	}
	s, _, st := newService(t)
	ctx := context.Background()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "bin/sh", Typeflag: tar.TypeReg, Mode: 0o755, Size: 2})
	tw.Write([]byte("#!"))
	tw.Close()
	data := b.Bytes()
	layer, _ := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	img, _ := mutate.AppendLayers(empty.Image, layer)
	cfg, _ := img.ConfigFile()
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	img, _ = mutate.ConfigFile(img, cfg)
	ref, _ := name.ParseReference(host + "/team/debian:bookworm")
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Images.Pull(ctx, PullRequest{Ref: ref.String(), Name: "team"}, nil)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("concurrent pull: %v", err)
		}
	}
	if vs := versionsOf(t, s, "team"); len(vs) != 1 {
		t.Errorf("4 concurrent pulls made versions %v; want one", vs)
	}
	info, _ := s.Images.Show(ctx, "team")
	var m image.Manifest
	json.Unmarshal(info.Manifest, &m)
	if m.Source != image.SourceOCI || m.OCI == nil || len(m.OCI.Layers) != 1 || !strings.HasPrefix(info.Source, "oci:"+ref.String()+"@sha256:") {
		t.Errorf("manifest = %+v, source %s", m, info.Source)
	}

	// Without --name the name comes from the reference, and it never replaces an image of
	// another origin: debian:bookworm must not replace the debian-bookworm built from its
	// recipe.
	st.PutImage(ctx, &store.Image{Name: "debian-bookworm", Version: "v", Dir: "/x", Source: "recipe:debian-bookworm"})
	_, err := s.Images.Pull(ctx, PullRequest{Ref: ref.String()}, nil)
	if !errors.Is(err, failure.Conflict) || !strings.Contains(err.Error(), "--name") {
		t.Errorf("pull onto the recipe image's name: %v", err)
	}
	if _, err := s.Images.Pull(ctx, PullRequest{Ref: "Not A Ref"}, nil); !errors.Is(err, failure.Invalid) {
		t.Errorf("bad reference: %v", err)
	}
	// A failed pull publishes nothing and leaves nothing staged.
	if _, err := s.Images.Pull(ctx, PullRequest{Ref: host + "/team/missing:1", Name: "missing"}, nil); err == nil {
		t.Error("pull of a missing image succeeded")
	}
	if _, err := s.Images.Show(ctx, "missing"); err == nil {
		t.Error("a failed pull installed an image")
	}
	left, _ := filepath.Glob(filepath.Join(s.o.Layout.ImagesDir(), "*", ".*"))
	trees, _ := filepath.Glob(filepath.Join(s.o.Layout.TmpDir(), "oci-*"))
	if len(left)+len(trees) != 0 {
		t.Errorf("left behind: %v %v", left, trees)
	}
}

func TestNameFromReference(t *testing.T) {
	for _, tt := range []struct{ repo, id, want string }{
		{"library/debian", "bookworm", "debian-bookworm"},
		{"team/busybox", "latest", "busybox"},
		{"org/My_Tool", "v1.2", "my-tool-v1.2"},
		{"x/img", "sha256:0123456789abcdef0123", "img-0123456789ab"},
	} {
		if got := NameFromReference(tt.repo, tt.id); got != tt.want {
			t.Errorf("NameFromReference(%s, %s) = %q; want %q", tt.repo, tt.id, got, tt.want)
		}
	}
}

// A VM created from an image built by an earlier banger's recipe hears about it (create shows
// a notice); once rebuilt from the current recipe, the image is no longer "older".
func TestImageBuiltFromAnOlderRecipe(t *testing.T) {
	s, _, _ := newService(t)
	ctx := context.Background()
	r, err := image.BuiltinRecipe(image.DefaultRecipe)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(hash, content string) {
		fakeVersionOf(t, s, image.Manifest{Name: r.Name, Recipe: r.Name, RecipeSHA256: hash}, content, "recipe:"+r.Name)
	}
	publish("0000", "built by an earlier banger")
	if img, err := s.Image(ctx, r.Name, nil); err != nil || !img.OlderRecipe {
		t.Errorf("image from an earlier recipe: %+v, %v; want OlderRecipe", img, err)
	}
	publish(r.Hash(), "rebuilt")
	if img, err := s.Image(ctx, r.Name, nil); err != nil || img.OlderRecipe {
		t.Errorf("image rebuilt from the current recipe: %+v, %v; want not OlderRecipe", img, err)
	}
}
