package debian

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/banger-dev/banger/internal/download"
	"github.com/banger-dev/banger/internal/progress"
)

// newTestKey generates an Ed25519 signing key created at the given time (zero: now).
func newTestKey(t testing.TB, created time.Time) *openpgp.Entity {
	t.Helper()
	cfg := &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA}
	if !created.IsZero() {
		cfg.Time = func() time.Time { return created }
	}
	e, err := openpgp.NewEntity("banger test archive", "", "archive@test.invalid", cfg)
	if err != nil {
		t.Fatalf("generate test key: %v", err)
	}
	return e
}

func clearsignBytes(t testing.TB, key *openpgp.Entity, cfg *packet.Config, text []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := clearsign.Encode(&b, key.PrivateKey, cfg)
	if err != nil {
		t.Fatalf("clearsign: %v", err)
	}
	w.Write(text)
	if err := w.Close(); err != nil {
		t.Fatalf("clearsign: %v", err)
	}
	return b.Bytes()
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// fakeArchive serves a small signed Debian archive over httptest.
type fakeArchive struct {
	t        *testing.T
	srv      *httptest.Server
	key      *openpgp.Entity
	deb      []byte // the concrete kernel package
	mu       sync.Mutex
	files    map[string][]byte // URL path → body
	truncate map[string]bool   // send only half of the body, with the full Content-Length
	hits     map[string]int
}

// releaseSpec varies how publish builds and signs the Release.
type releaseSpec struct {
	suite, codename string
	validUntil      time.Time
	date            time.Time // zero: an hour ago
	byHash          bool
	signer          *openpgp.Entity
	sigConfig       *packet.Config
	unsigned        bool
}

const (
	metaName     = "linux-image-cloud-amd64"
	concreteName = "linux-image-6.1.0-9-cloud-amd64"
)

func newFakeArchive(t *testing.T) *fakeArchive {
	t.Helper()
	f := &fakeArchive{
		t:        t,
		key:      newTestKey(t, time.Time{}),
		files:    map[string][]byte{},
		truncate: map[string]bool{},
		hits:     map[string]int{},
	}
	f.deb = buildDeb(t, "xz",
		tarEntry{name: "./boot/", typ: tar.TypeDir},
		tarEntry{name: "./boot/vmlinuz-6.1.0-9-cloud-amd64", body: "bzImage"},
	)
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	f.publish(releaseSpec{})
	return f
}

func (f *fakeArchive) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	body, ok := f.files[r.URL.Path]
	trunc := f.truncate[r.URL.Path]
	f.hits[r.URL.Path]++
	f.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if trunc {
		w.Write(body[:len(body)/2])
		return // the server closes the connection: the client sees an early EOF
	}
	w.Write(body)
}

func (f *fakeArchive) set(path string, body []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if body == nil {
		delete(f.files, path)
	} else {
		f.files[path] = body
	}
}

func (f *fakeArchive) get(path string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.files[path]
}

func (f *fakeArchive) hitCount(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[path]
}

const (
	debPath  = "/debian/pool/main/l/linux-signed-amd64/linux-image-6.1.0-9-cloud-amd64_6.1.99-1_amd64.deb"
	distPath = "/debian/dists/bookworm/"
)

func (f *fakeArchive) packagesText() string {
	meta := []byte("meta package bytes")
	f.set("/debian/pool/main/l/linux-signed-amd64/linux-image-cloud-amd64_6.1.99-1_amd64.deb", meta)
	f.set(debPath, f.deb)
	return fmt.Sprintf(`Package: %[1]s
Version: 6.1.99-1
Architecture: amd64
Depends: %[2]s (= 6.1.99-1)
Description: Linux for x86-64 cloud (meta-package)
 This is a multi-line description.
 .
 It has a paragraph break.
Filename: pool/main/l/linux-signed-amd64/linux-image-cloud-amd64_6.1.99-1_amd64.deb
Size: %[3]d
SHA256: %[4]s

Package: %[2]s
Version: 6.1.98-1
Architecture: amd64
Depends: kmod
Filename: pool/main/l/linux-signed-amd64/old.deb
Size: 10
SHA256: %[7]s

Package: %[2]s
Version: 6.1.99-1
Architecture: amd64
Depends: kmod,
 linux-base (>= 4.3~),
 initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
Filename: pool/main/l/linux-signed-amd64/%[2]s_6.1.99-1_amd64.deb
Size: %[5]d
SHA256: %[6]s
`, metaName, concreteName, len(meta), sha256Hex(meta), len(f.deb), sha256Hex(f.deb), strings.Repeat("ab", 32))
}

