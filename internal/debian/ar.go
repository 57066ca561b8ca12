package debian

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// arMember is one member of a Unix ar archive, the container format of a .deb.
type arMember struct {
	Name   string
	Offset int64 // where the data starts in the archive
	Size   int64
}

const (
	arMagic      = "!<arch>\n"
	arHeaderSize = 60
)

// readAr lists the members of the ar archive in r (of total length size). Each member is a
// 60-byte header — name[16] mtime[12] uid[6] gid[6] mode[8] size[10] "`\n" — followed by its
// data, padded to an even offset. GNU-style names may end in '/'; BSD "#1/len" long names and
// the GNU symbol/long-name tables are not used by .deb files and are rejected.
func readAr(r io.ReaderAt, size int64) ([]arMember, error) {
	magic := make([]byte, len(arMagic))
	if _, err := r.ReadAt(magic, 0); err != nil || string(magic) != arMagic {
		return nil, errors.New("not an ar archive (bad magic)")
	}
	var members []arMember
	off := int64(len(arMagic))
	hdr := make([]byte, arHeaderSize)
	for off < size {
		if size-off < arHeaderSize {
			rest := make([]byte, size-off)
			if _, err := r.ReadAt(rest, off); err == nil && len(bytes.Trim(rest, "\n")) == 0 {
				break // trailing newline padding
			}
			return nil, fmt.Errorf("truncated ar header at offset %d", off)
		}
		if _, err := r.ReadAt(hdr, off); err != nil {
			return nil, fmt.Errorf("read ar header at offset %d: %w", off, err)
		}
		if string(hdr[58:60]) != "`\n" {
			return nil, fmt.Errorf("corrupt ar header at offset %d (bad terminator)", off)
		}
		name := strings.TrimRight(string(hdr[0:16]), " ")
		if strings.HasPrefix(name, "#1/") || name == "/" || name == "//" {
			return nil, fmt.Errorf("ar member at offset %d uses an extended name (%q), which .deb files never do", off, name)
		}
		name = strings.TrimSuffix(name, "/")
		sizeField := string(bytes.TrimRight(hdr[48:58], " "))
		n, err := strconv.ParseInt(sizeField, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("ar member %q: bad size field %q", name, sizeField)
		}
		data := off + arHeaderSize
		if n > size-data {
			return nil, fmt.Errorf("ar member %q: size %d runs past the end of the archive (truncated file?)", name, n)
		}
		members = append(members, arMember{Name: name, Offset: data, Size: n})
		off = data + n + n%2
	}
	return members, nil
}
