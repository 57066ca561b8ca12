package vmservice

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
)

// watch records a VMM that exits on its own (guest poweroff, crash) as stopped.
func (s *Service) watch(id string, in *instance) {
	go func() {
		<-in.machine.Done()
		in.mu.Lock()
		deleting := in.deleting
		in.mu.Unlock()
		if deleting {
			return // banger ended it on purpose
		}
		unlock := s.lock(id)
		defer unlock()
		in.mu.Lock()
		deleting = in.deleting
		in.closeSessionLocked()
		in.mu.Unlock()
		if deleting || s.instance(id) != in {
			return
		}
		s.setInstance(id, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		vm, err := s.store.GetVMByID(ctx, id)
		if err != nil {
			return
		}
		rec, _ := Record(vm)
		reason := "the VMM exited on its own (the guest powered off, or the process was killed)"
		if tail := vmm.LogTail(rec.Log, 3); !strings.HasPrefix(tail, "(") {
			reason = "the VMM exited: " + tail
		}
		if vm.State != StateRunning {
			// It died while starting: the start's own error handling records it.
			return
		}
		s.log.Info("VMM exited", "vm", vm.Name, "reason", reason)
		if _, err := s.markStopped(ctx, vm, reason); err != nil {
			s.log.Error("record VMM exit", "vm", vm.Name, "err", err)
		}
	}()
}

// endOnPurpose marks the VMM's coming exit as banger's doing (stop, kill, delete, a failed
// start), so the exit watcher does not record it as a crash; it also drops the agent session.
func (in *instance) endOnPurpose() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.deleting = true
	in.closeSessionLocked()
}

// closeSessionLocked ends in's agent session, if it has one; the next request connects anew.
// The caller holds in.mu.
func (in *instance) closeSessionLocked() {
	if in.agent != nil {
		in.agent.Close()
		in.agent = nil
	}
}

// session returns in's agent session, connecting anew (connectAnew, at most a
// sessionTimeout) when it has none or the last one ended.
func (s *Service) session(ctx context.Context, in *instance) (*agent.Client, error) {
	return s.sessionWithin(ctx, in, sessionTimeout, "")
}

// sessionWithin is session with its own bound on connecting (timeout, named limit in the
// error, as connectAnew). Every session of a running VM comes from here: a VMM serves one
// agent stream at a time (vmm.Machine.DialAgent) and holds a second connection unanswered
// until the first ends, so two parts of the daemon connecting each on their own (a create's
// steps and a clock reset after a capture) would leave one of them waiting out its timeout.
func (s *Service) sessionWithin(ctx context.Context, in *instance, timeout time.Duration, limit string) (*agent.Client, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.agent != nil {
		select {
		case <-in.agent.Done():
			in.agent = nil
		default:
			return in.agent, nil
		}
	}
	c, err := s.connectAnew(ctx, in.machine, timeout, limit)
	if err != nil {
		return nil, fmt.Errorf("connect to the guest agent: %w", err)
	}
	in.agent = c
	return c, nil
}

// sessionTimeout bounds connecting to the agent of a VM that runs already.
const sessionTimeout = 30 * time.Second

// OpenExec starts a command in a running VM and returns the agent stream that carries the
// session's frames (package wire).
func (s *Service) OpenExec(ctx context.Context, ref string, req agent.ExecRequest) (net.Conn, store.VM, error) {
	vm, err := s.Resolve(ctx, ref)
	if err != nil {
		return nil, vm, err
	}
	if len(req.Argv) == 0 {
		return nil, vm, invalidf("exec in vm %q: no command given", vm.Name)
	}
	c, err := s.agentOfVM(ctx, vm)
	if err != nil {
		return nil, vm, err
	}
	st, err := c.Open(ctx, agent.Request{Op: agent.OpExec, Exec: &req})
	if err != nil {
		return nil, vm, fmt.Errorf("vm %q: %w", vm.Name, err)
	}
	return st, vm, nil
}
