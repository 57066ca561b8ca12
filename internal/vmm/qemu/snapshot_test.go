package qemu

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/hostnet"
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
	s := testQMP(t, m)
	defer s.Close()
	var out string
	if err := s.run("human-monitor-command", map[string]string{"command-line": "xp /1wx " + strconv.Itoa(addr)}, &out); err != nil {
		t.Fatal(err)
	}
	_, word, _ := strings.Cut(strings.TrimSpace(out), ": ")
	return word
}

// testQMP opens a QMP session with m's QEMU (its commands bounded to 10 s) or fails t.
func testQMP(t *testing.T, m vmm.Machine) *qmpSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := dialQMP(ctx, m.Record().Sockets["qmp"])
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// announceRounds is how many rounds of announcements m's QEMU has a guest make after an
// incoming migration.
func announceRounds(t *testing.T, m vmm.Machine) int {
	t.Helper()
	s := testQMP(t, m)
	defer s.Close()
	var out struct {
		Rounds *int `json:"announce-rounds"`
	}
	if err := s.run("query-migrate-parameters", nil, &out); err != nil {
		t.Fatal(err)
	}
	if out.Rounds == nil {
		t.Fatal("query-migrate-parameters has no announce-rounds")
	}
	return *out.Rounds
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
// with its RAM anonymous (saved through a template) and in shared memory (Config.ShareMemory), and checks
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
			// Unshared RAM goes through a template (template.go): the RAM is in a file either way.
			if _, ok := snap.Files["memory"]; !ok {
				t.Errorf("snapshot files %v; want a memory file", snap.Files)
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
				if got := announceRounds(t, c); got != 0 {
					t.Errorf("clone %d: announce-rounds %d; want 0 (a restored guest must not announce its snapshot's address)", i, got)
				}
				t.Logf("clone %d private memory: %d KiB (the original's: %d KiB)", i, privateKiB(t, c.Record().PID), privateKiB(t, m.Record().PID))
			}
		})
	}
}

