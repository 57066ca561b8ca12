package catalog

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/bundle"
	"github.com/banger-dev/banger/internal/catalog/catalogfile"
	"github.com/banger-dev/banger/internal/progress"
)

// StageFetch is the progress stage of downloading a bundle; Done/Total count bytes.
const StageFetch = "bundle.fetch"

// bundlesDir caches downloaded bundles by sha256: <cache dir>/bundles.
func (src *sources) bundlesDir() string { return filepath.Join(src.o.Layout.CacheDir, "bundles") }

// fetchBundle returns a local file holding the remote bundle, downloading it unless the cache
// has it. The file's sha256 must be the pinned one and, when the entry is signed, the
// signature must verify with the named trusted key; otherwise nothing is kept.
func (src *sources) fetchBundle(ctx context.Context, b catalogfile.RemoteBundle, p progress.Func) (string, error) {
	if err := src.checkSignature(b); err != nil {
		return "", err
	}
	dir := src.bundlesDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, b.SHA256+".bundle")
	if sum, _, err := bundle.FileSHA256(ctx, dst); err == nil && sum == b.SHA256 {
		return dst, nil
	}
	u, _ := url.Parse(b.URL)
	var body io.ReadCloser
	total := b.Size
	if u.Scheme == "file" {
		f, err := os.Open(u.Path)
		if err != nil {
			return "", fmt.Errorf("bundle %s: %w", b.URL, err)
		}
		if fi, err := f.Stat(); err == nil && total == 0 {
			total = fi.Size()
		}
		body = f
	} else {
		// Cut off past the declared size (or download.MaxSize), before hashing the excess;
		// a server that stops sending fails the download instead of hanging it.
		resp, err := src.o.Download.Get(ctx, b.URL, b.Size)
		if err != nil {
			return "", fmt.Errorf("bundle: %w", err)
		}
		if total == 0 {
			total = resp.Size
		}
		body = resp
	}
	defer body.Close()
	tmp, err := os.CreateTemp(dir, ".part-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h := sha256.New()
	var done int64
	last := time.Now()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			tmp.Close()
			return "", err
		}
		n, rerr := body.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			if _, err := tmp.Write(buf[:n]); err != nil {
				tmp.Close()
				return "", err
			}
			done += int64(n)
			if time.Since(last) > 200*time.Millisecond {
				last = time.Now()
				p.Report(progress.Update{Stage: StageFetch, Message: "downloading " + b.URL, Done: done, Total: total})
			}
		}
		if b.Size > 0 && done > b.Size {
			tmp.Close()
			return "", fmt.Errorf("bundle %s is larger than the %d bytes its catalog entry declares; refusing it", b.URL, b.Size)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			tmp.Close()
			return "", fmt.Errorf("download bundle %s: %w", b.URL, rerr)
		}
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if b.Size > 0 && done != b.Size {
		return "", fmt.Errorf("bundle %s is %d bytes, its catalog entry declares %d; retry, or the server sends a different file", b.URL, done, b.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != b.SHA256 {
		return "", fmt.Errorf("bundle %s has sha256 %s, but the catalog pins %s; refusing it (the file changed or was tampered with)", b.URL, got, b.SHA256)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", err
	}
	return dst, nil
}

// KeysDir is the directory, inside banger's config directory, holding the public keys
// (<name>.pub: base64 of a 32-byte ed25519 key) that bundle signatures are checked against.
const KeysDir = "keys"

// checkSignature verifies a signed entry's signature over its pinned sha256.
func (src *sources) checkSignature(b catalogfile.RemoteBundle) error {
	if b.Signature == "" {
		return nil
	}
	if !catalogfile.ValidName(b.Key) {
		return fmt.Errorf("bundle %s: signing key name %q is invalid", b.URL, b.Key)
	}
	keyPath := filepath.Join(src.o.Layout.ConfigDir, KeysDir, b.Key+".pub")
	data, err := os.ReadFile(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("bundle %s is signed by key %q, which is not trusted here; put its public key in %s", b.URL, b.Key, keyPath)
	}
	if err != nil {
		return err
	}
	pub, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%s: not a base64 ed25519 public key", keyPath)
	}
	sig, err := base64.StdEncoding.DecodeString(b.Signature)
	if err != nil || !ed25519.Verify(ed25519.PublicKey(pub), []byte(b.SHA256), sig) {
		return fmt.Errorf("bundle %s: the signature does not verify with key %q; refusing it", b.URL, b.Key)
	}
	return nil
}
