package cli

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/oci"
)

// The client makes the paths of the sources the daemon's oci package reads from disk
// absolute; it knows their prefixes from api (the CLI does not link oci), so they must be
// the same.
func TestLocalSourcePrefixesAreOCIs(t *testing.T) {
	if api.LayoutPrefix != oci.TransportLayout || api.ArchivePrefix != oci.TransportArchive {
		t.Errorf("api prefixes %q, %q differ from oci's transports %q, %q",
			api.LayoutPrefix, api.ArchivePrefix, oci.TransportLayout, oci.TransportArchive)
	}
}

// The daemon reads oci: and docker-archive: paths from its own directory: the client makes
// them absolute first, and leaves registry references alone.
func TestAbsSource(t *testing.T) {
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ in, want string }{
		{"oci:build/layout:1", "oci:" + filepath.Join(cwd, "build/layout") + ":1"},
		{"oci:./layout", "oci:" + filepath.Join(cwd, "layout")},
		{"oci:/abs/layout:v2", "oci:/abs/layout:v2"},
		{"docker-archive:img.tar", "docker-archive:" + filepath.Join(cwd, "img.tar")},
		{"docker-archive:../img.tar:team/x:1", "docker-archive:" + filepath.Join(filepath.Dir(cwd), "img.tar") + ":team/x:1"},
		{"debian:bookworm", "debian:bookworm"},
		{"localhost:5000/oci:1", "localhost:5000/oci:1"},
	} {
		got, err := absSource(c.in)
		if err != nil || got != c.want {
			t.Errorf("absSource(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	if _, err := absSource("oci::x"); err == nil {
		t.Error("oci::x (no path) was taken")
	}
}

// The USED BY of image versions and kernels names VMs, then user snapshots as such.
func TestUsedByNamesSnapshots(t *testing.T) {
	vms := []string{"a", "b"}
	for _, tt := range []struct {
		vms, snaps []string
		want       string
	}{
		{nil, nil, ""},
		{vms, nil, "a, b"},
		{nil, []string{"s1"}, "snapshot s1"},
		{vms, []string{"s1", "s2"}, "a, b, snapshot s1, snapshot s2"},
	} {
		if got := usedBy(tt.vms, tt.snaps); got != tt.want {
			t.Errorf("usedBy(%v, %v) = %q; want %q", tt.vms, tt.snaps, got, tt.want)
		}
	}
	if vms[0] != "a" || len(vms) != 2 {
		t.Errorf("usedBy changed its argument: %v", vms)
	}
}
