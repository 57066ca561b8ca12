// Package flight coalesces concurrent requests for the same piece of work (pulling a kernel,
// building an image) into one run. Every waiter sees the run's progress and result; the run
// is cancelled only when its last waiter has gone away, so one impatient client cannot spoil
// another's build.
package flight

import (
	"context"
	"sync"

	"github.com/banger-dev/banger/internal/progress"
)

// Group runs work by key.
type Group[T any] struct {
	mu    sync.Mutex
	calls map[string]*call[T]
}

type call[T any] struct {
	done    chan struct{}
	cancel  context.CancelFunc
	waiters int
	sinks   map[int]progress.Func
	nextID  int
	val     T
	err     error
}

func (c *call[T]) report(mu *sync.Mutex) progress.Func {
	return func(u progress.Update) {
		mu.Lock()
		sinks := make([]progress.Func, 0, len(c.sinks))
		for _, s := range c.sinks {
			sinks = append(sinks, s)
		}
		mu.Unlock()
		for _, s := range sinks {
			s.Report(u)
		}
	}
}

// Do runs fn for key unless a run for key is already in flight, in which case it waits for
// that run. p receives the run's progress while this caller waits. If ctx ends first, Do
// returns ctx's error; the run goes on as long as other callers wait for it. The last caller
// to leave cancels the run and waits for it to end (to undo what it began): nothing of a
// run goes on after every Do that wanted it has returned, so whoever waits for the callers
// (a stopping daemon) waits for the run too. shared reports whether the result came from
// another caller's run.
func (g *Group[T]) Do(ctx context.Context, key string, p progress.Func, fn func(ctx context.Context, p progress.Func) (T, error)) (v T, shared bool, err error) {
	g.mu.Lock()
	if g.calls == nil {
		g.calls = map[string]*call[T]{}
	}
	c, ok := g.calls[key]
	if !ok {
		runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		c = &call[T]{done: make(chan struct{}), cancel: cancel, sinks: map[int]progress.Func{}}
		g.calls[key] = c
		go func() {
			c.val, c.err = fn(runCtx, c.report(&g.mu))
			g.mu.Lock()
			delete(g.calls, key)
			g.mu.Unlock()
			cancel()
			close(c.done)
		}()
	}
	id := c.nextID
	c.nextID++
	c.waiters++
	if p != nil {
		c.sinks[id] = p
	}
	g.mu.Unlock()

	select {
	case <-c.done:
		g.leave(c, id)
		return c.val, ok, c.err
	case <-ctx.Done():
		if g.leave(c, id) {
			<-c.done
		}
		var zero T
		return zero, ok, ctx.Err()
	}
}

// leave takes the caller id off c; it cancels the run when no caller is left and reports
// whether it did.
func (g *Group[T]) leave(c *call[T], id int) (cancelled bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(c.sinks, id)
	c.waiters--
	if c.waiters == 0 {
		select {
		case <-c.done:
		default:
			c.cancel()
			return true
		}
	}
	return false
}
