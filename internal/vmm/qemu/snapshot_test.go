package qemu

import (
	"context"
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/vmm"
)

// fillingKernel writes 0xdeadbeef over guest memory [fillStart, fillStart+fillSize), then
// 0xcafebabe over its own first (already run) instruction at kernelEntry, and halts. The last
// write tells a restored guest's memory from a kernel loaded afresh by the restoring QEMU.
func fillingKernel(t *testing.T) string {
	le := binary.LittleEndian
	code := le.AppendUint32([]byte{0xbf}, fillStart)              // mov edi, fillStart
	code = le.AppendUint32(append(code, 0xb9), fillSize/4)        // mov ecx, dwords
	code = le.AppendUint32(append(code, 0xb8), 0xdeadbeef)        // mov eax, pattern
	code = append(code, 0xf3, 0xab)                               // rep stosd
	code = le.AppendUint32(append(code, 0xc7, 0x05), kernelEntry) // mov dword [kernelEntry], …
	code = le.AppendUint32(code, 0xcafebabe)
	code = append(code, 0xfa, 0xf4, 0xeb, 0xfd) // cli; hlt; jmp -3
	return kernel(t, code)
}

// kernelEntry is where kernel loads the code (its PVH entry).
const kernelEntry = 0x100000

const (
	fillStart = 2 << 20
	fillSize  = 32 << 20
)

// readGuest reads a 32-bit word of guest-physical memory through the monitor.
func readGuest(t *testing.T, m vmm.Machine, addr int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := dialQMP(ctx, m.Record().Sockets["qmp"])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out string
	if err := s.run("human-monitor-command", map[string]string{"command-line": "xp /1wx " + strconv.Itoa(addr)}, &out); err != nil {
		t.Fatal(err)
	}
	_, word, _ := strings.Cut(strings.TrimSpace(out), ": ")
	return word
}

// privateKiB is the memory only process pid holds (Private_Dirty + Private_Clean of
// /proc/pid/smaps_rollup): what one more clone costs.
func privateKiB(t *testing.T, pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && (f[0] == "Private_Dirty:" || f[0] == "Private_Clean:") {
			n, _ := strconv.Atoi(f[1])
			total += n
		}
	}
	return total
}

// TestSnapshotRestoresGuestMemory snapshots a machine whose guest filled 32 MiB of its memory,
// with its RAM in the migration stream and in shared memory (Config.ShareMemory), and checks
// that two clones restored from each see the guest's memory. It logs what it measures: save
// and restore times, snapshot size, and the memory each clone holds on its own.
func TestSnapshotRestoresGuestMemory(t *testing.T) {
	requireQEMU(t)
	k := fillingKernel(t)
	for _, shared := range []bool{false, true} {
		t.Run("ShareMemory="+strconv.FormatBool(shared), func(t *testing.T) {
			config := func() vmm.Config {
				rt := runtimeDir(t)
				killLeftoversOnCleanup(t, rt)
				return vmm.Config{ID: "snap", Name: "snap", Dir: t.TempDir(), RuntimeDir: rt,
					VCPU: 1, MemoryMiB: 128, Accel: host.TCG, Kernel: k, ShareMemory: shared}
			}
			d := &Driver{}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			m, err := d.Start(ctx, config())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = m.Kill() })
			last := fillStart + fillSize - 4
			// The guest fills its memory at once; wait (bounded) until its last write.
			for readGuest(t, m, kernelEntry) != "0xcafebabe" {
				select {
				case <-ctx.Done():
					t.Fatal("the guest did not fill its memory")
				case <-time.After(10 * time.Millisecond):
				}
			}
			dir := t.TempDir()
			begin := time.Now()
			snap, err := m.(vmm.Snapshotter).Snapshot(ctx, dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("save: %s", time.Since(begin))
			for role := range snap.Files {
				fi, _ := os.Stat(snap.Path(role))
				t.Logf("snapshot %s: %d bytes", role, fi.Size())
			}
			if _, ok := snap.Files["memory"]; ok != shared {
				t.Errorf("snapshot files %v; a memory file is there when the RAM is shared", snap.Files)
			}
			for i := 0; i < 2; i++ {
				begin := time.Now()
				c, err := d.Restore(ctx, config(), snap)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = c.Kill() })
				t.Logf("clone %d restore to running: %s", i, time.Since(begin))
				for _, addr := range []int{fillStart, fillStart + fillSize/2, last} {
					if got := readGuest(t, c, addr); got != "0xdeadbeef" {
						t.Errorf("clone %d: guest memory at %#x = %s; want 0xdeadbeef", i, addr, got)
					}
				}
				if got := readGuest(t, c, kernelEntry); got != "0xcafebabe" {
					t.Errorf("clone %d: guest memory at the kernel's entry = %s; want the guest's 0xcafebabe, not the kernel loaded afresh", i, got)
				}
				t.Logf("clone %d private memory: %d KiB (the original's: %d KiB)", i, privateKiB(t, c.Record().PID), privateKiB(t, m.Record().PID))
			}
		})
	}
}
