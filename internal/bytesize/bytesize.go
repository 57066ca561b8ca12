// Package bytesize owns the parsing and printing of human-written sizes such as "512M", "4GiB"
// or "1.5G". Every suffix is binary (powers of 1024): banger sizes memory and disks, where
// decimal megabytes only cause confusion, so "MB" and "GB" are accepted but mean MiB and GiB.
package bytesize

// Binary units in bytes.
const (
	KiB int64 = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
	PiB
	EiB
)
