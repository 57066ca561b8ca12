package catalogfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/image"
)

// The built-in catalog has the default image and its kernel; a user's file replaces an entry
// of the same name and adds others; a broken file fails the load with an error naming it.
func TestCatalogFiles(t *testing.T) {
	configDir := t.TempDir()
	cat, err := Load(configDir)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := cat.Image("debian-bookworm"); !ok || e.Kind != image.SourceRecipe || e.Kernel != "debian-6.1" || e.From != "builtin" {
		t.Errorf("builtin image entry = %+v", e)
	}
	if e, ok := cat.Kernel("debian-6.1"); !ok || e.Debian.Package != "linux-image-cloud-amd64" || e.Debian.Suite != "bookworm" {
		t.Errorf("builtin kernel entry = %+v", e)
	}
	dir := filepath.Join(configDir, Dir)
	os.MkdirAll(dir, 0o700)
	sum := strings.Repeat("ab", 32)
	os.WriteFile(filepath.Join(dir, "10-team.json"), []byte(`{"images": [
		{"name": "debian-bookworm", "oci": "registry.example/team/debian:12", "kernel": "fc"},
		{"name": "tools", "bundle": {"url": "https://example.org/tools.bundle", "sha256": "`+sum+`"}}],
		"kernels": [{"name": "fc", "bundle": {"url": "https://example.org/fc.bundle", "sha256": "`+sum+`"}}]}`), 0o644)
	cat, err = Load(configDir)
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := cat.Image("debian-bookworm"); e.Kind != image.SourceOCI || !strings.HasSuffix(e.From, "10-team.json") {
		t.Errorf("a user entry does not replace the builtin one: %+v", e)
	}
	if e, ok := cat.Kernel("fc"); !ok || e.Kind != "bundle" {
		t.Errorf("user kernel entry = %+v", e)
	}
	for _, bad := range []struct{ json, want string }{
		{`{"images": [{"name": "x"}]}`, `exactly one of "recipe", "oci" or "bundle"`},
		{`{"images": [{"name": "x", "oci": "a", "recipe": "debian-bookworm"}]}`, "exactly one"},
		{`{"images": [{"name": "x", "bundle": {"url": "https://x/y", "sha256": "nope"}}]}`, "must be pinned"},
		{`{"images": [{"name": "x", "bundle": {"url": "https://x/y", "sha256": "` + sum + `", "signature": "c2ln"}}]}`, "needs both"},
		{`{"images": [{"name": "Bad_Name", "oci": "a"}]}`, "lower-case"},
		{`{"images": [], "colour": "blue"}`, "unknown field"},
		{`{"kernels": [{"name": "k", "debian": {"suite": "bookworm"}}]}`, "suite and a package"},
	} {
		os.WriteFile(filepath.Join(dir, "20-bad.json"), []byte(bad.json), 0o644)
		if _, err := Load(configDir); err == nil || !strings.Contains(err.Error(), "20-bad.json") || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("catalog %s: err = %v; want one naming the file and saying %q", bad.json, err, bad.want)
		}
	}
}

// FuzzParse: no catalog file makes parseCatalog panic, and an entry it accepts has a valid
// name and exactly one kind.
func FuzzParse(f *testing.F) {
	f.Add(builtinCatalog)
	f.Add([]byte(`{"images": [{"name": "x", "oci": "a"}], "kernels": [{"name": "k", "debian": {"suite": "s", "package": "p"}}]}`))
	f.Add([]byte(`{"images": [{"name": "x", "bundle": {"url": "https://x/y", "sha256": "` + strings.Repeat("ab", 32) + `"}}]}`))
	f.Add([]byte(`{"images": [], "colour": "blue"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseCatalog(data, "fuzz")
		if err != nil {
			return
		}
		for _, e := range c.Images {
			if !ValidName(e.Name) || e.Kind == "" || e.From != "fuzz" {
				t.Errorf("accepted image entry %+v", e)
			}
		}
		for _, e := range c.Kernels {
			if !ValidName(e.Name) || e.Kind == "" || e.From != "fuzz" {
				t.Errorf("accepted kernel entry %+v", e)
			}
		}
	})
}
