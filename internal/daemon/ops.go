package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sort"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// An operation is one long piece of work (create, start, stop, pull, build) whose events are
// kept so that any number of clients can watch it: the one that asked for it, and others that
// attach later and get every event from the start.
type operation struct {
	info api.Operation

	mu     sync.Mutex
	events []api.Event
	done   bool
	notify chan struct{} // closed and replaced whenever an event arrives
}

// opKeep is how long a finished operation stays visible to late watchers.
const opKeep = 5 * time.Minute

// operations is the daemon's registry of operations.
type operations struct {
	mu  sync.Mutex
	ops map[string]*operation
}

func newOperations() *operations { return &operations{ops: map[string]*operation{}} }

func opID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// start registers an operation of the given kind on target (a VM, kernel or image name).
func (r *operations) start(kind, target string) *operation {
	op := &operation{
		info:   api.Operation{ID: opID(), Kind: kind, Target: target, Started: time.Now().UTC()},
		notify: make(chan struct{}),
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gcLocked()
	r.ops[op.info.ID] = op
	return op
}

// gcLocked forgets operations that finished long enough ago.
func (r *operations) gcLocked() {
	for id, op := range r.ops {
		op.mu.Lock()
		old := op.done && time.Since(op.info.Finished) > opKeep
		op.mu.Unlock()
		if old {
			delete(r.ops, id)
		}
	}
}

func (r *operations) get(id string) *operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ops[id]
}

// list returns every known operation, running ones first, newest first within each group.
func (r *operations) list() []api.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gcLocked()
	out := make([]api.Operation, 0, len(r.ops))
	for _, op := range r.ops {
		out = append(out, op.snapshot())
	}
	sortOperations(out)
	return out
}

func (op *operation) snapshot() api.Operation {
	op.mu.Lock()
	defer op.mu.Unlock()
	info := op.info
	info.Done = op.done
	return info
}

// publish records ev and wakes the watchers. A result or error event ends the operation.
func (op *operation) publish(ev api.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	ev.Operation = op.info.ID
	op.mu.Lock()
	defer op.mu.Unlock()
	if op.done {
		return
	}
	op.events = append(op.events, ev)
	if ev.Type == api.EventResult || ev.Type == api.EventError {
		op.done = true
		op.info.Finished = ev.Time
		if ev.Error != nil {
			op.info.Error = ev.Error.Message
		}
	}
	close(op.notify)
	op.notify = make(chan struct{})
}

// watch calls send for every event of the operation, from the first, until it ends or ctx
// does.
func (op *operation) watch(ctx context.Context, send func(api.Event)) {
	next := 0
	for {
		op.mu.Lock()
		pending := append([]api.Event(nil), op.events[next:]...)
		next = len(op.events)
		done := op.done
		wait := op.notify
		op.mu.Unlock()
		for _, ev := range pending {
			send(ev)
		}
		if done {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-wait:
		}
	}
}

func sortOperations(ops []api.Operation) {
	sort.Slice(ops, func(i, j int) bool {
		if ops[i].Done != ops[j].Done {
			return !ops[i].Done
		}
		return ops[i].Started.After(ops[j].Started)
	})
}
