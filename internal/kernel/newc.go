package kernel

import (
	"fmt"
	"io"
	"strings"
)

// newcWriter writes a "newc" (SVR4, magic 070701) cpio archive, the format the kernel unpacks
// as an initramfs (init/initramfs.c).
//
// It is written by hand rather than with github.com/cavaliergopher/cpio because that library
// always writes zero device numbers (rdevmajor/rdevminor), so it cannot create the
// /dev/console and /dev/null nodes the guest needs before devtmpfs is mounted; its writer also
// mutates a package-level magic when asked for checksums. The format is simple: a 110-byte
// ASCII-hex header, the NUL-terminated name, padding to 4 bytes, the data, padding to 4 bytes.
type newcWriter struct {
	w     io.Writer
	ino   int
	err   error
	count int64 // bytes written
}

// newcEntry describes one archive member. mode includes the file type bits (0o040000 dir,
// 0o100000 regular, 0o020000 char device). mtime is fixed for reproducible archives.
type newcEntry struct {
	name      string
	mode      uint32
	data      []byte
	rdevMajor uint32
	rdevMinor uint32
	mtime     int64
	uid, gid  uint32
}

const (
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeChar = 0o020000
)

func (n *newcWriter) write(e newcEntry) error {
	if n.err != nil {
		return n.err
	}
	name := strings.TrimPrefix(e.name, "/")
	if name == "" || len(name) > 4095 {
		return fmt.Errorf("cpio entry name %q is empty or too long", e.name)
	}
	n.ino++
	nlink := 1
	if e.mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		n.ino, e.mode, e.uid, e.gid, nlink, uint32(e.mtime), len(e.data),
		0, 0, // devmajor, devminor of the (non-existent) containing filesystem
		e.rdevMajor, e.rdevMinor, len(name)+1, 0) // the trailing 0 is the unused checksum
	n.put([]byte(hdr))
	n.put([]byte(name + "\x00"))
	n.pad()
	n.put(e.data)
	n.pad()
	return n.err
}

// close writes the trailer entry that ends the archive.
func (n *newcWriter) close() error {
	n.ino = -1 // the trailer has inode 0
	return n.write(newcEntry{name: "TRAILER!!!"})
}

func (n *newcWriter) put(b []byte) {
	if n.err != nil || len(b) == 0 {
		return
	}
	var k int
	k, n.err = n.w.Write(b)
	n.count += int64(k)
}

func (n *newcWriter) pad() {
	if r := n.count % 4; r != 0 {
		n.put(make([]byte, 4-r))
	}
}
