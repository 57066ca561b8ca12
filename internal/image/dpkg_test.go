package image

import (
	"slices"
	"strings"
	"testing"
)

const dpkgStatus = `Package: systemd
Status: install ok installed
Priority: important
Architecture: amd64
Version: 252.38-1~deb12u1
Description: system and service manager
 systemd is a system and service manager for Linux.
 .
 Version: 1.0 (a continuation line that looks like a field)

Package: removed-but-configured
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: half
Status: install reinstreq half-installed
Architecture: amd64
Version: 2.0

Package: libc6
Status: install ok installed
Architecture: i386
Version: 2.36-9+deb12u10

Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u10



Package: openssh-server
Architecture: amd64
Version: 1:9.2p1-2+deb12u6
Status: install ok installed`

func TestParseDpkgStatus(t *testing.T) {
	got, err := parseDpkgStatus(strings.NewReader(dpkgStatus))
	if err != nil {
		t.Fatal(err)
	}
	want := []Package{
		{Name: "libc6", Version: "2.36-9+deb12u10", Architecture: "amd64"},
		{Name: "libc6", Version: "2.36-9+deb12u10", Architecture: "i386"},
		{Name: "openssh-server", Version: "1:9.2p1-2+deb12u6", Architecture: "amd64"},
		{Name: "systemd", Version: "252.38-1~deb12u1", Architecture: "amd64"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseDpkgStatus:\n got %+v\nwant %+v", got, want)
	}
}

func TestParseDpkgStatusEdgeCases(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  int
	}{
		{name: "empty", input: "", want: 0},
		{name: "garbage", input: "no colon here\n\n\n", want: 0},
		{name: "no version", input: "Package: x\nStatus: install ok installed\n", want: 0},
		{name: "CRLF-free single", input: "Package: x\nVersion: 1\nStatus: install ok installed\n", want: 1},
		{name: "blank lines with spaces separate", input: "Package: a\nVersion: 1\nStatus: install ok installed\n  \nPackage: b\nVersion: 1\nStatus: install ok installed\n", want: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseDpkgStatus(strings.NewReader(tt.input))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.want {
				t.Errorf("got %d packages (%+v), want %d", len(got), got, tt.want)
			}
		})
	}
}

func TestCheckInstalled(t *testing.T) {
	have := []Package{{Name: "systemd", Version: "1"}, {Name: "git", Version: "2"}}
	if err := checkInstalled([]string{"git", "systemd"}, have); err != nil {
		t.Errorf("checkInstalled: %v, want nil", err)
	}
	err := checkInstalled([]string{"git", "curl", "udev"}, have)
	if err == nil || !strings.Contains(err.Error(), "curl, udev") {
		t.Errorf("checkInstalled error = %v, want it to name curl, udev", err)
	}
}
