package qemu

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/vmm"
)

// qemuStreamStart is the start of a state stream QEMU 7.2 wrote for a microvm saved from its
// memory map: header, configuration section, the timer section (ticks 0x55b97a1b72, virtual
// clock 0x230e2a3a4c ns) and the beginning of the fw_cfg section.
var qemuStreamStart, _ = hex.DecodeString("5145564d0000000307000000076d6963726f766d051a636f6e66696775726174" +
	"696f6e2f6361706162696c697469657300000001000000010f782d69676e6f72652d736861726564" +
	"0400000000057469" + "6d65720000000000000002" + "00000055b97a1b72" + "0000000000000000" +
	"000000230e2a3a4c" + "7e00000000" + "04000000040666775f636667000000000000000200")

const qemuTimerFields = 0x5b

func TestFindTimerFieldsInAQEMUStream(t *testing.T) {
	if got := findTimerFields(qemuStreamStart); got != qemuTimerFields {
		t.Fatalf("timer fields at %d; want %d", got, qemuTimerFields)
	}
	for name, b := range map[string][]byte{
		"cut before its footer": qemuStreamStart[:qemuTimerFields+timerFields],
		"another footer id":     bytes.Replace(qemuStreamStart, []byte("\x7e\x00\x00\x00\x00"), []byte("\x7e\x00\x00\x00\x01"), 1),
		"not a full section":    bytes.Replace(qemuStreamStart, []byte("\x04\x00\x00\x00\x00\x05timer"), []byte("\x02\x00\x00\x00\x00\x05timer"), 1),
		"version 1":             bytes.Replace(qemuStreamStart, []byte("timer\x00\x00\x00\x00\x00\x00\x00\x02"), []byte("timer\x00\x00\x00\x00\x00\x00\x00\x01"), 1),
		"empty":                 nil,
	} {
		if got := findTimerFields(b); got != -1 {
			t.Errorf("%s: timer fields at %d; want none", name, got)
		}
	}
	// A false start before the real section is passed over.
	b := append([]byte("\x05timer\x00\x00\x00\x00\x00\x00\x00\x02junk"), qemuStreamStart...)
	if got := findTimerFields(b); got != qemuTimerFields+18 {
		t.Errorf("after a false start: timer fields at %d; want %d", got, qemuTimerFields+18)
	}
}

func FuzzFindTimerFields(f *testing.F) {
	f.Add(qemuStreamStart)
	f.Add([]byte("\x04\x00\x00\x00\x01\x05timer\x00\x00\x00\x00\x00\x00\x00\x02"))
	f.Fuzz(func(t *testing.T, b []byte) {
		at := findTimerFields(b)
		if at == -1 {
			return
		}
		footer := at + timerFields
		if at < 19 || footer+5 > len(b) || b[footer] != sectionFooter || !bytes.Equal(b[at-len(timerHeader):at], timerHeader) {
			t.Fatalf("findTimerFields(%x) = %d, not a whole timer section", b, at)
		}
	})
}

// writtenFile returns a file holding b, open for reading, closed when the test ends.
func writtenFile(t *testing.T, b []byte) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestCatchUpClockMovesTheTimerSectionOn(t *testing.T) {
	f := writtenFile(t, qemuStreamStart)
	caught, err := catchUpClock(f, qemuTimerFields, 1500*time.Millisecond, 2_000_000)
	if err != nil || caught == nil {
		t.Fatalf("catchUpClock = %v, %v", caught, err)
	}
	defer caught.Close()
	got, err := io.ReadAll(caught)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(qemuStreamStart)
	binary.BigEndian.PutUint64(want[qemuTimerFields:], 0x55b97a1b72+3_000_000_000)    // 1.5 s at 2 GHz
	binary.BigEndian.PutUint64(want[qemuTimerFields+16:], 0x230e2a3a4c+1_500_000_000) // 1.5 s
	if !bytes.Equal(got, want) {
		t.Errorf("caught-up stream\n%x\nwant\n%x", got, want)
	}
}

