package untar

import (
	"io/fs"
	"testing"
)

func TestFileMode(t *testing.T) {
	for _, tc := range []struct {
		unix uint32
		want fs.FileMode
	}{
		{0o644, 0o644},
		{0o4755, 0o755 | fs.ModeSetuid},
		{0o2711, 0o711 | fs.ModeSetgid},
		{0o1777, 0o777 | fs.ModeSticky},
		{0o100644, 0o644}, // a file-type bit (S_IFREG) is not a permission
	} {
		if got := FileMode(tc.unix); got != tc.want {
			t.Errorf("FileMode(%#o) = %v, want %v", tc.unix, got, tc.want)
		}
	}
}
