package daemon

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// errStopping is why the daemon's context ends: bangerd is stopping. It is a cancellation,
// so that work cut short by it undoes itself and records no failure (a stop is not a crash).
var errStopping = fmt.Errorf("bangerd is stopping: %w", context.Canceled)

// shutdownWait bounds how long a stopping daemon waits for its work to end once cancelled.
const shutdownWait = 20 * time.Second

// background owns the daemon's work in progress: requests (exec sessions and log follows
// among them) and the operations that outlive the request that started them. Its context is
// the daemon's, which ends when the daemon stops; from then on no new work is taken, and
// wait says when the work has ended, so that the store is closed under none of it.
type background struct {
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	stopping bool
	running  map[uint64]string // what each piece of work is, for the shutdown's log
	next     uint64
	idle     chan struct{} // closed once stopping with nothing running
}

func newBackground() *background {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &background{ctx: ctx, cancel: cancel, running: map[uint64]string{}, idle: make(chan struct{})}
}

// enter records a piece of work named name, which ends with the call of leave. It returns
// ok false, and records nothing, once the daemon is stopping.
func (b *background) enter(name string) (leave func(), ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopping {
		return nil, false
	}
	id := b.next
	b.next++
	b.running[id] = name
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			delete(b.running, id)
			if b.stopping && len(b.running) == 0 {
				close(b.idle)
			}
		})
	}, true
}

// start runs fn on a goroutine of its own with the daemon's context, as a piece of work
// named name. It returns false, without running fn, once the daemon is stopping.
func (b *background) start(name string, fn func(ctx context.Context)) bool {
	leave, ok := b.enter(name)
	if !ok {
		return false
	}
	go func() {
		defer leave()
		fn(b.ctx)
	}()
	return true
}

// stop refuses new work and cancels the daemon's context (its cause is errStopping). It
// returns at once; wait waits for the work.
func (b *background) stop() {
	b.mu.Lock()
	if !b.stopping {
		b.stopping = true
		if len(b.running) == 0 {
			close(b.idle)
		}
	}
	b.mu.Unlock()
	b.cancel(errStopping)
}

// wait returns nil once stop was called and all work has ended, or the names of the work
// still running, sorted, when ctx ends first.
func (b *background) wait(ctx context.Context) []string {
	select {
	case <-b.idle:
		return nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var left []string
	for _, name := range b.running {
		left = append(left, name)
	}
	slices.Sort(left)
	return left
}

// track counts every request of h as work; once the daemon is stopping, a request that still
// gets through (accepted just before the socket closed) is refused.
func (b *background) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leave, ok := b.enter(r.Method + " " + r.URL.Path)
		if !ok {
			writeError(w, stoppingError())
			return
		}
		defer leave()
		h.ServeHTTP(w, r)
	})
}

// stoppingError answers what comes in while the daemon stops.
func stoppingError() *api.Error {
	return &api.Error{Code: "conflict", Message: "bangerd is stopping",
		Hint: "try again in a moment: the next command starts a new daemon once this one has stopped"}
}