func TestCatchUpClockLeavesWhatItMustNotPatch(t *testing.T) {
	f := writtenFile(t, qemuStreamStart)
	for name, c := range map[string]struct {
		offset int64
		behind time.Duration
		khz    int
	}{
		"not behind":             {qemuTimerFields, 0, 2_000_000},
		"ahead":                  {qemuTimerFields, -time.Second, 2_000_000},
		"too long ago":           {qemuTimerFields, maxClockCatchUp + time.Millisecond, 2_000_000},
		"TSC rate unknown":       {qemuTimerFields, time.Second, 0},
		"no timer section":       {0, time.Second, 2_000_000},
		"not where it was found": {qemuTimerFields - 1, time.Second, 2_000_000},
		"past the end":           {int64(len(qemuStreamStart)), time.Second, 2_000_000},
	} {
		if caught, err := catchUpClock(f, c.offset, c.behind, c.khz); caught != nil || err != nil {
			t.Errorf("%s: catchUpClock = %v, %v; want nil, nil", name, caught, err)
		}
	}
}

// timerOf reads the guest's TSC (host ticks) and virtual clock from the timer section of the
// snapshot's state stream.
func timerOf(t *testing.T, snap vmm.Snapshot) (ticks, clock uint64) {
	t.Helper()
	b, err := os.ReadFile(snap.Path("state"))
	if err != nil {
		t.Fatal(err)
	}
	at := findTimerFields(b)
	if at < 0 {
		t.Fatalf("no timer section in %s", snap.Path("state"))
	}
	return binary.BigEndian.Uint64(b[at:]), binary.BigEndian.Uint64(b[at+16:])
}

// TestRestoreCatchesTheClockUp restores a snapshot of a TCG machine a while after it was saved
// and saves the restored machine at once: its virtual clock and TSC must have moved on by at
// least the time between the two saves, which they do not while a machine is stopped unless the
// restore counts that time. A driver without the host's TSC rate leaves the clock behind.
func TestRestoreCatchesTheClockUp(t *testing.T) {
	requireQEMU(t)
	k := fillingKernel(t)
	khz := host.Root("/").TSCkHz()
	if khz == 0 {
		t.Skip("the host's TSC rate is unknown")
	}
	config := func() vmm.Config {
		rt := runtimeDir(t)
		killLeftoversOnCleanup(t, rt)
		return vmm.Config{ID: "clock", Name: "clock", Dir: t.TempDir(), RuntimeDir: rt,
			VCPU: 1, MemoryMiB: 128, Accel: host.TCG, Kernel: k, ShareMemory: true}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := (&Driver{TSCkHz: khz}).Start(ctx, config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Kill() })
	snap, err := m.(vmm.Snapshotter).Snapshot(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var x snapshotExtra
	if err := json.Unmarshal(snap.Extra, &x); err != nil || x.StoppedAt.IsZero() || x.TimerOffset <= 0 {
		t.Fatalf("snapshot data %s (%v); want when it stopped and where its timer section is", snap.Extra, err)
	}
	ticks0, clock0 := timerOf(t, snap)
	const wait = 1500 * time.Millisecond
	time.Sleep(wait)
	for _, c := range []struct {
		name   string
		tscKHz int
		caught bool
	}{{"caught up", khz, true}, {"TSC rate unknown", 0, false}} {
		t.Run(c.name, func(t *testing.T) {
			r, err := (&Driver{TSCkHz: c.tscKHz}).Restore(ctx, config(), snap)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Kill() })
			again, err := r.(vmm.Snapshotter).Snapshot(ctx, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			ticks1, clock1 := timerOf(t, again)
			ran := time.Duration(clock1 - clock0)
			ranTSC := time.Duration((ticks1 - ticks0) * 1e6 / uint64(khz))
			t.Logf("between the saves the guest's virtual clock moved %s, its TSC %s", ran, ranTSC)
			if c.caught && (ran < wait || ranTSC < wait) {
				t.Errorf("the restored guest's clocks moved %s and %s between saves %s apart; want them caught up", ran, ranTSC, wait)
			}
			if !c.caught && ran >= wait {
				t.Errorf("without the TSC rate the guest's virtual clock moved %s; want it left as saved", ran)
			}
		})
	}
}
