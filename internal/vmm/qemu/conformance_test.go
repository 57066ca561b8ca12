package qemu

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmtest"
)

// TestConformance runs package vmm's contract suite against the real qemu-system-x86_64 under
// TCG, with a kernel of four instructions that halts: no guest boots, QEMU just runs.
func TestConformance(t *testing.T) { conformance(t, false) }

// TestConformanceShareMemory runs the suite with the guest's RAM in a memfd
// (vmm.Config.ShareMemory), whose snapshots save it as a file clones map copy-on-write.
func TestConformanceShareMemory(t *testing.T) { conformance(t, true) }

func conformance(t *testing.T, shareMemory bool) {
	requireQEMU(t)
	kernel := haltingKernel(t)
	vmmtest.Conformance(t, func(t *testing.T) vmmtest.Harness {
		config := func(t *testing.T, kernel string) vmm.Config {
			rt := runtimeDir(t)
			killLeftoversOnCleanup(t, rt)
			return vmm.Config{
				ID: "conformance", Name: "conformance", Dir: t.TempDir(), RuntimeDir: rt,
				VCPU: 1, MemoryMiB: 64, Accel: host.TCG, Kernel: kernel, ShareMemory: shareMemory,
			}
		}
		return vmmtest.Harness{
			Driver: &Driver{},
			Config: func(t *testing.T) vmm.Config { return config(t, kernel) },
			// QEMU starts, creates its sockets and exits: it cannot load the kernel.
			FailingConfig: func(t *testing.T) vmm.Config { return config(t, filepath.Join(t.TempDir(), "no-such-vmlinux")) },
			Running:       running,
			NICByFile:     true,
		}
	})
}

// running asks QEMU whether m's vCPUs run (query-status).
func running(t *testing.T, m vmm.Machine) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := dialQMP(ctx, m.Record().Sockets["qmp"])
	if err != nil {
		t.Errorf("query-status: %v", err)
		return false
	}
	defer s.Close()
	st, err := s.status()
	if err != nil {
		t.Errorf("query-status: %v", err)
	}
	return st == "running"
}

// haltingKernel writes the smallest kernel QEMU's microvm boots: a 32-bit ELF with a PVH entry
// note (XEN_ELFNOTE_PHYS32_ENTRY) pointing at cli; hlt; jmp back to hlt, loaded at 1 MiB.
func haltingKernel(t *testing.T) string {
	t.Helper()
	return kernel(t, []byte{0xfa, 0xf4, 0xeb, 0xfd}) // cli; hlt; jmp -3
}

// kernel is haltingKernel with code (32-bit protected mode, flat segments, no paging) at its
// entry instead.
func kernel(t *testing.T, code []byte) string {
	t.Helper()
	const (
		entry   = 0x100000
		ehSize  = 52
		phSize  = 32
		codeOff = 0x1000
	)
	le := binary.LittleEndian
	note := le.AppendUint32(nil, 4)   // name size
	note = le.AppendUint32(note, 4)   // desc size
	note = le.AppendUint32(note, 18)  // XEN_ELFNOTE_PHYS32_ENTRY
	note = append(note, "Xen\x00"...) // name
	note = le.AppendUint32(note, entry)
	noteOff := uint32(ehSize + 2*phSize)

	b := []byte{0x7f, 'E', 'L', 'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0} // ELF32, LSB, v1
	for _, v := range []uint16{2, 3} {                                   // ET_EXEC, EM_386
		b = le.AppendUint16(b, v)
	}
	for _, v := range []uint32{1, entry, ehSize, 0, 0} { // version, entry, phoff, shoff, flags
		b = le.AppendUint32(b, v)
	}
	for _, v := range []uint16{ehSize, phSize, 2, 0, 0, 0} { // ehsize, phentsize, phnum, sh…
		b = le.AppendUint16(b, v)
	}
	// PT_LOAD (r-x) of the code, PT_NOTE of the note.
	for _, v := range []uint32{1, codeOff, entry, entry, uint32(len(code)), uint32(len(code)), 5, 0x1000} {
		b = le.AppendUint32(b, v)
	}
	for _, v := range []uint32{4, noteOff, 0, 0, uint32(len(note)), uint32(len(note)), 4, 4} {
		b = le.AppendUint32(b, v)
	}
	b = append(b, note...)
	b = append(b, make([]byte, codeOff-len(b))...)
	b = append(b, code...)
	p := filepath.Join(t.TempDir(), "halt.elf")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
