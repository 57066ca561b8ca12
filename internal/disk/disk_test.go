package disk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/ext4"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// requireE2fsprogs skips a test that needs the real e2fsprogs tools.
func requireE2fsprogs(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "e2fsck", "resize2fs", "dumpe2fs"} {
		if _, err := ext4.LookTool(tool); err != nil {
			t.Skipf("skipping: %v (install e2fsprogs)", err)
		}
	}
}

// superblock returns the fields dumpe2fs -h prints.
func superblock(t *testing.T, path string) map[string]string {
	t.Helper()
	dumpe2fs, _ := ext4.LookTool("dumpe2fs")
	out, err := exec.Command(dumpe2fs, "-h", path).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs -h %s: %v\n%s", path, err, out)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return fields
}

func fsck(t *testing.T, path string) {
	t.Helper()
	e2fsck, _ := ext4.LookTool("e2fsck")
	if out, err := exec.Command(e2fsck, "-fn", path).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn %s: %v\n%s", path, err, out)
	}
}

func TestCreateExt4(t *testing.T) {
	requireE2fsprogs(t)
	p := filepath.Join(t.TempDir(), "vm.ext4")
	if err := CreateExt4(context.Background(), p, 8*gib, "banger-vm"); err != nil {
		t.Fatalf("CreateExt4: %v", err)
	}
	fsck(t, p)
	sb := superblock(t, p)
	if got := sb["Filesystem volume name"]; got != "banger-vm" {
		t.Errorf("label = %q, want banger-vm", got)
	}
	if got := sb["Block size"]; got != "4096" {
		t.Errorf("block size = %s, want 4096", got)
	}
	if got := sb["Block count"]; got != strconv.FormatInt(8*gib/4096, 10) {
		t.Errorf("block count = %s, want %d", got, 8*gib/4096)
	}
	features := strings.Fields(sb["Filesystem features"])
	for _, want := range []string{"has_journal", "extent", "metadata_csum"} {
		if !slices.Contains(features, want) {
			t.Errorf("features %v lack %s", features, want)
		}
	}
	if sb["Total journal size"] == "" {
		t.Errorf("no journal size in the superblock: %v", sb)
	}
	apparent, allocated, err := Usage(p)
	if err != nil {
		t.Fatal(err)
	}
	if apparent != 8*gib {
		t.Errorf("apparent size = %d, want %d", apparent, 8*gib)
	}
	if allocated > 16*mib {
		t.Errorf("allocated = %d MiB, want a sparse file (< 16 MiB)", allocated/mib)
	}
	t.Logf("8 GiB disk: %d KiB allocated, journal %s", allocated/1024, sb["Total journal size"])
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}

	// Inode tables are marked zeroed, so the guest kernel does no lazy init I/O.
	dumpe2fs, _ := ext4.LookTool("dumpe2fs")
	out, err := exec.Command(dumpe2fs, p).CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	groups := regexp.MustCompile(`(?m)^Group \d+:.*$`).FindAllString(string(out), -1)
	for _, g := range groups {
		if !strings.Contains(g, "ITABLE_ZEROED") {
			t.Errorf("group not marked ITABLE_ZEROED: %s", g)
			break
		}
	}
}

