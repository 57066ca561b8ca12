package guestinit

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// mergedUsrRoot is a root shaped like a merged-/usr Debian: /lib -> usr/lib, plus traps.
func mergedUsrRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"usr/lib/systemd", "usr/sbin", "var/lib", "bin"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.Symlink("usr/lib", filepath.Join(root, "lib"))
	os.Symlink("usr/sbin", filepath.Join(root, "sbin"))
	os.WriteFile(filepath.Join(root, "usr/lib/systemd/systemd"), []byte("#!"), 0o755)
	os.Symlink("/lib/systemd/systemd", filepath.Join(root, "usr/sbin/init")) // absolute: resolved in root
	os.Symlink("../../../../../../etc", filepath.Join(root, "var/lib/escape"))
	os.Symlink("loop", filepath.Join(root, "loop"))
	return root
}

func TestResolveInRoot(t *testing.T) {
	root := mergedUsrRoot(t)
	tests := []struct {
		path, existing string
		missing        []string
		err            string
	}{
		{path: "/lib/modules/6.1.0-test", existing: "/usr/lib", missing: []string{"modules", "6.1.0-test"}},
		{path: "/sbin/init", existing: "/usr/lib/systemd/systemd"},
		// ".." and absolute targets never leave the root.
		{path: "/var/lib/escape/passwd", existing: "/", missing: []string{"etc", "passwd"}},
		{path: "/../../lib", existing: "/usr/lib"},
		{path: "/loop/x", err: "too many levels"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			existing, missing, err := resolveInRoot(root, tt.path)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v; want %q", err, tt.err)
				}
				return
			}
			if err != nil || existing != tt.existing || !reflect.DeepEqual(missing, tt.missing) {
				t.Fatalf("resolveInRoot(%s) = %q, %q, %v; want %q, %q", tt.path, existing, missing, err, tt.existing, tt.missing)
			}
		})
	}
}

func TestMkdirInRootStaysInside(t *testing.T) {
	root := mergedUsrRoot(t)
	got, err := mkdirInRoot(root, "/lib/modules/6.1.0-test")
	if err != nil || got != filepath.Join(root, "usr/lib/modules/6.1.0-test") {
		t.Fatalf("mkdirInRoot = %q, %v; want it under usr/lib (through the /lib link)", got, err)
	}
	got, err = mkdirInRoot(root, "/var/lib/escape/docker")
	if err != nil || got != filepath.Join(root, "etc/docker") {
		t.Fatalf("mkdirInRoot through an escaping link = %q, %v; want %s inside the root", got, err, filepath.Join(root, "etc/docker"))
	}
}

func TestFindInit(t *testing.T) {
	root := mergedUsrRoot(t)
	if desc, systemd := findInit(root); !systemd || !strings.Contains(desc, "/usr/lib/systemd/systemd") {
		t.Errorf("merged-/usr Debian: findInit = %q, %v; want systemd", desc, systemd)
	}
	bb := t.TempDir()
	os.MkdirAll(filepath.Join(bb, "bin"), 0o755)
	os.MkdirAll(filepath.Join(bb, "sbin"), 0o755)
	os.WriteFile(filepath.Join(bb, "bin/busybox"), []byte("#!"), 0o755)
	os.Symlink("/bin/busybox", filepath.Join(bb, "sbin/init"))
	if desc, systemd := findInit(bb); systemd || !strings.Contains(desc, "/bin/busybox") {
		t.Errorf("busybox image: findInit = %q, %v; want not systemd", desc, systemd)
	}
	if desc, systemd := findInit(t.TempDir()); systemd || desc != "no /sbin/init" {
		t.Errorf("empty image: findInit = %q, %v; want no /sbin/init", desc, systemd)
	}
}

func TestParseCmdlineModules(t *testing.T) {
	p, err := ParseCmdline("banger.lower=vda banger.upper=vdb banger.modules=vdc")
	if err != nil || p.Modules != "vdc" {
		t.Fatalf("ParseCmdline = %+v, %v; want modules vdc", p, err)
	}
	if _, err := ParseCmdline("banger.lower=vda banger.upper=vdb banger.modules=../sda"); err == nil {
		t.Fatal("banger.modules=../sda accepted")
	}
}
