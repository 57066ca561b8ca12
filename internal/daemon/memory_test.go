package daemon

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// The daemon gives memory back once after a quiet spell, never while a request (such as a
// streaming exec) is still being served. The test runs in a synctest bubble: its clock moves
// only when every goroutine is blocked, so the quiet spell is exact and nothing is guessed
// by sleeping on the real clock.
func TestTrimmerFreesOnceWhenQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const quiet = 5 * time.Second
		var frees atomic.Int32
		tr := &trimmer{quiet: quiet, free: func() { frees.Add(1) }}
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
		synctest.Wait() // the stream is open: its handler waits for release
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/vms", nil))
		time.Sleep(10 * quiet)
		synctest.Wait()
		if n := frees.Load(); n != 0 {
			t.Errorf("freed %d times while a stream was open; want 0", n)
		}
		close(release)
		<-done
		time.Sleep(quiet - time.Nanosecond)
		synctest.Wait()
		if n := frees.Load(); n != 0 {
			t.Fatalf("freed %d times before the daemon had been quiet for %s; want 0", n, quiet)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if n := frees.Load(); n != 1 {
			t.Fatalf("freed %d times after the last request ended and the daemon was quiet for %s; want 1", n, quiet)
		}
		time.Sleep(10 * quiet)
		synctest.Wait()
		if n := frees.Load(); n != 1 {
			t.Fatalf("freed %d times over a long quiet spell; want once", n)
		}
	})
}

// A stopping daemon leaves no trim pending behind it.
func TestTrimmerStopCancelsAPendingTrim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var frees atomic.Int32
		tr := &trimmer{quiet: time.Second, free: func() { frees.Add(1) }}
		tr.wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).
			ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/vms", nil))
		tr.stop()
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := frees.Load(); n != 0 {
			t.Errorf("freed %d times after the stop; want 0", n)
		}
	})
}
