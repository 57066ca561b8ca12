package kernel

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// modinfo is what ModuleClosure needs from a module's .modinfo section.
type modinfo struct {
	depends []string // sorted, canonical names
	softPre []string // sorted, canonical names
}

func readModinfo(path string) (modinfo, error) {
	data, err := ReadModuleFile(path)
	if err != nil {
		return modinfo{}, err
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return modinfo{}, fmt.Errorf("module %s is not an ELF file: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return modinfo{}, fmt.Errorf("module %s has no .modinfo section", path)
	}
	raw, err := sec.Data()
	if err != nil {
		return modinfo{}, fmt.Errorf("module %s: read .modinfo: %w", path, err)
	}
	var info modinfo
	for _, kv := range bytes.Split(raw, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					info.depends = append(info.depends, ModuleName(d))
				}
			}
		case "softdep":
			info.softPre = append(info.softPre, softdepPre(v)...)
		}
	}
	info.depends = sortedUnique(info.depends)
	info.softPre = sortedUnique(info.softPre)
	return info, nil
}

// softdepPre returns the modules after "pre:" in a softdep value such as "pre: crc32c post: x".
func softdepPre(v string) []string {
	var out []string
	inPre := false
	for _, f := range strings.Fields(v) {
		switch f {
		case "pre:":
			inPre = true
		case "post:":
			inPre = false
		default:
			if inPre {
				out = append(out, ModuleName(f))
			}
		}
	}
	return out
}

func sortedUnique(s []string) []string {
	sort.Strings(s)
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// maxModuleSize bounds a decompressed module; the largest real ones are a few tens of MB.
const maxModuleSize = 256 << 20

// zstdMaxWindow bounds the window a zstd-compressed module may declare.
const zstdMaxWindow = 32 << 20

// ReadModuleFile returns a module file's contents, decompressing .ko.xz, .ko.zst and .ko.gz.
func ReadModuleFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read module: %w", err)
	}
	defer f.Close()
	var r io.Reader = bufio.NewReader(f)
	switch {
	case strings.HasSuffix(path, ".xz"):
		xr, err := xz.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("decompress module %s: %w", path, err)
		}
		r = xr
	case strings.HasSuffix(path, ".zst"):
		// Kbuild compresses modules with zstd's default level (a 2 MiB window at most);
		// a frame declaring a larger window than zstdMaxWindow is refused, not allocated.
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxWindow(zstdMaxWindow), zstd.WithDecoderMaxMemory(2*zstdMaxWindow))
		if err != nil {
			return nil, fmt.Errorf("decompress module %s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(path, ".gz"):
		gr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("decompress module %s: %w", path, err)
		}
		r = gr
	}
	data, err := io.ReadAll(io.LimitReader(r, maxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", path, err)
	}
	if len(data) > maxModuleSize {
		return nil, fmt.Errorf("module %s is larger than %d bytes decompressed; refusing", path, maxModuleSize)
	}
	return data, nil
}
