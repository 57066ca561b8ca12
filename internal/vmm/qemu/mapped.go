package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/vmm"
)

// Snapshots of restored machines, from their memory map.
//
// A machine restored from a snapshot maps its RAM privately from that snapshot's memory file
// (shape.MappedRAM): a page its guest has not written since is the file's, a page it wrote is
// an anonymous copy in QEMU's memory. A save from the memory map makes the snapshot from those
// two, with no pass over the RAM: it copies the file (sparse: its data only) while the guest
// still runs (prepareMapped), then, the guest stopped (finishMapped), reads QEMU's page map
// (/proc/PID/pagemap) for the RAM's range and copies each page that is anonymous (present and
// not a file page) or swapped out from QEMU's memory (/proc/PID/mem) over the copy. The device
// state comes from QMP xen-save-devices-state, which saves every device and leaves out the RAM
// and every other "live" section; behind it the stream's header and configuration section are
// those a source with x-ignore-shared writes, so the snapshot is restored as any snapshot with
// a memory file is (Restore). The RAM blocks other than the guest's RAM (firmware, ACPI tables)
// are not in the stream: the restoring QEMU has them from the same binary, firmware and
// command line (a snapshot is restored only by the QEMU version that made it).
//
// The page map and the RAM are read with the guest stopped, so nothing writes its RAM
// meanwhile; a page the guest wrote after the file's copy was made is QEMU's by then, and is
// copied with the others. So the guest is paused for its device state and the pages it wrote
// since its restore only, not for the copy of the file's data. The cost is a copy of the
// file's data and of those pages: a 1 GiB guest warm-started from a boot snapshot with 170 MiB
// of data was saved in 0.13 s (the daemon's capture step, when the copy was still made in the
// pause), where migrating it into a template (template.go) took 3.4 s, and 9 s for a 2.9 GiB
// one, since a template receives every page of the RAM.
//
// errNotMapped says that this way cannot save the machine and the template must: a record
// without MappedRAM (an older banger), a memory file replaced or gone whose mapping cannot be
// opened through /proc/PID/map_files (a daemon that is not root), QEMU's memory not readable by
// the daemon, or a QEMU without xen-save-devices-state.

var errNotMapped = errors.New("the machine's RAM cannot be saved from its memory map")

// machineType is the machine type banger starts QEMU with, as the stream's configuration
// section names it.
const machineType = "microvm"

// maxDeviceState bounds the device state QEMU writes (a few tens of KB for banger's machines).
const maxDeviceState = 64 << 20

// Page map entry bits (Documentation/admin-guide/mm/pagemap.rst).
const (
	pmPresent = 1 << 63
	pmSwapped = 1 << 62
	pmFile    = 1 << 61 // a file page or shared anonymous memory
)

const pageSize = 4096

// mappedSave is a save from the memory map under way (see above): what it reads QEMU's
// memory through, and the copy of the memory file the machine maps, made while its guest may
// still run — the file does not change (the pages the guest writes become QEMU's, not the
// file's), so only the pages written by the time the guest stopped are copied after the stop.
type mappedSave struct {
	dir          string // the snapshot's directory
	ram          ramMapping
	size         int64
	pagemap, mem *os.File
	out          *os.File // the snapshot's memory file
	closed       sync.Once
}

// prepareMapped opens what a save of the machine of shape sh from its memory map needs and
// copies the memory file the machine maps into dir; errNotMapped (wrapped) when this way cannot
// save the machine, and then nothing was written. It needs no stopped guest: Precopy, or else
// Snapshot, calls it before the vCPUs stop, so that the guest is paused only for finishMapped.
func (m *machine) prepareMapped(ctx context.Context, dir string, sh shape) (_ *mappedSave, err error) {
	pid := m.rec.PID
	p := &mappedSave{size: int64(sh.MemoryMiB) << 20}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if p.ram, err = findRAMMapping(pid, sh); err != nil {
		return nil, fmt.Errorf("%w: %v", errNotMapped, err)
	}
	base, err := p.ram.open(pid)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNotMapped, err)
	}
	defer base.Close()
	if p.pagemap, err = os.Open(fmt.Sprintf("/proc/%d/pagemap", pid)); err != nil {
		return nil, fmt.Errorf("%w: %v", errNotMapped, err)
	}
	if p.mem, err = os.Open(fmt.Sprintf("/proc/%d/mem", pid)); err != nil {
		return nil, fmt.Errorf("%w: %v", errNotMapped, err)
	}
	// Reading one page proves that the daemon may read QEMU's memory (ptrace access).
	if _, err := p.mem.ReadAt(make([]byte, 8), int64(p.ram.start)); err != nil {
		return nil, fmt.Errorf("%w: read QEMU's memory: %v", errNotMapped, err)
	}
	if p.out, err = os.OpenFile(filepath.Join(dir, memoryFile), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600); err != nil {
		return nil, err
	}
	if err := copySparse(ctx, base, p.out, p.size); err != nil {
		return nil, fmt.Errorf("copy the memory file the machine was restored from: %w", err)
	}
	return p, nil
}

