package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/download"
)

// A bundle server that never stops sending is cut off at the size the catalog entry declares,
// and one that stops sending fails the pull instead of hanging it; nothing is cached.
func TestRemoteBundleDownloadIsBounded(t *testing.T) {
	s, _, _ := newService(t)
	s.o.Download = &download.Client{Stall: 300 * time.Millisecond}
	release := make(chan struct{})
	defer close(release)
	var sent atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/endless.bundle":
			chunk := bytes.Repeat([]byte{0x28}, 64<<10)
			for range 4096 { // 256 MiB at most
				n, err := w.Write(chunk)
				sent.Add(int64(n))
				if err != nil {
					return
				}
			}
		case "/silent.bundle":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	}))
	defer srv.Close()
	pin := strings.Repeat("ab", 32)
	writeCatalog(t, s,
		fmt.Sprintf(`{"name": "endless", "bundle": {"url": %q, "sha256": %q, "size": 100000}}`, srv.URL+"/endless.bundle", pin),
		fmt.Sprintf(`{"name": "silent", "bundle": {"url": %q, "sha256": %q}}`, srv.URL+"/silent.bundle", pin))
	ctx := context.Background()

	_, err := s.Image(ctx, "endless", nil)
	if !errors.Is(err, download.ErrTooLarge) || !strings.Contains(err.Error(), "/endless.bundle") {
		t.Errorf("Image(endless) = %v; want ErrTooLarge naming the URL", err)
	}
	srv.CloseClientConnections()
	if n := sent.Load(); n >= 256<<20 {
		t.Errorf("the server sent all %d bytes: the download was not cut off", n)
	}
	_, err = s.Image(ctx, "silent", nil)
	if !errors.Is(err, download.ErrStalled) {
		t.Errorf("Image(silent) = %v; want ErrStalled", err)
	}
	entries, _ := os.ReadDir(s.bundlesDir())
	if len(entries) != 0 {
		t.Errorf("the bundle cache holds %d entries after failed downloads; want none", len(entries))
	}
}