// publish writes the Packages indices, the Release and its InRelease.
func (f *fakeArchive) publish(spec releaseSpec) {
	t := f.t
	packages := []byte(f.packagesText())
	xzData := compress(t, "xz", packages)
	gzData := compress(t, "gz", packages)
	idx := "main/binary-amd64/"
	f.set(distPath+idx+"Packages.xz", xzData)
	f.set(distPath+idx+"Packages.gz", gzData)
	if spec.byHash {
		f.set(distPath+idx+"by-hash/SHA256/"+sha256Hex(xzData), xzData)
	}
	if spec.suite == "" {
		spec.suite = "oldstable"
	}
	if spec.codename == "" {
		spec.codename = "bookworm"
	}
	var rel strings.Builder
	fmt.Fprintf(&rel, "Origin: Debian\nSuite: %s\nCodename: %s\n", spec.suite, spec.codename)
	if spec.date.IsZero() {
		spec.date = time.Now().Add(-time.Hour)
	}
	fmt.Fprintf(&rel, "Date: %s\n", spec.date.UTC().Format(time.RFC1123))
	if !spec.validUntil.IsZero() {
		fmt.Fprintf(&rel, "Valid-Until: %s\n", spec.validUntil.UTC().Format(time.RFC1123))
	}
	if spec.byHash {
		rel.WriteString("Acquire-By-Hash: yes\n")
	}
	rel.WriteString("Components: main\nMD5Sum:\n 00000000000000000000000000000000 1 ignored\nSHA256:\n")
	for _, e := range []struct {
		name string
		data []byte
	}{{idx + "Packages", packages}, {idx + "Packages.gz", gzData}, {idx + "Packages.xz", xzData}} {
		fmt.Fprintf(&rel, " %s %8d %s\n", sha256Hex(e.data), len(e.data), e.name)
	}
	if spec.unsigned {
		f.set(distPath+"InRelease", []byte(rel.String()))
		return
	}
	signer := spec.signer
	if signer == nil {
		signer = f.key
	}
	f.set(distPath+"InRelease", clearsignBytes(t, signer, spec.sigConfig, []byte(rel.String())))
}

func (f *fakeArchive) archive(t *testing.T) *Archive {
	return &Archive{
		Mirror:   f.srv.URL + "/debian/",
		Suite:    "bookworm",
		Keyring:  NewKeyring(openpgp.EntityList{f.key}),
		Client:   &download.Client{HTTP: f.srv.Client()},
		CacheDir: filepath.Join(t.TempDir(), "cache"),
	}
}

