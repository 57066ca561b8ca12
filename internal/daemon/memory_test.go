package daemon

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// The daemon gives memory back once after a quiet spell, never while a request (such as a
// streaming exec) is still being served.
func TestTrimmerFreesOnceWhenQuiet(t *testing.T) {
	var frees atomic.Int32
	tr := &trimmer{quiet: 20 * time.Millisecond, free: func() { frees.Add(1) }}
	release := make(chan struct{})
	h := tr.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			<-release
		}
	}))
	done := make(chan struct{})
	go func() {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/stream", nil))
		close(done)
	}()
	time.Sleep(10 * time.Millisecond) // the stream is open
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/vms", nil))
	time.Sleep(100 * time.Millisecond)
	if n := frees.Load(); n != 0 {
		t.Fatalf("freed %d times while a stream was open; want 0", n)
	}
	close(release)
	<-done
	time.Sleep(100 * time.Millisecond)
	if n := frees.Load(); n != 1 {
		t.Fatalf("freed %d times after the last request ended and the daemon was quiet; want 1", n)
	}
}
