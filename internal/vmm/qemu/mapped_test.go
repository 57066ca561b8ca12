package qemu

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestConfigurationSectionIsQEMUs checks the configuration section against the one QEMU 7.2
// wrote after the header of a snapshot of a microvm with x-ignore-shared (the bytes 8 to 0x48
// of its stream).
func TestConfigurationSectionIsQEMUs(t *testing.T) {
	want, _ := hex.DecodeString("0700000007" + hex.EncodeToString([]byte("microvm")) +
		"051a" + hex.EncodeToString([]byte("configuration/capabilities")) +
		"00000001" + "00000001" + "0f" + hex.EncodeToString([]byte("x-ignore-shared")))
	if got := configurationSection("microvm"); !bytes.Equal(got, want) {
		t.Errorf("configuration section\n%x\nwant QEMU's\n%x", got, want)
	}
	if got := streamHeader(); !bytes.Equal(got, []byte("QEVM\x00\x00\x00\x03")) {
		t.Errorf("stream header %x", got)
	}
}

const sampleMaps = `55d4c8a00000-55d4c8b00000 r--p 00000000 fd:01 1234 /usr/bin/qemu-system-x86_64
7f0000000000-7f0008000000 rw-s 00000000 fd:01 777 /state/snaps/boot/machine/memory
7f1000000000-7f1004000000 rw-p 00001000 fd:01 777 /state/snaps/boot/machine/memory
7f2000000000-7f2004000000 rw-p 00000000 fd:01 777 /state/snaps/boot/machine/memory
7f3000000000-7f3008000000 rw-p 00000000 fd:01 778 /state/snaps/boot/machine/memoryX
7f4000000000-7f4008000000 rw-p 00000000 fd:01 779 /state/snaps/with space/memory (deleted)
7f5000000000-7f5008000000 rw-p 00000000 fd:01 777 /state/snaps/boot/machine/memory
7f6000000000-7f6008000000 rw-p 00000000 fd:01 780 /state/snaps/.trash-1/boot/machine/memory (deleted)
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
`

func TestParseRAMMapping(t *testing.T) {
	const size = 128 << 20
	dev := unix.Mkdev(0xfd, 1)
	for _, c := range []struct {
		want  ramFile
		start uint64
		inode uint64
		fails bool
	}{
		// Not the shared mapping, not the one at offset 0x1000, not the 64 MiB one, not a
		// file whose name only begins the same.
		{want: ramFile{path: "/state/snaps/boot/machine/memory"}, start: 0x7f5000000000, inode: 777},
		{want: ramFile{path: "/state/snaps/with space/memory"}, start: 0x7f4000000000, inode: 779},
		{want: ramFile{path: "/state/snaps/other/memory"}, fails: true},
		{want: ramFile{path: "/state/snaps/boot/machine/memor"}, fails: true},
		// A file moved away (and removed) is found by its identity.
		{want: ramFile{path: "/state/snaps/moved/memory", dev: dev, inode: 780}, start: 0x7f6000000000, inode: 780},
		{want: ramFile{path: "/state/snaps/moved/memory", dev: unix.Mkdev(0xfd, 2), inode: 780}, fails: true},
		{want: ramFile{path: "/state/snaps/moved/memory", dev: dev, inode: 781}, fails: true},
	} {
		r, err := parseRAMMapping(strings.NewReader(sampleMaps), c.want, size)
		if c.fails {
			if err == nil {
				t.Errorf("%+v: found %+v; want none", c.want, r)
			}
			continue
		}
		if err != nil {
			t.Errorf("%+v: %v", c.want, err)
			continue
		}
		if r.start != c.start || r.end != c.start+size || r.inode != c.inode || r.dev != dev || r.path != c.want.path {
			t.Errorf("%+v: %+v; want start %#x inode %d dev fd:01", c.want, r, c.start, c.inode)
		}
	}
}

func FuzzParseRAMMapping(f *testing.F) {
	f.Add(sampleMaps, "/state/snaps/boot/machine/memory", uint64(0), int64(128<<20))
	f.Add(sampleMaps, "/elsewhere", uint64(780), int64(128<<20))
	f.Add("0-1000 rw-p 00000000 00:00 1 /m\n", "/m", uint64(1), int64(4096))
	f.Add("ffffffffffffffff-0 rw-p 0 zz:zz x /m (deleted)\n", "/m", uint64(0), int64(-1))
	f.Fuzz(func(t *testing.T, maps, path string, inode uint64, size int64) {
		want := ramFile{path: path, dev: unix.Mkdev(0xfd, 1), inode: inode}
		r, err := parseRAMMapping(strings.NewReader(maps), want, size)
		if err == nil && (r.end <= r.start || r.end-r.start != uint64(size) || r.path != path) {
			t.Fatalf("parseRAMMapping(%q, %+v, %d) = %+v", maps, want, size, r)
		}
	})
}

// TestCopyWrittenPages runs the page copy over files that stand in for QEMU's page map and
// memory: only the pages the map says are anonymous or swapped are taken from the memory, the
// others stay the base's, and a written page of zeros becomes a hole.
func TestCopyWrittenPages(t *testing.T) {
	dir := t.TempDir()
	const pages = 8
	fill := func(c byte) []byte { return bytes.Repeat([]byte{c}, pageSize) }
	var base, memory, pagemap []byte
	entries := []uint64{
		0,                  // never touched
		pmPresent | pmFile, // read: the file's page
		pmPresent,          // written (anonymous)
		pmSwapped,          // written, swapped out
		pmPresent,          // written with zeros
		pmPresent | pmFile, // read
		pmPresent | 1<<55,  // written (soft-dirty bit beside)
		0,
	}
	for i := 0; i < pages; i++ {
		base = append(base, fill('a'+byte(i))...)
		m := fill('A' + byte(i))
		if i == 4 {
			m = make([]byte, pageSize)
		}
		memory = append(memory, m...)
		pagemap = binary.LittleEndian.AppendUint64(pagemap, entries[i])
	}
	baseF, memF, mapF := writtenFile(t, base), writtenFile(t, memory), writtenFile(t, pagemap)
	out, err := os.OpenFile(filepath.Join(dir, "out"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	ctx := context.Background()
	if err := copySparse(ctx, baseF, out, pages*pageSize); err != nil {
		t.Fatal(err)
	}
	if err := copyWrittenPages(ctx, mapF, memF, out, 0, pages*pageSize); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < pages; i++ {
		want := base[i*pageSize : (i+1)*pageSize]
		switch i {
		case 2, 3, 6:
			want = memory[i*pageSize : (i+1)*pageSize]
		case 4:
			want = make([]byte, pageSize)
		}
		if !bytes.Equal(got[i*pageSize:(i+1)*pageSize], want) {
			t.Errorf("page %d = %q…; want %q…", i, got[i*pageSize:i*pageSize+4], want[:4])
		}
	}
	if data, err := unix.Seek(int(out.Fd()), 4*pageSize, unix.SEEK_DATA); err == nil && data == 4*pageSize {
		t.Errorf("the written page of zeros is data; want a hole")
	}
}
