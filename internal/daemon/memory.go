package daemon

import (
	"net/http"
	"runtime/debug"
	"sync"
	"time"
)

// quietTrim is how long the daemon must have served no request before it hands freed memory
// back to the system.
const quietTrim = 5 * time.Second

// trimmer returns the heap a burst of work left behind (eight VMs made at once, an image
// import) to the system once the daemon has been quiet for a while. Left alone, the Go
// runtime keeps those pages until its next periodic collection and scavenges them slowly,
// so an idle daemon stayed at twice the memory it needs (58 MiB after the benchmark's
// concurrency runs, 24 MiB fresh).
type trimmer struct {
	quiet time.Duration
	free  func() // debug.FreeOSMemory; tests count calls

	mu     sync.Mutex
	active int
	timer  *time.Timer
}

func newTrimmer() *trimmer { return &trimmer{quiet: quietTrim, free: debug.FreeOSMemory} }

// wrap counts h's requests in and out; streams (logs -f, exec) count as active while open.
func (t *trimmer) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.begin()
		defer t.end()
		h.ServeHTTP(w, r)
	})
}

func (t *trimmer) begin() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.active++
	if t.timer != nil {
		t.timer.Stop()
	}
}

// stop cancels a pending trim; a request that ends later arms it again.
func (t *trimmer) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.timer != nil {
		t.timer.Stop()
	}
}

func (t *trimmer) end() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.active--
	if t.active > 0 {
		return
	}
	if t.timer == nil {
		t.timer = time.AfterFunc(t.quiet, t.free)
		return
	}
	t.timer.Reset(t.quiet)
}