// TestSnapshotOfRestoredMachineKeepsRAMOutOfStream snapshots a machine that was itself
// restored (a warm start; its RAM a private mapping of the first snapshot's memory file) and
// checks that the snapshot has the shape of one of a cold-booted machine: the RAM in a sparse
// memory file, not in the state; clones of it see the guest's memory and hold little of their
// own. The machine has a read-only and a writable disk and a NIC (in a network namespace of
// the test's), whose devices the template that reshapes the snapshot must reproduce. Before
// the template, such a snapshot carried all the guest's RAM in its stream.
//
// It runs twice: with the template's NIC a tap of its own in a namespace of its own (root), and
// with a scratch tap from the driver's ScratchTap, as a daemon that is not root gives it (a
// template cannot make a namespace then); the scratch tap is asked for and gone afterwards.
func TestSnapshotOfRestoredMachineKeepsRAMOutOfStream(t *testing.T) {
	requireQEMU(t)
	ns := testNetNS(t)
	t.Run("memory map", func(t *testing.T) { snapshotOfRestoredMachine(t, ns, nil, false, false, false) })
	// As the daemon saves a VM: Precopy first, the guest writing before the Snapshot.
	t.Run("memory map copied ahead", func(t *testing.T) { snapshotOfRestoredMachine(t, ns, nil, false, false, true) })
	// The memory file moved away and removed, as removing its snapshot does (by way of a trash
	// directory) while machines restored from it run.
	t.Run("memory map of a removed file", func(t *testing.T) { snapshotOfRestoredMachine(t, ns, nil, false, true, false) })
	t.Run("template's own tap", func(t *testing.T) { snapshotOfRestoredMachine(t, ns, nil, true, false, false) })
	t.Run("scratch tap", func(t *testing.T) {
		h, err := hostnet.Open(hostnet.Config{Bridge: "fmbr0", CIDR: netip.MustParsePrefix("10.251.0.0/29"), NetNS: ns, StateDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		asked := 0
		scratch := func() (*os.File, func(), error) {
			asked++
			id := fmt.Sprintf("5c7a7c%026x", asked)
			f, err := h.AddTap(id)
			return f, func() { _ = h.DeleteTap(id) }, err
		}
		snapshotOfRestoredMachine(t, ns, scratch, true, false, false)
		if asked == 0 {
			t.Error("the template did not take its NIC from the driver's ScratchTap")
		}
		if taps, err := h.Taps(); err != nil || len(taps) != 0 {
			t.Errorf("scratch taps left after the snapshot: %v %v", taps, err)
		}
	})
}

// The guest-physical addresses snapshotOfRestoredMachine writes in the restored machine, and
// what: over a page of the guest's fill, over a page the guest never wrote (a hole of the
// memory file), and zeros over a page of the fill (which the snapshot's memory file must hold
// as zeros, not as the fill its base has there).
var writtenAfterRestore = []struct {
	addr int
	word uint32
}{
	{fillStart + fillSize/2, 0x5eed1e55},
	{fillStart + fillSize + 64<<10, 0x0badf00d},
	{fillStart + 8<<10, 0},
}

// writtenDuringSave is what snapshotOfRestoredMachine writes in the restored machine while its
// Snapshot runs, after the copy of its memory file and before its vCPUs stop: over a page of
// the fill, and over a hole of the memory file.
var writtenDuringSave = []struct {
	addr int
	word uint32
}{
	{fillStart + fillSize/4, 0x0dd5a7e5},
	{fillStart + fillSize + 128<<10, 0x5ca1ab1e},
}

// writeGuest writes word at guest-physical addr of machine m (RAM mapped at offset 0 of its
// memory file, as microvm's RAM below 3.5 GiB is) through QEMU's /proc/PID/mem: the write a
// guest makes, for a halted one, copying the page out of the memory file.
func writeGuest(t *testing.T, m vmm.Machine, addr int, word uint32) {
	t.Helper()
	var sh shape
	if err := json.Unmarshal(m.Record().Extra, &sh); err != nil {
		t.Fatal(err)
	}
	ram, err := findRAMMapping(m.Record().PID, sh)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", m.Record().PID), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	page := make([]byte, 4096)
	if word != 0 {
		for i := 0; i < len(page); i += 4 {
			binary.LittleEndian.PutUint32(page[i:], word)
		}
	}
	if _, err := mem.WriteAt(page, int64(ram.start)+int64(addr&^4095)); err != nil {
		t.Fatal(err)
	}
}

// snapshotOfRestoredMachine snapshots a restored machine, from its memory map (mapped.go) or,
// viaTemplate, through a template (its record made to look like an older banger's, which did
// not record the memory file), and checks what its clones see. With removeMemory the memory
// file the machine was restored from is moved to another directory and removed first; with
// precopy the snapshot is made as the daemon makes it, after a Precopy into its directory.
func snapshotOfRestoredMachine(t *testing.T, ns string, scratch func() (*os.File, func(), error), viaTemplate, removeMemory, precopy bool) {
	k := fillingKernel(t)
	ro := filepath.Join(t.TempDir(), "ro.img")
	if err := os.WriteFile(ro, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	n := 0
	config := func() vmm.Config {
		rt := runtimeDir(t)
		killLeftoversOnCleanup(t, rt)
		n++
		rw := filepath.Join(t.TempDir(), "rw.img") // each machine's own
		if err := os.WriteFile(rw, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		// The other runs' taps are still there.
		tap := "fmtap" + strconv.Itoa(n)
		switch {
		case scratch != nil:
			tap = "fmstap" + strconv.Itoa(n)
		case removeMemory:
			tap = "fmrtap" + strconv.Itoa(n)
		case precopy:
			tap = "fmptap" + strconv.Itoa(n)
		case !viaTemplate:
			tap = "fmmtap" + strconv.Itoa(n)
		}
		if out, err := exec.Command("ip", "-n", filepath.Base(ns), "tuntap", "add", "dev", tap, "mode", "tap").CombinedOutput(); err != nil {
			t.Fatalf("ip tuntap add: %v: %s", err, out)
		}
		return vmm.Config{ID: "snap", Name: "snap", Dir: t.TempDir(), RuntimeDir: rt,
			VCPU: 1, MemoryMiB: 128, Accel: host.TCG, Kernel: k, ShareMemory: true,
			Disks: []vmm.Disk{{Path: ro, ReadOnly: true}, {Path: rw}},
			NIC:   &vmm.NIC{Tap: tap, MAC: "02:00:00:00:00:0" + strconv.Itoa(n)}, NetNS: ns}
	}
	var log bytes.Buffer
	d := &Driver{ScratchTap: scratch, Log: slog.New(slog.NewTextHandler(&log, nil))}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := d.Start(ctx, config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Kill() })
	for readGuest(t, m, kernelEntry) != "0xcafebabe" {
		select {
		case <-ctx.Done():
			t.Fatal("the guest did not fill its memory")
		case <-time.After(10 * time.Millisecond):
		}
	}
	first, err := m.(vmm.Snapshotter).Snapshot(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	warm, err := d.Restore(ctx, config(), first)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = warm.Kill() })
	// With the agent port connected, as a daemon's agent session keeps it: the template's is
	// connected too (agentConnected, dialListener).
	agentConn, err := warm.DialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer agentConn.Close()
	for _, w := range writtenAfterRestore {
		writeGuest(t, warm, w.addr, w.word)
	}
	if removeMemory {
		moved := filepath.Join(t.TempDir(), "memory")
		if err := os.Rename(first.Path("memory"), moved); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(moved); err != nil {
			t.Fatal(err)
		}
	}
	want := "memory map"
	if viaTemplate {
		want = "template"
		var sh shape
		if err := json.Unmarshal(warm.Record().Extra, &sh); err != nil {
			t.Fatal(err)
		}
		sh.MappedRAM = ""
		warm.(*machine).rec.Extra, _ = json.Marshal(sh)
	}
	// Written after the memory file's copy was made, before the vCPUs stopped: the pages are
	// QEMU's by then, and the snapshot must have them.
	during := 0
	hook := func() {
		during++
		for _, w := range writtenDuringSave {
			writeGuest(t, warm, w.addr, w.word)
		}
	}
	afterPrepare.Store(&hook)
	defer afterPrepare.Store(nil)
	dir := t.TempDir()
	begin := time.Now()
	if precopy {
		// As the daemon saves a VM: the memory file copied ahead, the guest writing on.
		release, err := warm.(vmm.Precopier).Precopy(ctx, dir)
		if err != nil {
			t.Fatalf("Precopy of a restored machine: %v", err)
		}
		defer release()
		if fi, err := os.Stat(filepath.Join(dir, memoryFile)); err != nil || allocatedBytes(fi) == 0 {
			t.Fatalf("after Precopy the snapshot's memory file is %v, %v; want the copy of the machine's memory file", fi, err)
		}
		hook()
		afterPrepare.Store(nil) // Snapshot has nothing to copy ahead of the stop now
	}
	snap, err := warm.(vmm.Snapshotter).Snapshot(ctx, dir)
	afterPrepare.Store(nil)
	if err != nil {
		t.Fatalf("Snapshot of a restored machine: %v", err)
	}
	t.Logf("save of the restored machine: %s", time.Since(begin))
	if got := warm.(*machine).savedBy; got != want {
		t.Errorf("the restored machine was saved by %q; want by %q", got, want)
	}
	if viaTemplate != (during == 0) {
		t.Errorf("the memory file was copied before the stop %d times; want once from the memory map, never through a template", during)
	}
	if logged := strings.Contains(log.String(), "template"); logged != viaTemplate {
		t.Errorf("the driver's log after the save: %q; want a line on the template (with why) only when it was used", log.String())
	} else if viaTemplate && !strings.Contains(log.String(), "why=") {
		t.Errorf("the driver's log says the template was used but not why: %q", log.String())
	}
	if st, err := qmpStatus(ctx, warm.Record().Sockets["qmp"]); err != nil || st != "running" {
		t.Errorf("the restored machine after its Snapshot is %q (%v); want running", st, err)
	}
	if snap.Path("memory") == "" {
		t.Fatalf("snapshot files %v; want a memory file: the RAM of a restored machine left in the stream costs every clone all of it", snap.Files)
	}
	state, err := os.Stat(snap.Path("state"))
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Stat(snap.Path("memory"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("state %d bytes; memory %d bytes, %d allocated", state.Size(), mem.Size(), allocatedBytes(mem))
	if state.Size() > 4<<20 {
		t.Errorf("state is %d bytes; want the device state only (the guest filled %d MiB)", state.Size(), fillSize>>20)
	}
	if mem.Size() != 128<<20 {
		t.Errorf("memory file is %d bytes; want the guest's 128 MiB", mem.Size())
	}
	if a := allocatedBytes(mem); a > 64<<20 {
		t.Errorf("memory file has %d bytes allocated; want it sparse (the guest wrote %d MiB of 128)", a, fillSize>>20)
	}
	for i := 0; i < 2; i++ {
		c, err := d.Restore(ctx, config(), snap)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Kill() })
		for _, addr := range []int{fillStart, fillStart + fillSize/2 - 4096, fillStart + fillSize - 4} {
			if got := readGuest(t, c, addr); got != "0xdeadbeef" {
				t.Errorf("clone %d: guest memory at %#x = %s; want 0xdeadbeef", i, addr, got)
			}
		}
		for _, w := range writtenAfterRestore {
			if got, want := readGuest(t, c, w.addr), fmt.Sprintf("0x%08x", w.word); got != want {
				t.Errorf("clone %d: guest memory at %#x = %s; want %s, written in the restored machine before its snapshot", i, w.addr, got, want)
			}
		}
		if during > 0 {
			for _, w := range writtenDuringSave {
				if got, want := readGuest(t, c, w.addr), fmt.Sprintf("0x%08x", w.word); got != want {
					t.Errorf("clone %d: guest memory at %#x = %s; want %s, written while its memory file was copied", i, w.addr, got, want)
				}
			}
		}
		if got := readGuest(t, c, kernelEntry); got != "0xcafebabe" {
			t.Errorf("clone %d: guest memory at the kernel's entry = %s; want the guest's 0xcafebabe", i, got)
		}
		if p := privateKiB(t, c.Record().PID); p > (fillSize>>10)/2+64<<10 {
			t.Errorf("clone %d holds %d KiB of its own; want the guest's memory shared with the memory file", i, p)
		} else {
			t.Logf("clone %d private memory: %d KiB", i, p)
		}
	}
	// The template is gone and left nothing but the snapshot's files.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("snapshot directory holds %v; want state, memory and %s", names, vmm.SnapshotFile)
	}
}

// allocatedBytes is the disk space fi's file takes.
func allocatedBytes(fi os.FileInfo) int64 { return fi.Sys().(*syscall.Stat_t).Blocks * 512 }

// testNetNS makes a network namespace for the test's taps and removes it at the end.
func testNetNS(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("forkmem-q%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("cannot make a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	return "/run/netns/" + name
}
