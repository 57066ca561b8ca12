package guestagent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/untar"
	"github.com/banger-dev/banger/internal/wire"
)

// frameReader turns the Stdin frames of a stream into a plain reader, ending at StdinEOF.
type frameReader struct {
	r    *wire.Reader
	buf  []byte
	done bool
}

func (f *frameReader) Read(p []byte) (int, error) {
	for len(f.buf) == 0 {
		if f.done {
			return 0, io.EOF
		}
		t, payload, err := f.r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // the sender went away before the end of the upload
			}
			return 0, err
		}
		switch t {
		case wire.Stdin:
			f.buf = append(f.buf[:0], payload...)
		case wire.StdinEOF:
			f.done = true
		default:
			return 0, fmt.Errorf("unexpected %q frame in an upload", t)
		}
	}
	n := copy(p, f.buf)
	f.buf = f.buf[n:]
	return n, nil
}

// receiveUpload extracts the tar stream the host sends (as Stdin frames) into req.Dest, creating it.
// Every entry must stay inside Dest: absolute names and ".." components are refused, and
// nothing is ever written through a symlink out of it. With req.Keep, the stream is also
// saved there as it arrived (still compressed), replacing that file only once the whole
// stream was extracted: ExtractFile can later rebuild what was shipped from it.
func receiveUpload(r *wire.Reader, req agent.UntarRequest) (agent.UntarResult, error) {
	var src io.Reader = &frameReader{r: r}
	var kept *os.File
	if req.Keep != "" {
		if !filepath.IsAbs(req.Keep) {
			return agent.UntarResult{}, fmt.Errorf("keep %q is not an absolute path", req.Keep)
		}
		if err := os.MkdirAll(filepath.Dir(req.Keep), 0o700); err != nil {
			return agent.UntarResult{}, err
		}
		f, err := os.CreateTemp(filepath.Dir(req.Keep), filepath.Base(req.Keep)+".*.partial")
		if err != nil {
			return agent.UntarResult{}, err
		}
		defer os.Remove(f.Name()) // a no-op once renamed
		defer f.Close()
		kept = f
		src = io.TeeReader(src, f)
	}
	res, err := extract(src, req.Compression, req.Dest)
	if err != nil || kept == nil {
		return res, err
	}
	// Whatever follows the end of the archive (padding, the compressor's trailer) is kept
	// too, so that the saved stream is exactly the one sent.
	if _, err := io.Copy(io.Discard, src); err != nil {
		return res, err
	}
	if err := kept.Close(); err != nil {
		return res, err
	}
	return res, os.Rename(kept.Name(), req.Keep)
}

// ExtractFile extracts a tar file (compression "" or "zstd") into dest, under the same rules
// as an upload: `banger-agent extract` runs it in the guest, for instance on a stream an
// upload kept.
func ExtractFile(file, compression, dest string) (agent.UntarResult, error) {
	f, err := os.Open(file)
	if err != nil {
		return agent.UntarResult{}, err
	}
	defer f.Close()
	return extract(f, compression, dest)
}

// extract reads a tar stream from src into dest, creating it, through package untar: every
// entry stays inside dest (absolute names and ".." components are refused, and nothing is
// ever written through a symlink); symlinks are kept as data, whatever they point at.
func extract(src io.Reader, compression, dest string) (agent.UntarResult, error) {
	var res agent.UntarResult
	if !filepath.IsAbs(dest) {
		return res, fmt.Errorf("destination %q is not an absolute path", dest)
	}
	if compression == "zstd" {
		// The host compresses with zstd's fastest level (a small window); a frame declaring
		// a window above 32 MiB is refused rather than allocated.
		zr, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxWindow(32<<20), zstd.WithDecoderMaxMemory(64<<20))
		if err != nil {
			return res, err
		}
		defer zr.Close()
		src = zr
	} else if compression != "" {
		return res, fmt.Errorf("compression %q: want zstd or none", compression)
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return res, err
	}
	// No limits: the host sends what the user's workspace holds, and the guest trusts its host.
	st, err := untar.Dir(src, dest, untar.Options{Symlinks: untar.SymlinksAny})
	res.Files, res.Bytes = int(st.Files+st.Symlinks), st.Bytes
	if err != nil {
		return res, fmt.Errorf("upload: %w", err)
	}
	return res, nil
}
