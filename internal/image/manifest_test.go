package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeImage writes an image directory with a small rootfs and a matching manifest.
func fakeImage(t *testing.T) (dir string, m Manifest) {
	t.Helper()
	dir = t.TempDir()
	data := []byte(strings.Repeat("ext4", 1000))
	if err := os.WriteFile(filepath.Join(dir, RootfsFile), data, 0o444); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	m = Manifest{
		Format: manifestFormat, Name: "test", Recipe: "test", Suite: "bookworm",
		Packages:     []Package{{Name: "systemd", Version: "252"}},
		RootfsSize:   int64(len(data)),
		RootfsSHA256: hex.EncodeToString(sum[:]),
		BuiltAt:      time.Date(2025, 5, 20, 0, 0, 0, 0, time.UTC),
		StageSeconds: map[string]float64{StageBootstrap: 1.5},
	}
	if err := writeManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	return dir, m
}

func TestLoadAndVerify(t *testing.T) {
	dir, want := fakeImage(t)
	got, err := Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got.Name != want.Name || got.RootfsSHA256 != want.RootfsSHA256 || !got.BuiltAt.Equal(want.BuiltAt) || got.StageSeconds[StageBootstrap] != 1.5 {
		t.Errorf("Load = %+v, want %+v", got, want)
	}
	if p, ok := got.Package("systemd"); !ok || p.Version != "252" {
		t.Errorf("Package(systemd) = %+v, %v; want version 252", p, ok)
	}
	if err := Verify(dir); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestVerifyDetectsDamage(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(t *testing.T, dir string)
		wantErr string
	}{
		{name: "flipped byte", wantErr: "has sha256", damage: func(t *testing.T, dir string) {
			p := filepath.Join(dir, RootfsFile)
			os.Chmod(p, 0o644)
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt([]byte("X"), 100)
			f.Close()
		}},
		{name: "truncated", wantErr: "manifest says", damage: func(t *testing.T, dir string) {
			os.Truncate(filepath.Join(dir, RootfsFile), 10)
		}},
		{name: "rootfs missing", wantErr: "rebuild", damage: func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, RootfsFile))
		}},
		{name: "manifest missing", wantErr: "not an image directory", damage: func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, ManifestFile))
		}},
		{name: "manifest corrupt", wantErr: "corrupt", damage: func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, ManifestFile), []byte("{"), 0o644)
		}},
		{name: "manifest incomplete", wantErr: "incomplete", damage: func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, ManifestFile), []byte(`{"format":1,"name":"x"}`), 0o644)
		}},
		{name: "manifest from the future", wantErr: "upgrade banger", damage: func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, ManifestFile), []byte(`{"format":99,"name":"x"}`), 0o644)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := fakeImage(t)
			tt.damage(t, dir)
			err := Verify(dir)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Verify error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestFileSHA256StopsWhenCancelled(t *testing.T) {
	dir, _ := fakeImage(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := fileSHA256(ctx, filepath.Join(dir, RootfsFile), nil); err == nil {
		t.Errorf("fileSHA256 with a cancelled context succeeded, want an error")
	}
}

// An image whose manifest records another hash of a recipe banger still has was built before
// an upgrade changed that recipe; doctor and `vm create` say so. Pulled, imported and
// registered images, and recipes banger no longer has, are never "older".
func TestFromOlderRecipe(t *testing.T) {
	r, err := BuiltinRecipe(DefaultRecipe)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		m    Manifest
		want bool
	}{
		{"current recipe", Manifest{Recipe: r.Name, RecipeSHA256: r.Hash()}, false},
		{"recipe changed since", Manifest{Recipe: r.Name, RecipeSHA256: "0000"}, true},
		{"recipe changed since, source recorded", Manifest{Recipe: r.Name, RecipeSHA256: "0000", Source: SourceRecipe}, true},
		{"imported bundle of a recipe image", Manifest{Recipe: r.Name, RecipeSHA256: "0000", Source: SourceBundle}, false},
		{"OCI image", Manifest{Source: SourceOCI}, false},
		{"recipe banger no longer has", Manifest{Recipe: "debian-etch", RecipeSHA256: "0000"}, false},
		{"no hash recorded", Manifest{Recipe: r.Name}, false},
	}
	for _, c := range cases {
		if got := c.m.FromOlderRecipe(); got != c.want {
			t.Errorf("%s: FromOlderRecipe = %v, want %v", c.name, got, c.want)
		}
	}
}