func TestArchiveResolveAndDownload(t *testing.T) {
	f := newFakeArchive(t)
	a := f.archive(t)
	ctx := context.Background()

	rel, err := a.Release(ctx)
	if err != nil {
		t.Fatalf("Release: %v", err)
	}
	if rel.Codename != "bookworm" || rel.SignedBy == "" || len(rel.SHA256) != 3 {
		t.Fatalf("Release = codename %q signer %q %d hashes; want bookworm, a signer and 3 hashes", rel.Codename, rel.SignedBy, len(rel.SHA256))
	}

	meta, err := a.Resolve(ctx, metaName)
	if err != nil {
		t.Fatalf("Resolve(%s): %v", metaName, err)
	}
	if meta.Version != "6.1.99-1" || meta.Depends != concreteName+" (= 6.1.99-1)" {
		t.Fatalf("meta = %+v; want version 6.1.99-1 depending on %s", meta, concreteName)
	}
	newest, err := a.Resolve(ctx, concreteName)
	if err != nil || newest.Version != "6.1.99-1" {
		t.Fatalf("Resolve(%s) = %q, %v; want newest version 6.1.99-1", concreteName, newest.Version, err)
	}
	if !strings.Contains(newest.Depends, "linux-base (>= 4.3~)") {
		t.Fatalf("multi-line Depends = %q; want the continuation lines kept", newest.Depends)
	}

	pkg, err := a.ResolveMetapackage(ctx, metaName)
	if err != nil {
		t.Fatalf("ResolveMetapackage: %v", err)
	}
	if pkg.Name != concreteName || pkg.Version != "6.1.99-1" || pkg.SHA256 != sha256Hex(f.deb) {
		t.Fatalf("ResolveMetapackage = %s %s; want %s 6.1.99-1 with the deb's hash", pkg.Name, pkg.Version, concreteName)
	}

	var mu sync.Mutex
	var updates []progress.Update
	report := func(u progress.Update) { mu.Lock(); updates = append(updates, u); mu.Unlock() }
	path, err := a.Download(ctx, pkg, report)
	if err != nil {
		t.Fatalf("Download: %v", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, f.deb) {
		t.Fatalf("downloaded file differs from the served .deb")
	}
	if filepath.Base(path) != pkg.SHA256+".deb" {
		t.Fatalf("cache file name = %s; want <sha256>.deb", filepath.Base(path))
	}
	last := updates[len(updates)-1]
	if last.Stage != StageDownload || last.Done != pkg.Size || last.Total != pkg.Size {
		t.Fatalf("last progress = %+v; want %s done=total=%d", last, StageDownload, pkg.Size)
	}

	// A second download is served from the verified cache.
	if _, err := a.Download(ctx, pkg, nil); err != nil {
		t.Fatalf("cached Download: %v", err)
	}
	if n := f.hitCount(debPath); n != 1 {
		t.Fatalf("mirror saw %d requests for the .deb; want 1 (second from cache)", n)
	}
	// A corrupted cache entry is replaced.
	os.WriteFile(path, []byte("garbage"), 0o644)
	if _, err := a.Download(ctx, pkg, nil); err != nil {
		t.Fatalf("Download over corrupt cache: %v", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, f.deb) || f.hitCount(debPath) != 2 {
		t.Fatalf("corrupt cache entry was not replaced by a fresh download")
	}
	// The index was fetched once for all of the above.
	if n := f.hitCount(distPath + "main/binary-amd64/Packages.xz"); n != 1 {
		t.Fatalf("Packages.xz fetched %d times; want 1", n)
	}
}

func TestArchiveReleaseVerification(t *testing.T) {
	past := time.Now().Add(-48 * time.Hour)
	tests := []struct {
		name    string
		setup   func(f *fakeArchive)
		keyring func(f *fakeArchive) *Keyring
		wantErr string
	}{
		{
			name: "tampered signed text",
			setup: func(f *fakeArchive) {
				in := f.get(distPath + "InRelease")
				f.set(distPath+"InRelease", bytes.Replace(in, []byte("Origin: Debian"), []byte("Origin: Evilan"), 1))
			},
			wantErr: "invalid signature",
		},
		{
			name:    "signed by a key not in the keyring",
			setup:   func(f *fakeArchive) { f.publish(releaseSpec{signer: newTestKey(t, time.Time{})}) },
			wantErr: "not signed by any trusted key",
		},
		{
			name:    "verified against the Debian keys instead of the test key",
			keyring: func(*fakeArchive) *Keyring { k, _ := DefaultKeyring(); return k },
			wantErr: "not signed by any trusted key",
		},
		{
			name:    "unsigned Release served as InRelease",
			setup:   func(f *fakeArchive) { f.publish(releaseSpec{unsigned: true}) },
			wantErr: "not an OpenPGP clearsigned message",
		},
		{
			name: "expired signature",
			setup: func(f *fakeArchive) {
				old := newTestKey(t, past)
				f.key = old
				f.publish(releaseSpec{signer: old, sigConfig: &packet.Config{
					Time: func() time.Time { return past.Add(time.Hour) }, SigLifetimeSecs: 3600}})
			},
			wantErr: "signature has expired",
		},
		{
			name:    "Valid-Until in the past",
			setup:   func(f *fakeArchive) { f.publish(releaseSpec{validUntil: time.Now().Add(-time.Minute)}) },
			wantErr: "Valid-Until",
		},
		{
			name:    "Release of another suite",
			setup:   func(f *fakeArchive) { f.publish(releaseSpec{suite: "stable", codename: "trixie"}) },
			wantErr: `not "bookworm"`,
		},
		{
			name:    "no InRelease on the mirror",
			setup:   func(f *fakeArchive) { f.set(distPath+"InRelease", nil) },
			wantErr: "404",
		},
		{
			name: "data appended after the signature",
			setup: func(f *fakeArchive) {
				f.set(distPath+"InRelease", append(f.get(distPath+"InRelease"), []byte("\nSHA256:\n evil\n")...))
			},
			wantErr: "after the signature",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeArchive(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			a := f.archive(t)
			if tt.keyring != nil {
				a.Keyring = tt.keyring(f)
			}
			_, err := a.Resolve(context.Background(), metaName)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Resolve error = %v; want one containing %q", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), "InRelease") {
				t.Fatalf("error %q does not name the InRelease URL", err)
			}
		})
	}
}

func TestArchiveValidUntilInFutureAccepted(t *testing.T) {
	f := newFakeArchive(t)
	f.publish(releaseSpec{validUntil: time.Now().Add(time.Hour)})
	rel, err := f.archive(t).Release(context.Background())
	if err != nil || rel.ValidUntil.IsZero() {
		t.Fatalf("Release = %+v, %v; want accepted with ValidUntil set", rel, err)
	}
}

func TestArchivePackagesIndex(t *testing.T) {
	idx := distPath + "main/binary-amd64/"
	tests := []struct {
		name    string
		setup   func(f *fakeArchive)
		wantErr string // "" means Resolve must succeed
		check   func(t *testing.T, f *fakeArchive)
	}{
		{
			name:  "xz missing falls back to gz",
			setup: func(f *fakeArchive) { f.set(idx+"Packages.xz", nil) },
			check: func(t *testing.T, f *fakeArchive) {
				if f.hitCount(idx+"Packages.gz") != 1 {
					t.Fatal("Packages.gz was not fetched")
				}
			},
		},
		{
			name: "by-hash used when advertised",
			setup: func(f *fakeArchive) {
				f.publish(releaseSpec{byHash: true})
				f.set(idx+"Packages.xz", []byte("stale file under the plain name"))
			},
			check: func(t *testing.T, f *fakeArchive) {
				if f.hitCount(idx+"Packages.xz") != 0 {
					t.Fatal("plain Packages.xz fetched although by-hash was available")
				}
			},
		},
		{
			name: "bad hash on both indices",
			setup: func(f *fakeArchive) {
				for _, n := range []string{"Packages.xz", "Packages.gz"} {
					b := bytes.Clone(f.get(idx + n))
					b[len(b)/2] ^= 0xff
					f.set(idx+n, b)
				}
			},
			wantErr: "does not match",
		},
		{
			name: "wrong size",
			setup: func(f *fakeArchive) {
				for _, n := range []string{"Packages.xz", "Packages.gz"} {
					f.set(idx+n, append(bytes.Clone(f.get(idx+n)), 0))
				}
			},
			wantErr: "larger than the",
		},
		{
			name: "bad xz hash falls back to good gz",
			setup: func(f *fakeArchive) {
				b := bytes.Clone(f.get(idx + "Packages.xz"))
				b[10] ^= 0xff
				f.set(idx+"Packages.xz", b)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeArchive(t)
			tt.setup(f)
			_, err := f.archive(t).ResolveMetapackage(context.Background(), metaName)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ResolveMetapackage: %v", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ResolveMetapackage error = %v; want one containing %q", err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, f)
			}
		})
	}
}