// A seeded disk holds the tree it was made from (here: a file the guest's overlay sees as
// /etc/ssh/key), with its mode, and stays sparse.
func TestCreateExt4From(t *testing.T) {
	requireE2fsprogs(t)
	debugfs, err := ext4.LookTool("debugfs")
	if err != nil {
		t.Skipf("skipping: %v (install e2fsprogs)", err)
	}
	dir := t.TempDir()
	seed := filepath.Join(dir, "seed")
	if err := os.MkdirAll(filepath.Join(seed, "root/etc/ssh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(seed, "root/etc/ssh/key"), []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "vm.ext4")
	if err := CreateExt4From(context.Background(), p, 8*gib, "banger-vm", seed); err != nil {
		t.Fatalf("CreateExt4From: %v", err)
	}
	fsck(t, p)
	out, err := exec.Command(debugfs, "-R", "cat /root/etc/ssh/key", p).Output()
	if err != nil || string(out) != "secret\n" {
		t.Errorf("debugfs cat /root/etc/ssh/key = %q, %v; want the seeded content", out, err)
	}
	out, err = exec.Command(debugfs, "-R", "stat /root/etc/ssh/key", p).Output()
	if err != nil || !strings.Contains(string(out), "Mode:  0600") {
		t.Errorf("debugfs stat /root/etc/ssh/key: %v\n%s\nwant mode 0600", err, out)
	}
	if _, allocated, err := Usage(p); err != nil || allocated > 16*mib {
		t.Errorf("allocated = %d MiB, %v; want a sparse file (< 16 MiB)", allocated/mib, err)
	}
}

func TestCreateExt4RefusesBadInput(t *testing.T) {
	requireE2fsprogs(t)
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing")
	if err := os.WriteFile(existing, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		path    string
		size    int64
		label   string
		wantErr string
	}{
		{name: "existing file is not overwritten", path: existing, size: gib, wantErr: "already exists"},
		{name: "zero size", size: 0, wantErr: "below the minimum"},
		{name: "negative size", size: -gib, wantErr: "below the minimum"},
		{name: "too small for a journal", size: 1 * mib, wantErr: "below the minimum"},
		{name: "not a block multiple", size: gib + 1, wantErr: "not a multiple of 4096"},
		{name: "label too long", size: gib, label: "a-label-longer-than-16", wantErr: "longer than 16"},
		{name: "label with a newline", size: gib, label: "a\nb", wantErr: "printable"},
		{name: "missing directory", path: filepath.Join(dir, "no/such/dir/disk"), size: gib, wantErr: "no such file"},
		{name: "cancelled", ctx: cancelled, size: gib, wantErr: "context canceled"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			p := tt.path
			if p == "" {
				p = filepath.Join(dir, fmt.Sprintf("disk%d", i))
			}
			err := CreateExt4(ctx, p, tt.size, tt.label)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CreateExt4 error = %v, want one containing %q", err, tt.wantErr)
			}
			if p == existing {
				if data, _ := os.ReadFile(p); string(data) != "data" {
					t.Errorf("existing file changed to %q", data)
				}
			} else if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("file left behind after a failed create: %v", err)
			}
		})
	}
}

func TestCreateExt4RemovesTheFileWhenMkfsFails(t *testing.T) {
	old := mkfsTool
	mkfsTool = "false"
	defer func() { mkfsTool = old }()
	p := filepath.Join(t.TempDir(), "vm.ext4")
	err := CreateExt4(context.Background(), p, gib, "x")
	if err == nil || !strings.Contains(err.Error(), "false failed (exit 1)") {
		t.Fatalf("CreateExt4 error = %v, want the mkfs failure", err)
	}
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("disk file left behind after mkfs failed: %v", err)
	}
}

func TestGrow(t *testing.T) {
	requireE2fsprogs(t)
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "vm.ext4")
	if err := CreateExt4(ctx, p, gib, "grow"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := Grow(ctx, p, 8*gib); err != nil {
		t.Fatalf("Grow: %v", err)
	}
	t.Logf("Grow 1 -> 8 GiB took %v", time.Since(start).Round(time.Millisecond))
	fsck(t, p)
	if got := superblock(t, p)["Block count"]; got != strconv.FormatInt(8*gib/4096, 10) {
		t.Errorf("block count after growing = %s, want %d", got, 8*gib/4096)
	}
	if apparent, allocated, _ := Usage(p); apparent != 8*gib || allocated > 64*mib {
		t.Errorf("usage after growing = %d apparent, %d allocated; want 8 GiB, sparse", apparent, allocated)
	}
	if err := Grow(ctx, p, 8*gib); err != nil {
		t.Errorf("Grow to the same size: %v, want a no-op", err)
	}
	err := Grow(ctx, p, 4*gib)
	if err == nil || !strings.Contains(err.Error(), "cannot shrink from 8 GiB to 4 GiB") {
		t.Errorf("Grow to a smaller size = %v, want a refusal to shrink", err)
	}
	if err := Grow(ctx, p, 8*gib+512); err == nil || !strings.Contains(err.Error(), "multiple of 4096") {
		t.Errorf("Grow to an unaligned size = %v, want a refusal", err)
	}
	if err := Grow(ctx, filepath.Join(t.TempDir(), "missing"), 8*gib); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("Grow of a missing disk = %v, want no such file", err)
	}
}