// finishMapped completes the save p into dir, the machine stopped: its device state (QMP
// session s) and, over the copy of its memory file, every page of the guest's RAM that QEMU's
// page map says is not the file's. errNotMapped (wrapped) when QEMU cannot save its devices
// this way: the caller then removes what prepareMapped wrote.
func (m *machine) finishMapped(ctx context.Context, s *qmpSession, dir string, p *mappedSave) error {
	devices := filepath.Join(dir, stateFile+".devices")
	defer os.Remove(devices)
	if err := s.run("xen-save-devices-state", map[string]any{"filename": devices, "live": false}, nil); err != nil {
		return fmt.Errorf("%w: %v", errNotMapped, err)
	}
	if err := writeDeviceStream(filepath.Join(dir, stateFile), devices); err != nil {
		return err
	}
	if err := copyWrittenPages(ctx, p.pagemap, p.mem, p.out, p.ram.start, p.size); err != nil {
		return err
	}
	return p.out.Close()
}

// close closes p's files (the memory file's copy stays); it may be called more than once.
func (p *mappedSave) close() {
	p.closed.Do(func() {
		for _, f := range []*os.File{p.pagemap, p.mem, p.out} {
			if f != nil {
				f.Close()
			}
		}
	})
}

// Precopy implements vmm.Precopier: for a machine that was restored (its RAM a private map of
// a memory file), the file is copied into dir now, and the Snapshot into dir that follows
// copies only the device state and the pages the guest wrote. Other machines have nothing to
// copy ahead: their RAM changes while they run.
func (m *machine) Precopy(ctx context.Context, dir string) (func(), error) {
	if err := vmm.CheckSnapshotDir(dir, stateFile, memoryFile); err != nil {
		return nil, fmt.Errorf("qemu: copy ahead of a snapshot: %w", err)
	}
	var sh shape
	if len(m.rec.Extra) == 0 || json.Unmarshal(m.rec.Extra, &sh) != nil || sh.SharedRAM || sh.MappedRAM == "" {
		return func() {}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, saveBound)
	defer cancel()
	p, err := m.prepareMapped(ctx, dir, sh)
	if errors.Is(err, errNotMapped) {
		return func() {}, nil // Snapshot saves it through a template
	}
	if err != nil {
		vmm.RemoveSnapshotFiles(dir, memoryFile)
		return nil, fmt.Errorf("qemu: copy ahead of a snapshot into %s: %w", dir, err)
	}
	p.dir = dir
	m.mu.Lock()
	old := m.precopied
	m.precopied = p
	m.mu.Unlock()
	if old != nil {
		old.close()
	}
	return func() {
		m.mu.Lock()
		if m.precopied == p {
			m.precopied = nil
		}
		m.mu.Unlock()
		p.close()
	}, nil
}

// takePrecopy returns, and forgets, what a Precopy into dir copied; nil when there is none.
func (m *machine) takePrecopy(dir string) *mappedSave {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.precopied
	if p == nil || p.dir != dir {
		return nil
	}
	m.precopied = nil
	return p
}

// ramMapping is the mapping of a restored machine's RAM in QEMU's address space.
type ramMapping struct {
	start, end uint64
	dev        uint64 // of the mapped file, as /proc/PID/maps gives it (major:minor)
	inode      uint64
	path       string
}

// findRAMMapping finds, in QEMU process pid's /proc/PID/maps, the guest's RAM of the machine
// of shape sh: the private mapping, at offset 0 and of the RAM's size, of its memory file.
func findRAMMapping(pid int, sh shape) (ramMapping, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return ramMapping{}, err
	}
	want := ramFile{path: sh.MappedRAM, dev: sh.MappedRAMDev, inode: sh.MappedRAMInode}
	size := int64(sh.MemoryMiB) << 20
	r, err := parseRAMMapping(bytes.NewReader(b), want, size)
	if err != nil {
		// The kernel names the file by its path with symbolic links resolved.
		if real, rerr := filepath.EvalSymlinks(want.path); rerr == nil && real != want.path {
			want.path = real
			if r, err2 := parseRAMMapping(bytes.NewReader(b), want, size); err2 == nil {
				r.path = sh.MappedRAM
				return r, nil
			}
		}
	}
	return r, err
}

