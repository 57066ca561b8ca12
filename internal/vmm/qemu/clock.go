package qemu

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// A guest's clock stands still while its machine is stopped: under TCG the guest's TSC and
// QEMU's virtual clock (the local APIC's timers) are counted from the host's only while the
// vCPUs run, and the stream saves where they stood. A machine restored from a snapshot taken
// a moment ago therefore runs that moment behind, and its agent had to step the clock
// (clock_settime), which wakes every process that asked to hear of clock changes: under
// emulation PID 1, journald, logind and D-Bus then spent ~0.2 s of the guest's CPU in every
// clone of a fork, beside its renewal.
//
// Instead, a restored TCG machine whose snapshot was stopped at most maxClockCatchUp ago is
// given a stream whose "timer" section counts that time as run: the guest's TSC and virtual
// clock jump forward by it when the vCPUs continue, as after a host that did not schedule
// the VM for a while. The guest's time is then right (within the restore's own duration),
// its pending timers fire, and the agent finds nothing to set. Older snapshots (a boot
// snapshot restored hours later) keep the clock step: a jump of hours would trip the guest's
// soft-lockup and RCU stall detectors and exceed what its clocksource may skip. Under KVM the
// clock is KVM's and nothing is patched.

// maxClockCatchUp is the longest stop a restored machine's clock is caught up over; the
// guest's soft-lockup detector reports a CPU that saw no tick for 20 s.
const maxClockCatchUp = 10 * time.Second

// maxStateScan bounds how much of a state stream is read to find, or to patch, its timer
// section: the streams that carry one worth patching hold device state only (tens of KB).
const maxStateScan = 4 << 20

// timerHeader is how QEMU 7.2 begins the "timer" section (softmmu/cpu-timers.c) after its
// QEMU_VM_SECTION_FULL byte and section id: the name, instance 0, version 2. Its fields
// follow: cpu_ticks_offset (the guest's TSC when stopped, in host TSC ticks), 8 unused bytes
// and cpu_clock_offset (the virtual clock when stopped, in ns), all big-endian; then the
// section footer (0x7e and the section id again).
var timerHeader = []byte("\x05timer\x00\x00\x00\x00\x00\x00\x00\x02")

const (
	sectionFull   = 0x04
	sectionFooter = 0x7e
	timerFields   = 24
)

// findTimerFields returns the offset in stream of the timer section's fields, or -1 when
// stream has no such section (whole, with its footer). Callers use it only on streams that
// carry no guest RAM, in which no guest-written bytes can pose as the section.
func findTimerFields(stream []byte) int {
	from := 0
	for {
		i := bytes.Index(stream[from:], timerHeader)
		if i < 0 {
			return -1
		}
		at := from + i
		fields := at + len(timerHeader)
		footer := fields + timerFields
		if at >= 5 && stream[at-5] == sectionFull && footer+5 <= len(stream) &&
			stream[footer] == sectionFooter && bytes.Equal(stream[at-4:at], stream[footer+1:footer+5]) {
			return fields
		}
		from = at + 1
	}
}

// timerOffsetOf reads the state stream in path and returns findTimerFields of it (-1 also
// when the section is not within its first maxStateScan bytes).
func timerOffsetOf(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return -1, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateScan))
	if err != nil {
		return -1, err
	}
	return int64(findTimerFields(b)), nil
}

// catchUpClock returns, in a memfd, the stream of f with its timer section (fields at
// offset) moved on by behind: the TSC by behind at tscKHz, the virtual clock by behind. It
// returns nil (and the stream is used as it is) when behind is not in (0, maxClockCatchUp],
// when the TSC rate is unknown, or when the stream is not one it can patch.
func catchUpClock(f *os.File, offset int64, behind time.Duration, tscKHz int) (*os.File, error) {
	if offset <= 0 || behind <= 0 || behind > maxClockCatchUp || tscKHz <= 0 {
		return nil, nil
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > maxStateScan || offset+timerFields > st.Size() {
		return nil, nil
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("read the state stream: %w", err)
	}
	if findTimerFields(b) != int(offset) {
		return nil, nil // not the stream its snapshot described
	}
	ticks := binary.BigEndian.Uint64(b[offset:])
	clock := binary.BigEndian.Uint64(b[offset+16:])
	binary.BigEndian.PutUint64(b[offset:], ticks+uint64(behind.Nanoseconds()*int64(tscKHz)/1e6))
	binary.BigEndian.PutUint64(b[offset+16:], clock+uint64(behind.Nanoseconds()))
	fd, err := unix.MemfdCreate("banger-state", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	out := os.NewFile(uintptr(fd), "banger-state")
	if _, err := out.Write(b); err != nil {
		out.Close()
		return nil, fmt.Errorf("write the state stream: %w", err)
	}
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		out.Close()
		return nil, err
	}
	return out, nil
}