// A disk that a running QEMU has open carries QEMU's OFD locks; Grow must not touch it.
func TestGrowRefusesADiskInUse(t *testing.T) {
	requireE2fsprogs(t)
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "vm.ext4")
	if err := CreateExt4(ctx, p, gib, ""); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const fOFDSetlk = 37 // F_OFD_SETLK
	lk := syscall.Flock_t{Type: syscall.F_RDLCK, Start: 100, Len: 1}
	if err := syscall.FcntlFlock(f.Fd(), fOFDSetlk, &lk); err != nil {
		t.Skipf("cannot take an OFD lock here: %v", err)
	}
	err = Grow(ctx, p, 2*gib)
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("Grow of a locked disk = %v, want an in-use error", err)
	}
	if apparent, _, _ := Usage(p); apparent != gib {
		t.Errorf("locked disk resized to %d", apparent)
	}
}

func TestUsage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(gib); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 1*mib), 10*mib); err != nil {
		t.Fatal(err)
	}
	f.Sync()
	f.Close()
	apparent, allocated, err := Usage(p)
	if err != nil {
		t.Fatal(err)
	}
	if apparent != gib {
		t.Errorf("apparent = %d, want %d", apparent, gib)
	}
	if allocated < mib || allocated > 2*mib {
		t.Errorf("allocated = %d, want about 1 MiB", allocated)
	}
	if _, _, err := Usage(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Usage of a missing file = %v, want an error naming it", err)
	}
}

// TestCreateExt4Timing measures CreateExt4 for the sizes VMs use and logs the numbers. It
// fails on what makes a create slow, not on the time it took: mkfs writing the journal and
// inode tables, which assume_storage_prezeroed spares it (a few MiB allocated for 8 GiB and
// for 64 GiB, where mkfs's defaults allocate 68 MiB and 530 MiB).
func TestCreateExt4Timing(t *testing.T) {
	requireE2fsprogs(t)
	dir := t.TempDir()
	for _, size := range []int64{1 * gib, 8 * gib, 64 * gib} {
		var times []time.Duration
		var allocated int64
		for i := range 5 {
			p := filepath.Join(dir, fmt.Sprintf("d%d-%d", size>>30, i))
			start := time.Now()
			if err := CreateExt4(context.Background(), p, size, "t"); err != nil {
				t.Fatal(err)
			}
			times = append(times, time.Since(start))
			_, allocated, _ = Usage(p)
			os.Remove(p)
		}
		slices.Sort(times)
		median := times[len(times)/2]
		t.Logf("%2d GiB: median %v (min %v, max %v), %d KiB allocated", size>>30,
			median.Round(100*time.Microsecond), times[0].Round(100*time.Microsecond), times[len(times)-1].Round(100*time.Microsecond), allocated/1024)
		if size >= 8*gib && allocated > 16<<20 {
			t.Errorf("%d GiB disk allocates %d KiB, want a few MiB: mkfs wrote its journal or inode tables", size>>30, allocated/1024)
		}
	}
}

func BenchmarkCreateExt4_8GiB(b *testing.B) {
	dir := b.TempDir()
	for i := 0; b.Loop(); i++ {
		p := filepath.Join(dir, strconv.Itoa(i))
		if err := CreateExt4(context.Background(), p, 8*gib, "b"); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.Remove(p)
		b.StartTimer()
	}
}