// ramFile is the memory file a machine's RAM maps: by the path it was restored from and, when
// known (inode not 0), by its device and inode, which still name it once it was moved (the
// maps file then shows its new path) or removed.
type ramFile struct {
	path       string
	dev, inode uint64
}

// parseRAMMapping reads a maps file (see findRAMMapping) for the private mapping of want at
// offset 0 that is size bytes long.
func parseRAMMapping(r io.Reader, want ramFile, size int64) (ramMapping, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<10)
	for sc.Scan() {
		// start-end perms offset major:minor inode path (the path may hold spaces, and
		// ends in " (deleted)" when the file is gone)
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok || len(f[1]) != 4 || f[1][3] != 'p' || strings.Trim(f[2], "0") != "" {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		inode, err3 := strconv.ParseUint(f[4], 10, 64)
		major, minor, ok := strings.Cut(f[3], ":")
		maj, err4 := strconv.ParseUint(major, 16, 32)
		mnr, err5 := strconv.ParseUint(minor, 16, 32)
		if !ok || errors.Join(err1, err2, err3, err4, err5) != nil || end <= start || end-start != uint64(size) {
			continue
		}
		dev := unix.Mkdev(uint32(maj), uint32(mnr))
		mapped := strings.Join(f[5:], " ")
		byPath := mapped == want.path || mapped == want.path+" (deleted)"
		byIdentity := want.inode != 0 && inode == want.inode && dev == want.dev
		if !byPath && !byIdentity {
			continue
		}
		return ramMapping{start: start, end: end, dev: dev, inode: inode, path: want.path}, nil
	}
	if err := sc.Err(); err != nil {
		return ramMapping{}, err
	}
	return ramMapping{}, fmt.Errorf("no private mapping of %s of %d bytes", want.path, size)
}

// open opens the file the mapping maps: through /proc/PID/map_files (root only; works also when
// the file was removed or replaced), else by its path, checked to be the mapped file still.
func (r ramMapping) open(pid int) (*os.File, error) {
	if f, err := os.Open(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, r.start, r.end)); err == nil {
		if r.is(f) {
			return f, nil
		}
		f.Close()
	}
	f, err := os.Open(r.path)
	if err != nil {
		return nil, err
	}
	if !r.is(f) {
		f.Close()
		return nil, fmt.Errorf("%s is no longer the file the machine maps", r.path)
	}
	return f, nil
}

// is says whether f is the mapped file.
func (r ramMapping) is(f *os.File) bool {
	var st unix.Stat_t
	return unix.Fstat(int(f.Fd()), &st) == nil && st.Ino == r.inode && uint64(st.Dev) == r.dev
}

// writeDeviceStream writes to path a migration stream of the device state QEMU saved in
// devices (xen-save-devices-state: the stream header, then device sections up to QEMU_VM_EOF)
// with the configuration section a source with x-ignore-shared sends after the header.
func writeDeviceStream(path, devices string) error {
	in, err := os.Open(devices)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if fi.Size() > maxDeviceState {
		return fmt.Errorf("QEMU saved %d bytes of device state; more than %d is not a device state", fi.Size(), maxDeviceState)
	}
	header := make([]byte, 8)
	if _, err := io.ReadFull(in, header); err != nil {
		return fmt.Errorf("QEMU's device state: %w", err)
	}
	if !bytes.Equal(header, streamHeader()) {
		return fmt.Errorf("QEMU's device state begins with %x, not a migration stream header", header)
	}
	out, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if _, err := out.Write(append(streamHeader(), configurationSection(machineType)...)); err != nil {
		return err
	}
	if _, err := io.Copy(out, io.LimitReader(in, maxDeviceState)); err != nil {
		return err
	}
	return out.Close()
}

// Migration stream framing (QEMU migration/savevm.c).
const (
	streamMagic      = 0x5145564d // "QEVM"
	streamVersion    = 3
	vmConfiguration  = 0x07
	vmSubsection     = 0x05
	ignoreSharedName = "x-ignore-shared"
)

func streamHeader() []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, streamMagic), streamVersion)
}

