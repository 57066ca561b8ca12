package debian

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/banger-dev/banger/internal/progress"
)

// StageDownload is the progress stage Download reports; Done and Total count bytes.
const StageDownload = "debian.download"

// progressStep is how many bytes pass between two download progress reports.
const progressStep = 1 << 20

// Download fetches pkg's .deb into CacheDir as <sha256>.deb and returns its path. The size and
// SHA-256 are checked while streaming, into a temporary file that is renamed into place only
// when both match, so the cache never holds an unverified file. A cached file is re-verified
// and reused. Progress is reported as StageDownload with byte counts.
func (a *Archive) Download(ctx context.Context, pkg Package, report progress.Func) (string, error) {
	if a.CacheDir == "" {
		return "", errors.New("debian archive: CacheDir must be set to download packages")
	}
	if err := validateDownload(pkg); err != nil {
		return "", err
	}
	want := FileHash{Size: pkg.Size, SHA256: pkg.SHA256}
	dst := filepath.Join(a.CacheDir, pkg.SHA256+".deb")
	if err := verifyFile(dst, want); err == nil {
		report.Report(progress.Update{Stage: StageDownload, Message: pkg.Name + " " + pkg.Version + " (cached)", Done: pkg.Size, Total: pkg.Size})
		return dst, nil
	}
	if err := os.MkdirAll(a.CacheDir, 0o755); err != nil {
		return "", fmt.Errorf("create package cache: %w", err)
	}
	url := strings.TrimRight(a.Mirror, "/") + "/" + pkg.Filename
	report.Report(progress.Update{Stage: StageDownload, Message: pkg.Name + " " + pkg.Version, Total: pkg.Size})

	body, err := a.open(ctx, url, pkg.Size)
	if err != nil {
		return "", err
	}
	defer body.Close()

	tmp, err := os.CreateTemp(a.CacheDir, ".download-*.deb")
	if err != nil {
		return "", fmt.Errorf("create download file in %s: %w", a.CacheDir, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h := sha256.New()
	counter := &countingWriter{report: report, stage: StageDownload, total: pkg.Size}
	n, err := io.Copy(io.MultiWriter(tmp, h, counter), body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("package %s %s: %w (after %d of %d bytes)", pkg.Name, pkg.Version, err, n, pkg.Size)
	}
	if n != pkg.Size {
		return "", fmt.Errorf("download %s: got %d bytes, the signed index says %d; retry, or the mirror is serving a different file", url, n, pkg.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != pkg.SHA256 {
		return "", fmt.Errorf("download %s: sha256 %s does not match the signed index (%s); the file is corrupt or tampered with", url, got, pkg.SHA256)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("publish download: %w", err)
	}
	counter.flush()
	return dst, nil
}

func validateDownload(pkg Package) error {
	switch {
	case !isSHA256Hex(pkg.SHA256):
		return fmt.Errorf("package %s: index gives no valid SHA256 (%q)", pkg.Name, pkg.SHA256)
	case pkg.Size <= 0:
		return fmt.Errorf("package %s: index gives no valid Size", pkg.Name)
	case pkg.Filename == "" || strings.HasPrefix(pkg.Filename, "/") || strings.Contains(pkg.Filename, "\\") ||
		hasDotDot(pkg.Filename) || strings.ContainsAny(pkg.Filename, "?#"):
		return fmt.Errorf("package %s: refusing suspicious Filename %q", pkg.Name, pkg.Filename)
	}
	return nil
}

func hasDotDot(p string) bool {
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

// verifyFile checks a file's size and SHA-256.
func verifyFile(path string, want FileHash) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if n != want.Size {
		return fmt.Errorf("%s: size %d, want %d", path, n, want.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.SHA256 {
		return fmt.Errorf("%s: sha256 %s, want %s", path, got, want.SHA256)
	}
	return nil
}

// countingWriter reports bytes written, at most once per progressStep.
type countingWriter struct {
	report   progress.Func
	stage    string
	total    int64
	done     int64
	reported int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.done += int64(len(p))
	if c.done-c.reported >= progressStep {
		c.flush()
	}
	return len(p), nil
}

func (c *countingWriter) flush() {
	if c.done != c.reported || c.done == 0 {
		c.reported = c.done
		c.report.Report(progress.Update{Stage: c.stage, Done: c.done, Total: c.total})
	}
}