func TestArchiveDownloadFailures(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(f *fakeArchive)
		wantErr string
	}{
		{
			name: "bad .deb hash",
			setup: func(f *fakeArchive) {
				b := bytes.Clone(f.deb)
				b[len(b)-1] ^= 0xff
				f.set(debPath, b)
			},
			wantErr: "does not match the signed index",
		},
		{
			name:    "truncated download",
			setup:   func(f *fakeArchive) { f.truncate[debPath] = true },
			wantErr: "after",
		},
		{
			name:    "short file",
			setup:   func(f *fakeArchive) { f.set(debPath, f.deb[:len(f.deb)-1]) },
			wantErr: "the signed index says",
		},
		{
			name:    "longer file",
			setup:   func(f *fakeArchive) { f.set(debPath, append(bytes.Clone(f.deb), 'x')) },
			wantErr: "larger than the",
		},
		{
			name:    "missing file",
			setup:   func(f *fakeArchive) { f.set(debPath, nil) },
			wantErr: "404",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeArchive(t)
			a := f.archive(t)
			pkg, err := a.ResolveMetapackage(context.Background(), metaName)
			if err != nil {
				t.Fatalf("ResolveMetapackage: %v", err)
			}
			tt.setup(f)
			_, err = a.Download(context.Background(), pkg, nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Download error = %v; want one containing %q", err, tt.wantErr)
			}
			entries, _ := os.ReadDir(a.CacheDir)
			if len(entries) != 0 {
				t.Fatalf("cache dir holds %d entries after a failed download; want none", len(entries))
			}
		})
	}
}

