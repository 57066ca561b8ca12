package vmm

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func validSnapshot() Snapshot {
	return Snapshot{Driver: "qemu", VMMVersion: "7.2.22", VCPU: 2, MemoryMiB: 512, Disks: 1, NIC: true,
		Files: map[string]string{"state": "state.bin"}}
}

func TestSnapshotRoundTrip(t *testing.T) {
	s := validSnapshot()
	s.Dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(s.Dir, "state.bin"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteSnapshot(s); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSnapshot(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Dir != s.Dir || got.VMMVersion != s.VMMVersion || got.Path("state") != filepath.Join(s.Dir, "state.bin") {
		t.Errorf("ReadSnapshot = %+v; want %+v", got, s)
	}
}

func TestParseSnapshotRefuses(t *testing.T) {
	for name, edit := range map[string]func(m map[string]any){
		"unknown field":    func(m map[string]any) { m["surprise"] = 1 },
		"no driver":        func(m map[string]any) { delete(m, "driver") },
		"no version":       func(m map[string]any) { m["vmm_version"] = "" },
		"zero vcpu":        func(m map[string]any) { m["vcpu"] = 0 },
		"negative memory":  func(m map[string]any) { m["memory_mib"] = -1 },
		"no files":         func(m map[string]any) { m["files"] = map[string]string{} },
		"absolute file":    func(m map[string]any) { m["files"] = map[string]string{"state": "/etc/passwd"} },
		"file outside dir": func(m map[string]any) { m["files"] = map[string]string{"state": "../x"} },
		"dot dot":          func(m map[string]any) { m["files"] = map[string]string{"state": ".."} },
		"the description":  func(m map[string]any) { m["files"] = map[string]string{"state": SnapshotFile} },
	} {
		b, _ := json.Marshal(validSnapshot())
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		edit(m)
		b, _ = json.Marshal(m)
		if s, err := ParseSnapshot(b); err == nil {
			t.Errorf("%s: ParseSnapshot(%s) = %+v; want an error", name, b, s)
		}
	}
	if _, err := ParseSnapshot([]byte(`{"driver":"x"} {}`)); err == nil {
		t.Error("ParseSnapshot of two objects succeeded")
	}
	if _, err := ParseSnapshot([]byte(strings.Repeat(" ", maxSnapshotFile+1))); err == nil {
		t.Error("ParseSnapshot of an oversized description succeeded")
	}
}

func TestReadSnapshotRefusesMissingAndSymlinkedFiles(t *testing.T) {
	s := validSnapshot()
	s.Dir = t.TempDir()
	if err := WriteSnapshot(s); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSnapshot(s.Dir); err == nil {
		t.Error("ReadSnapshot with its state file missing succeeded")
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(s.Dir, "state.bin")); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSnapshot(s.Dir); err == nil {
		t.Error("ReadSnapshot with its state file a symlink succeeded")
	}
}

func TestSnapshotCompatible(t *testing.T) {
	s := validSnapshot()
	cfg := Config{VCPU: 2, MemoryMiB: 512, Disks: []Disk{{Path: "d"}}, NIC: &NIC{}}
	if err := s.Compatible("qemu", "7.2.22", cfg); err != nil {
		t.Fatalf("Compatible with its own shape: %v", err)
	}
	for name, c := range map[string]struct {
		driver, version string
		edit            func(*Config)
	}{
		"driver":  {"firecracker", "7.2.22", func(*Config) {}},
		"version": {"qemu", "8.0.0", func(*Config) {}},
		"vcpu":    {"qemu", "7.2.22", func(c *Config) { c.VCPU = 1 }},
		"memory":  {"qemu", "7.2.22", func(c *Config) { c.MemoryMiB = 1024 }},
		"disks":   {"qemu", "7.2.22", func(c *Config) { c.Disks = nil }},
		"nic":     {"qemu", "7.2.22", func(c *Config) { c.NIC = nil }},
	} {
		cc := cfg
		c.edit(&cc)
		if err := s.Compatible(c.driver, c.version, cc); !errors.Is(err, ErrIncompatibleSnapshot) {
			t.Errorf("%s differs: Compatible = %v; want ErrIncompatibleSnapshot", name, err)
		}
	}
}

func FuzzParseSnapshot(f *testing.F) {
	b, _ := json.Marshal(validSnapshot())
	f.Add(b)
	f.Add([]byte(`{"driver":"fake","vmm_version":"1","vcpu":1,"memory_mib":1,"files":{"a":"b"},"extra":{"x":[1]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSnapshot(b)
		if err != nil {
			return
		}
		for role, name := range s.Files {
			s.Dir = "/snap"
			if p := s.Path(role); filepath.Dir(p) != "/snap" || filepath.Base(p) != name {
				t.Fatalf("file %q for %q resolves to %s, outside the snapshot's directory", name, role, p)
			}
		}
		again, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseSnapshot(again); err != nil {
			t.Fatalf("a parsed snapshot does not parse again: %v (%s)", err, again)
		}
	})
}

func TestCheckSnapshotDir(t *testing.T) {
	dir := t.TempDir()
	if err := CheckSnapshotDir(dir, "state"); err != nil {
		t.Fatalf("an empty directory: %v", err)
	}
	for _, name := range []string{"state", SnapshotFile} {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := CheckSnapshotDir(d, "state"); err == nil {
			t.Errorf("a directory holding %s: no error", name)
		}
	}
	if err := CheckSnapshotDir(filepath.Join(dir, "missing"), "state"); err == nil {
		t.Error("a missing directory: no error")
	}
}

// A Snapshot made in memory (not read with ReadSnapshot) is checked on restore too.
func TestCompatibleRefusesFilesOutsideTheDirectory(t *testing.T) {
	s := validSnapshot()
	s.Files = map[string]string{"state": "../../etc/shadow"}
	cfg := Config{VCPU: 2, MemoryMiB: 512, Disks: []Disk{{Path: "d"}}, NIC: &NIC{}}
	if err := s.Compatible("qemu", "7.2.22", cfg); !errors.Is(err, ErrIncompatibleSnapshot) {
		t.Errorf("Compatible = %v; want ErrIncompatibleSnapshot", err)
	}
}
