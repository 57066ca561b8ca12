package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/failure"
)

func validMeta(name string) Meta {
	return Meta{Name: name, Kind: User, Created: time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC), From: "src",
		Image: "debian@v1", Kernel: "debian-6.1", Agent: "initrd-abc.gz", VMM: "qemu", Accel: "tcg",
		VCPU: 2, MemoryMiB: 1024, DiskBytes: 8 << 30, Hostname: "src", MAC: "02:00:00:00:00:01"}
}

func publish(t *testing.T, s *Store, m Meta) Info {
	t.Helper()
	st, err := s.Stage(m.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Discard()
	if err := os.WriteFile(st.Disk(), []byte("disk"), 0o600); err != nil {
		t.Fatal(err)
	}
	i, err := st.Publish(m)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func TestPublishGetListRemove(t *testing.T) {
	s := NewStore(filepath.Join(t.TempDir(), "snapshots"))
	if l, err := s.List(); err != nil || len(l) != 0 {
		t.Fatalf("a new store lists %v, %v", l, err)
	}
	i := publish(t, s, validMeta("one"))
	if i.Name != "one" || i.Bytes == 0 || i.Disk() != filepath.Join(s.Root(), "one", DiskFile) {
		t.Errorf("published %+v", i)
	}
	boot := validMeta("")
	boot.Kind, boot.Key = Boot, Combination{Image: "debian@v1"}.Key()
	boot.Name = BootName(boot.Key)
	boot.Created = boot.Created.Add(time.Hour)
	publish(t, s, boot)
	l, err := s.List()
	if err != nil || len(l) != 2 || l[0].Name != "one" || l[1].Kind != Boot {
		t.Fatalf("list %+v, %v", l, err)
	}
	// A second snapshot of a taken name is a conflict, and leaves the first alone.
	st, _ := s.Stage("one")
	_, err = st.Publish(validMeta("one"))
	st.Discard()
	if !errors.Is(err, failure.Conflict) {
		t.Errorf("publish over an existing snapshot: %v", err)
	}
	if err := s.Remove("one"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("one"); !errors.Is(err, failure.NotFound) {
		t.Errorf("get after remove: %v", err)
	}
	if err := s.Remove("one"); !errors.Is(err, failure.NotFound) {
		t.Errorf("remove twice: %v", err)
	}
	entries, _ := os.ReadDir(s.Root())
	if len(entries) != 1 {
		t.Errorf("left in the store: %v", entries)
	}
}

func TestGetRefusesNamesOutsideTheStore(t *testing.T) {
	s := NewStore(t.TempDir())
	for _, name := range []string{"", ".", "..", "../x", "a/b", ".stage-x", "x\x00"} {
		if _, err := s.Get(name); !errors.Is(err, failure.NotFound) {
			t.Errorf("Get(%q) = %v, want not found", name, err)
		}
	}
}

func TestRemoveWaitsForRestoresUsingIt(t *testing.T) {
	s := NewStore(t.TempDir())
	publish(t, s, validMeta("used"))
	_, release, err := s.Use("used")
	if err != nil {
		t.Fatal(err)
	}
	removed := make(chan error, 1)
	var started sync.WaitGroup
	started.Add(1)
	go func() { started.Done(); removed <- s.Remove("used") }()
	started.Wait()
	// The snapshot is still readable while the restore holds it.
	if _, err := os.Stat(filepath.Join(s.Root(), "used", DiskFile)); err != nil {
		t.Fatalf("removed while in use: %v", err)
	}
	release()
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("used"); !errors.Is(err, failure.NotFound) {
		t.Errorf("after the removal: %v", err)
	}
}

func TestCleanRemovesWhatACrashLeft(t *testing.T) {
	s := NewStore(t.TempDir())
	publish(t, s, validMeta("kept"))
	st, err := s.Stage("cut")
	if err != nil {
		t.Fatal(err)
	}
	_ = st // never published nor discarded: the process died
	if err := os.MkdirAll(filepath.Join(s.Root(), trashPrefix+"1", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.Root(), "no-description"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.Root(), "damaged"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Root(), "damaged", MetaFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	removed, err := s.Clean(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 4 {
		t.Errorf("removed %v, want the staging, trash, undescribed and damaged directories", removed)
	}
	entries, _ := os.ReadDir(s.Root())
	if len(entries) != 1 || entries[0].Name() != "kept" {
		t.Errorf("left %v", entries)
	}
}

func TestParseMetaRefusesBadDescriptions(t *testing.T) {
	good, _ := json.Marshal(validMeta("ok"))
	if _, err := ParseMeta(good); err != nil {
		t.Fatalf("a valid description: %v", err)
	}
	for name, edit := range map[string]func(*Meta){
		"bad name":          func(m *Meta) { m.Name = "../etc" },
		"boot-named user":   func(m *Meta) { m.Name = "boot-x" },
		"unknown kind":      func(m *Meta) { m.Kind = "other" },
		"boot without key":  func(m *Meta) { m.Kind = Boot },
		"no image":          func(m *Meta) { m.Image = "" },
		"no vCPU":           func(m *Meta) { m.VCPU = 0 },
		"no memory":         func(m *Meta) { m.MemoryMiB = 0 },
		"no disk":           func(m *Meta) { m.DiskBytes = 0 },
		"control character": func(m *Meta) { m.Kernel = "k\x1b[2J" },
		"bad hostname":      func(m *Meta) { m.Hostname = "a b" },
	} {
		m := validMeta("ok")
		edit(&m)
		b, _ := json.Marshal(m)
		if _, err := ParseMeta(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for _, b := range []string{`{"name":"ok","extra":1}`, string(good) + "{}", strings.Repeat(" ", maxMeta+1)} {
		if _, err := ParseMeta([]byte(b)); err == nil {
			t.Errorf("accepted %.40q", b)
		}
	}
}

func TestCombinationKeyCoversEveryPart(t *testing.T) {
	base := Combination{Image: "i@1", Kernel: "k", Agent: "a", VMM: "qemu", Accel: "tcg", VCPU: 1, MemoryMiB: 1, DiskBytes: 1}
	seen := map[string]bool{base.Key(): true}
	for _, edit := range []func(*Combination){
		func(c *Combination) { c.Image = "i@2" }, func(c *Combination) { c.Kernel = "k2" },
		func(c *Combination) { c.Agent = "a2" }, func(c *Combination) { c.VMM = "firecracker" },
		func(c *Combination) { c.Accel = "kvm" }, func(c *Combination) { c.VCPU = 2 },
		func(c *Combination) { c.MemoryMiB = 2 }, func(c *Combination) { c.DiskBytes = 2 },
	} {
		c := base
		edit(&c)
		if seen[c.Key()] {
			t.Errorf("%+v has the key of another combination", c)
		}
		seen[c.Key()] = true
	}
}

func FuzzParseMeta(f *testing.F) {
	good, _ := json.Marshal(validMeta("ok"))
	f.Add(good)
	f.Add([]byte(`{"name":"boot-0123","kind":"boot"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMeta(b)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("ParseMeta accepted what Validate refuses: %v", err)
		}
		if !validDirName(m.Name) {
			t.Fatalf("ParseMeta accepted the name %q, which is no directory of the store", m.Name)
		}
	})
}