func TestArchiveResolveErrors(t *testing.T) {
	f := newFakeArchive(t)
	a := f.archive(t)
	ctx := context.Background()
	if _, err := a.Resolve(ctx, "no-such-package"); err == nil || !strings.Contains(err.Error(), `"no-such-package" not found`) {
		t.Fatalf("Resolve(missing) error = %v; want not found", err)
	}

	// A metapackage pinning a version the index does not have.
	g := newFakeArchive(t)
	text := strings.Replace(g.packagesText(), concreteName+" (= 6.1.99-1)", concreteName+" (= 9.9-9)", 1)
	a2 := g.archive(t)
	index, err := parsePackages(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	a2.release, a2.index = &Release{}, index
	if _, err := a2.ResolveMetapackage(ctx, metaName); err == nil || !strings.Contains(err.Error(), "(= 9.9-9)") {
		t.Fatalf("ResolveMetapackage(bad pin) error = %v; want one naming the missing pinned version", err)
	}

	// Download refuses index entries that could escape the mirror or the cache.
	for _, pkg := range []Package{
		{Name: "p", Filename: "../../etc/passwd", Size: 1, SHA256: strings.Repeat("a", 64)},
		{Name: "p", Filename: "pool/p.deb", Size: 1, SHA256: "../../x"},
		{Name: "p", Filename: "pool/p.deb", Size: 0, SHA256: strings.Repeat("a", 64)},
	} {
		if _, err := a.Download(ctx, pkg, nil); err == nil {
			t.Fatalf("Download(%+v) succeeded; want refusal", pkg)
		}
	}
}

func TestExactPin(t *testing.T) {
	tests := []struct {
		depends, name, version string
		ok                     bool
	}{
		{"linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)", "linux-image-6.1.0-50-cloud-amd64", "6.1.176-1", true},
		{"foo(=1.0)", "foo", "1.0", true},
		{"foo:amd64 (= 1:2.0-1)", "foo", "1:2.0-1", true},
		{"foo\n (= 1.0)", "foo", "1.0", true},
		{"foo (>= 1.0)", "", "", false},
		{"foo (= 1.0), bar", "", "", false},
		{"foo (= 1.0) | bar", "", "", false},
		{"foo", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		name, version, ok := exactPin(tt.depends)
		if name != tt.name || version != tt.version || ok != tt.ok {
			t.Errorf("exactPin(%q) = %q, %q, %v; want %q, %q, %v", tt.depends, name, version, ok, tt.name, tt.version, tt.ok)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int // sign
	}{
		{"6.1.176-1", "6.1.170-3", 1},
		{"6.1.9-1", "6.1.10-1", -1},
		{"1.0~rc1-1", "1.0-1", -1},
		{"1.0-1", "1.0-1", 0},
		{"1:0.9", "2.0", 1},
		{"1.0-1+deb12u1", "1.0-1", 1},
		{"1.0a", "1.0", 1},
		{"1.0", "1.0+", -1},
		{"1.01", "1.1", 0},
		{"2.0-1~bpo12+1", "2.0-1", -1},
	}
	for _, tt := range tests {
		got := CompareVersions(tt.a, tt.b)
		if sign(got) != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d; want sign %d", tt.a, tt.b, got, tt.want)
		}
		if sign(CompareVersions(tt.b, tt.a)) != -tt.want {
			t.Errorf("CompareVersions(%q, %q) is not antisymmetric", tt.b, tt.a)
		}
	}
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}