// configurationSection is the section QEMU sends after the header: the machine type, and the
// capabilities the destination must have too, here x-ignore-shared (vmstate_configuration:
// len, name, then the subsection "configuration/capabilities", version 1: a count and each
// capability's name).
func configurationSection(machine string) []byte {
	b := binary.BigEndian.AppendUint32([]byte{vmConfiguration}, uint32(len(machine)))
	b = append(b, machine...)
	const sub = "configuration/capabilities"
	b = append(append(b, vmSubsection, byte(len(sub))), sub...)
	b = binary.BigEndian.AppendUint32(b, 1) // version
	b = binary.BigEndian.AppendUint32(b, 1) // count
	return append(append(b, byte(len(ignoreSharedName))), ignoreSharedName...)
}

// pagemapBatch is how many page map entries copyWrittenPages reads at once (256 KiB).
const pagemapBatch = 32 << 10

// copyWrittenPages copies, over out (the copy of the mapped file), every page of the guest RAM
// mapped at start (size bytes) that QEMU's page map says is not the file's: anonymous or
// swapped. A zero page becomes a hole.
func copyWrittenPages(ctx context.Context, pagemap, mem, out *os.File, start uint64, size int64) error {
	pages := size / pageSize
	entries := make([]byte, pagemapBatch*8)
	buf := make([]byte, 256*pageSize)
	for first := int64(0); first < pages; first += pagemapBatch {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(pagemapBatch, pages-first)
		b := entries[:n*8]
		if _, err := pagemap.ReadAt(b, int64(start/pageSize+uint64(first))*8); err != nil {
			return fmt.Errorf("read QEMU's page map: %w", err)
		}
		for i := int64(0); i < n; {
			if !written(b, i) {
				i++
				continue
			}
			// A run of written pages, read at once.
			j := i + 1
			for j < n && j-i < int64(len(buf)/pageSize) && written(b, j) {
				j++
			}
			run := buf[:(j-i)*pageSize]
			off := (first + i) * pageSize
			if _, err := mem.ReadAt(run, int64(start)+off); err != nil {
				return fmt.Errorf("read the guest's RAM from QEMU: %w", err)
			}
			if err := writePages(out, run, off); err != nil {
				return fmt.Errorf("write the guest's RAM: %w", err)
			}
			i = j
		}
	}
	return nil
}

// written says whether page map entry i of b is a page not the mapped file's.
func written(b []byte, i int64) bool {
	e := binary.LittleEndian.Uint64(b[i*8:])
	return e&pmSwapped != 0 || e&pmPresent != 0 && e&pmFile == 0
}

// writePages writes the pages of run at off in out: non-zero ones as they are, zero ones as
// holes.
func writePages(out *os.File, run []byte, off int64) error {
	for p := 0; p < len(run); {
		zero := isZero(run[p : p+pageSize])
		q := p + pageSize
		for q < len(run) && isZero(run[q:q+pageSize]) == zero {
			q += pageSize
		}
		if zero {
			if err := unix.Fallocate(int(out.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off+int64(p), int64(q-p)); err != nil {
				// A file system without holes: write the zeros.
				if _, err := out.WriteAt(run[p:q], off+int64(p)); err != nil {
					return err
				}
			}
		} else if _, err := out.WriteAt(run[p:q], off+int64(p)); err != nil {
			return err
		}
		p = q
	}
	return nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// copySparse copies the first size bytes of src into out (empty), keeping src's holes holes,
// and sets out's size to size. It stops when ctx is done.
func copySparse(ctx context.Context, src, out *os.File, size int64) error {
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(src.Fd()), off, unix.SEEK_DATA)
		if err != nil {
			break // ENXIO: no data after off
		}
		hole, err := unix.Seek(int(src.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		hole = min(hole, size)
		// In chunks, so that a cancelled snapshot stops within one.
		for off = data; off < hole; off += ramChunk {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := copyRange(src, out, off, min(ramChunk, hole-off)); err != nil {
				return err
			}
		}
		off = hole
	}
	return out.Truncate(size)
}

// copyRange copies n bytes at off from src to out, in the kernel where it can.
func copyRange(src, out *os.File, off, n int64) error {
	for n > 0 {
		roff, woff := off, off
		c, err := unix.CopyFileRange(int(src.Fd()), &roff, int(out.Fd()), &woff, int(n), 0)
		if err != nil || c == 0 {
			// Not between these files (EXDEV, EOPNOTSUPP…): through a buffer.
			_, err := io.Copy(io.NewOffsetWriter(out, off), io.NewSectionReader(src, off, n))
			return err
		}
		off, n = off+int64(c), n-int64(c)
	}
	return nil
}
