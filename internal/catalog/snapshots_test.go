package catalog

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/kernel"
	"github.com/banger-dev/banger/internal/snapshot"
	"github.com/banger-dev/banger/internal/store"
)

// addSnapshot publishes a snapshot in the service's store, taken on image ref (name@version)
// and kernel: a boot snapshot when name is "" (named after a key made of ref and kernel), a
// user snapshot otherwise. It returns the snapshot's name.
func addSnapshot(t *testing.T, s *Service, name, ref, kernelName string) string {
	t.Helper()
	m := snapshot.Meta{Name: name, Kind: snapshot.User, Created: time.Now(), From: "vm1", Image: ref, Kernel: kernelName,
		Agent: kernel.InitramfsName("0123456789abcdef"), VMM: "qemu", Accel: "tcg", VCPU: 1, MemoryMiB: 256, DiskBytes: 1 << 20,
		Hostname: "vm1"}
	if name == "" {
		m.Kind = snapshot.Boot
		m.Key = snapshot.Combination{Image: ref, Kernel: kernelName, Agent: m.Agent, VMM: m.VMM}.Key()
		m.Name = snapshot.BootName(m.Key)
	}
	st, err := s.o.Snapshots.Stage(m.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Discard()
	if err := os.WriteFile(st.Disk(), []byte("disk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Publish(m); err != nil {
		t.Fatal(err)
	}
	return m.Name
}

// snapshotNames lists the names of the published snapshots, sorted.
func snapshotNames(t *testing.T, s *Service) []string {
	t.Helper()
	list, err := s.o.Snapshots.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, i := range list {
		out = append(out, i.Name)
	}
	slices.Sort(out)
	return out
}

// A version no VM uses stays while a snapshot, user or boot, was taken on it: restoring the
// snapshot needs it.
func TestVersionsStayWhileSnapshotsUseThem(t *testing.T) {
	for _, kind := range []snapshot.Kind{snapshot.User, snapshot.Boot} {
		t.Run(string(kind), func(t *testing.T) {
			s, _, _ := newService(t)
			ctx := context.Background()
			v1 := fakeVersion(t, s, "img", "one")
			fakeVersion(t, s, "other", "x")
			name := ""
			if kind == snapshot.User {
				name = "snap1"
			}
			name = addSnapshot(t, s, name, "img@"+v1.Version(), "k")
			addSnapshot(t, s, "", "other@"+v1.Version(), "k") // another image's: not a user of img

			// A VM is being created from v1 (leased) while a new version is published: v1 is
			// no longer current. The publish drops v1's boot snapshots, so the boot case is
			// one made after it: that VM's warm start settled while the build ran.
			leased, err := s.Image(ctx, "img", nil)
			if err != nil {
				t.Fatal(err)
			}
			v2 := fakeVersion(t, s, "img", "two")
			if kind == snapshot.Boot {
				name = addSnapshot(t, s, "", "img@"+v1.Version(), "k")
			}
			s.Release(leased)
			removed, err := s.Images.CollectVersions(ctx, false)
			if err != nil || len(removed) != 0 {
				t.Fatalf("CollectVersions = %+v, %v; want v1 kept for snapshot %s", removed, err, name)
			}
			info, err := s.Images.Show(ctx, "img")
			if err != nil {
				t.Fatal(err)
			}
			var old *VersionInfo
			for i := range info.Versions {
				if info.Versions[i].Version == v1.Version() {
					old = &info.Versions[i]
				}
			}
			named := []string{name} // user snapshots are named as users; boot ones are banger's cache
			if kind == snapshot.Boot {
				named = nil
			}
			if old == nil || !slices.Equal(old.Snapshots, named) || len(info.Versions) != 2 {
				t.Fatalf("versions = %+v; want v1 kept (snapshots %v), and v2 %s", info.Versions, named, v2.Version())
			}
			if _, err := s.Image(ctx, "img@"+v1.Version(), nil); err != nil {
				t.Errorf("the snapshot's version does not resolve: %v", err)
			}

			// Once the snapshot is gone, v1 is collected.
			if err := s.o.Snapshots.Remove(name); err != nil {
				t.Fatal(err)
			}
			removed, err = s.Images.CollectVersions(ctx, false)
			if err != nil || len(removed) != 1 || removed[0].Version != v1.Version() {
				t.Errorf("CollectVersions without the snapshot = %+v, %v; want v1", removed, err)
			}
		})
	}
}

// image rm is refused while user snapshots were taken on the image, naming them and the fix;
// its boot snapshots are banger's cache and go with it.
func TestImageDeleteRespectsSnapshots(t *testing.T) {
	s, _, _ := newService(t)
	ctx := context.Background()
	v1 := fakeVersion(t, s, "img", "one")
	fakeVersion(t, s, "other", "x")
	userA := addSnapshot(t, s, "snap-a", "img@"+v1.Version(), "k")
	userB := addSnapshot(t, s, "snap-b", "img@"+v1.Version(), "k")
	boot := addSnapshot(t, s, "", "img@"+v1.Version(), "k")
	otherBoot := addSnapshot(t, s, "", "other@"+v1.Version(), "k")

	_, err := s.Images.Delete(ctx, "img")
	if !errors.Is(err, failure.Conflict) || !strings.Contains(err.Error(), "used by snapshots snap-a, snap-b") ||
		!strings.Contains(err.Error(), "banger snapshot rm snap-a snap-b") {
		t.Fatalf("Delete with user snapshots on it = %v; want a conflict naming them and `banger snapshot rm`", err)
	}
	if got, want := snapshotNames(t, s), sorted(userA, userB, boot, otherBoot); !slices.Equal(got, want) {
		t.Errorf("a refused delete touched the snapshots: %v; want %v", got, want)
	}
	if _, err := s.Image(ctx, "img", nil); err != nil {
		t.Errorf("a refused delete removed the image: %v", err)
	}

	s.o.Snapshots.Remove(userA)
	s.o.Snapshots.Remove(userB)
	if _, err := s.Images.Delete(ctx, "img"); err != nil {
		t.Fatalf("Delete with only boot snapshots on it: %v", err)
	}
	if got := snapshotNames(t, s); !slices.Equal(got, []string{otherBoot}) {
		t.Errorf("snapshots after the delete = %v; want only the other image's %s", got, otherBoot)
	}
}

// A new version of an image (build, pull, import, register all publish) drops the boot
// snapshots of its other versions, and only those: `banger snapshot list` no longer shows
// them, and they no longer keep the old version.
func TestNewVersionDropsStaleBootSnapshots(t *testing.T) {
	s, _, _ := newService(t)
	ctx := context.Background()
	v1 := fakeVersion(t, s, "img", "one")
	fakeVersion(t, s, "other", "x")
	staleBoot := addSnapshot(t, s, "", "img@"+v1.Version(), "k")
	user := addSnapshot(t, s, "mine", "img@"+v1.Version(), "k")
	otherBoot := addSnapshot(t, s, "", "other@"+v1.Version(), "k")

	v2 := fakeVersion(t, s, "img", "two")
	if got, want := snapshotNames(t, s), sorted(user, otherBoot); !slices.Equal(got, want) {
		t.Errorf("snapshots after a new version = %v; want %v (boot snapshot %s of the old version dropped)", got, want, staleBoot)
	}
	// A boot snapshot of the current version stays when the same contents are published again.
	currentBoot := addSnapshot(t, s, "", "img@"+v2.Version(), "k")
	fakeVersion(t, s, "img", "two")
	if got := snapshotNames(t, s); !slices.Contains(got, currentBoot) {
		t.Errorf("snapshots after republishing the current version = %v; want %s kept", got, currentBoot)
	}
	// The user snapshot keeps v1.
	if vs := versionsOf(t, s, "img"); len(vs) != 2 {
		t.Errorf("versions = %v; want v1 (snapshot mine) and v2", vs)
	}
	if _, err := s.Image(ctx, "img@"+v1.Version(), nil); err != nil {
		t.Errorf("the user snapshot's version: %v", err)
	}
}

// fakeKernel records an installed kernel named name.
func fakeKernel(t *testing.T, s *Service, name string) string {
	t.Helper()
	dir := filepath.Join(s.o.Layout.KernelsDir(), name)
	os.MkdirAll(dir, 0o755)
	if err := s.o.Store.PutKernel(context.Background(), &store.Kernel{Name: name, Release: "6.1", Dir: dir}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// kernel rm is refused while user snapshots were taken with the kernel; its boot snapshots
// go with it. list and show name the snapshots.
func TestKernelDeleteRespectsSnapshots(t *testing.T) {
	s, _, _ := newService(t)
	ctx := context.Background()
	dir := fakeKernel(t, s, "k")
	fakeKernel(t, s, "k2")
	user := addSnapshot(t, s, "snap-a", "img@v1", "k")
	boot := addSnapshot(t, s, "", "img@v1", "k")
	otherBoot := addSnapshot(t, s, "", "img@v1", "k2")

	info, err := s.Kernels.Show(ctx, "k")
	if err != nil || !slices.Equal(info.Snapshots, []string{user}) {
		t.Errorf("Show = %+v, %v; want snapshot %s named (not boot snapshot %s)", info, err, user, boot)
	}
	_, err = s.Kernels.Delete(ctx, "k")
	if !errors.Is(err, failure.Conflict) || !strings.Contains(err.Error(), "used by snapshot snap-a") ||
		!strings.Contains(err.Error(), "banger snapshot rm snap-a") {
		t.Fatalf("Delete with a user snapshot on it = %v; want a conflict naming it and `banger snapshot rm`", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("a refused delete removed the kernel: %v", err)
	}
	s.o.Snapshots.Remove(user)
	if _, err := s.Kernels.Delete(ctx, "k"); err != nil {
		t.Fatalf("Delete with only boot snapshots on it: %v", err)
	}
	if got := snapshotNames(t, s); !slices.Equal(got, []string{otherBoot}) {
		t.Errorf("snapshots after the delete = %v; want only the other kernel's %s", got, otherBoot)
	}
}

// A kernel pulled or imported anew (both install) drops the boot snapshots of the kernel it
// replaces, and keeps user snapshots.
func TestKernelInstallDropsItsBootSnapshots(t *testing.T) {
	s, l, _ := newService(t)
	ctx := context.Background()
	fakeKernel(t, s, "k")
	fakeKernel(t, s, "k2")
	user := addSnapshot(t, s, "snap-a", "img@v1", "k")
	addSnapshot(t, s, "", "img@v1", "k")
	otherBoot := addSnapshot(t, s, "", "img@v1", "k2")

	fresh := filepath.Join(l.KernelsDir(), ".k.pull-1")
	os.MkdirAll(fresh, 0o755)
	if err := s.Kernels.install(ctx, kernel.Manifest{Name: "k", Release: "6.1.1"}, fresh); err != nil {
		t.Fatal(err)
	}
	if got, want := snapshotNames(t, s), sorted(user, otherBoot); !slices.Equal(got, want) {
		t.Errorf("snapshots after the kernel was replaced = %v; want %v", got, want)
	}
}

func sorted(names ...string) []string {
	slices.Sort(names)
	return names
}

// A spare VM (store.StateSpare) is the daemon's cache of its boot snapshot, not a user of the
// image: image rm goes ahead, drops the boot snapshot and says which, so that the VM service
// deletes the spares made from it.
func TestSparesAreNoImageUsers(t *testing.T) {
	s, _, st := newService(t)
	ctx := context.Background()
	v1 := fakeVersion(t, s, "img", "one")
	boot := addSnapshot(t, s, "", "img@"+v1.Version(), "k")
	if err := st.CreateVM(ctx, &store.VM{Name: "spare-0123456789ab", State: store.StateSpare, Image: "img@" + v1.Version(), Kernel: "k", VMM: "qemu", Accel: "tcg", Dir: "/d"}); err != nil {
		t.Fatal(err)
	}
	var told []string
	s.o.BootSnapshotsDropped = func(names []string) { told = append(told, names...) }
	if info, err := s.Images.Show(ctx, "img"); err != nil || len(info.Versions) != 1 || len(info.Versions[0].UsedBy) != 0 {
		t.Errorf("Show = %+v, %v; want no VM using the image", info, err)
	}
	if _, err := s.Images.Delete(ctx, "img"); err != nil {
		t.Fatalf("Delete with a spare on it: %v", err)
	}
	if !slices.Equal(told, []string{boot}) {
		t.Errorf("told of dropped boot snapshots %v; want [%s]", told, boot)
	}
}
