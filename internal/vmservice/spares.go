package vmservice

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/snapshot"
	"github.com/banger-dev/banger/internal/steps"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/wire"
)

// Spares.
//
// A warm start restores its guest, but the guest then runs everything it does first after the
// restore — the agent's handshake, the renewal, the user's first command — with nothing of it
// translated yet under software emulation (QEMU translates guest code afresh in every process),
// which costs more than the restore itself. A spare is a clone of the latest warm-started
// combination's boot snapshot made ahead of time, in the background, once a create restored
// from that snapshot (a combination used once, cold, may be a one-off): restored, renewed into a
// machine of its own under a name of its own (spare-…), its agent session open, one command
// run, then left idle in state "spare". The next create of that combination takes it (claim)
// instead of restoring: the spare is renamed, told the clock, given fresh randomness and its
// new host name, gets the user's files, and is the user's VM. A new spare is made behind it.
//
// Spares are a cache of the running daemon, never the user's: they are not listed, resolved,
// named in DNS or ssh_config, nor counted as users of images; they go when their boot
// snapshot goes (SparesOf), when the daemon stops (RemoveSpares) and, after a crash, when it
// starts (Reconcile deletes every record in state spare). Only the latest combination keeps
// spares, at most config warm_spares of them.

// StateSpare is the state of a spare's record.
const StateSpare = store.StateSpare

// StepClaim is the create step that makes a spare the new VM.
const StepClaim = "claim"

// spare is a VM made ahead of time for a combination.
type spare struct {
	key  string    // its combination's key
	snap string    // the boot snapshot it was restored from
	c    *creation // its create: the record and the running boot (machine, session, link)
}

// sparePool holds the ready spares and fills it one spare at a time.
type sparePool struct {
	mu      sync.Mutex
	ready   map[string][]*spare // by combination key, oldest first
	want    string              // the combination the pool makes spares for
	filling bool
}

// Background runs fn on a goroutine of its own with the daemon's context, as work the
// daemon's stop waits for; it returns false, without running fn, once the daemon is stopping.
type Background func(name string, fn func(ctx context.Context)) bool

// takeSpare returns a ready spare of the combination key whose VMM still runs, or nil. Spares
// whose VMM is gone are deleted on the way.
func (s *Service) takeSpare(ctx context.Context, key string) *spare {
	for {
		s.spares.mu.Lock()
		list := s.spares.ready[key]
		if len(list) == 0 {
			s.spares.mu.Unlock()
			return nil
		}
		sp := list[0]
		s.spares.ready[key] = list[1:]
		s.spares.mu.Unlock()
		select {
		case <-sp.c.boot.in.machine.Done():
			s.log.Warn("a spare's VMM exited; deleting it", "vm", sp.c.vm.Name)
			s.destroySpare(ctx, sp)
		default:
			return sp
		}
	}
}

// refillDelay is how long a fill waits after a create took a spare: the new spare's restore
// and renewal take the host's CPU for a second or two, which the VM just handed over needs
// first, for the command it was made for.
var refillDelay = time.Second

// wantSpares makes the pool hold spares of the combination key (and no other), filling it in
// the background; after a claim (claimed) the fill starts refillDelay later.
func (s *Service) wantSpares(key string, claimed bool) {
	if s.background == nil {
		return // no daemon to run the fill (tests that do not ask for one)
	}
	s.spares.mu.Lock()
	s.spares.want = key
	if s.spares.filling {
		s.spares.mu.Unlock()
		return // the running fill sees the new key
	}
	s.spares.filling = true
	s.spares.mu.Unlock()
	fill := s.fillSpares
	if claimed {
		fill = func(ctx context.Context) {
			t := time.NewTimer(refillDelay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			s.fillSpares(ctx)
		}
	}
	if !s.background("vm.spares", fill) {
		s.spares.mu.Lock()
		s.spares.filling = false
		s.spares.mu.Unlock()
	}
}

// fillSpares makes spares until the pool holds config warm_spares of the wanted combination,
// deleting the others. A spare that cannot be made ends the fill (the next create tries
// again): a failing restore must not turn into a loop of failing restores.
func (s *Service) fillSpares(ctx context.Context) {
	for {
		n := 0
		if cfg, err := s.config(); err == nil && cfg.WarmStart {
			n = cfg.WarmSpares
		}
		s.spares.mu.Lock()
		key := s.spares.want
		drop := s.spares.removeLocked(func(k string, i int, _ *spare) bool { return k == key && i < n })
		need := len(s.spares.ready[key]) < n && ctx.Err() == nil
		if !need {
			s.spares.filling = false
		}
		s.spares.mu.Unlock()
		s.destroySpares(context.WithoutCancel(ctx), drop)
		if !need {
			return
		}
		sp, err := s.makeSpare(ctx, key)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("no spare VM made; the next VM of its combination is restored instead", "err", err)
			}
			s.spares.mu.Lock()
			s.spares.filling = false
			s.spares.mu.Unlock()
			return
		}
		s.spares.mu.Lock()
		s.spares.ready[key] = append(s.spares.ready[key], sp)
		s.spares.mu.Unlock()
		s.log.Info("made a spare VM", "vm", sp.c.vm.Name, "snapshot", sp.snap)
	}
}

// spareName is a new spare's name: spare-<12 hex digits>.
func spareName() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "spare-" + hex.EncodeToString(b), nil
}

// makeSpare restores a spare of the combination key from its boot snapshot: a clone create
// (record, dirs, disk, network, restore, agent, renew) whose ready step leaves it in state
// spare, then one command run in it so that the first command of its user does not pay for
// translating the agent's exec path. On failure nothing of it is left.
func (s *Service) makeSpare(ctx context.Context, key string) (*spare, error) {
	info, release, err := s.snaps.Use(snapshot.BootName(key))
	if err != nil {
		return nil, err
	}
	defer release()
	m, err := vmm.ReadSnapshot(info.Machine())
	if err != nil {
		return nil, fmt.Errorf("boot snapshot %s: %w", info.Name, err)
	}
	name, err := spareName()
	if err != nil {
		return nil, err
	}
	c, err := s.plan(ctx, CreateRequest{Name: name, AutoRemove: true, spare: true, from: &origin{info: info, machine: m}}, Observer{}, false)
	if err != nil {
		return nil, err
	}
	defer c.release()
	defer c.done()
	// A spare is one from its record on: never listed, deleted by the next daemon's start.
	c.vm.State = StateSpare
	unlock := s.lock(c.vm.ID)
	defer unlock()
	if _, err := steps.Run(ctx, s.createSteps(c), s.hooks(c.name, "", "")); err != nil {
		return nil, s.createFailed(ctx, c, err)
	}
	sp := &spare{key: key, snap: info.Name, c: c}
	rctx, cancel := context.WithTimeout(ctx, renewTimeout)
	defer cancel()
	exit, err := c.boot.cli.Exec(rctx, agent.ExecRequest{Argv: []string{"true"}}, wire.CallerIO{})
	if err == nil && exit.Code != 0 {
		err = fmt.Errorf("exit status %d", exit.Code)
	}
	if err != nil {
		s.destroySpareLocked(context.WithoutCancel(ctx), sp)
		return nil, fmt.Errorf("spare %s: a first command in it failed: %w", name, err)
	}
	return sp, nil
}

// destroySpare deletes a spare taken out of the pool.
func (s *Service) destroySpare(ctx context.Context, sp *spare) {
	unlock := s.lock(sp.c.vm.ID)
	defer unlock()
	s.destroySpareLocked(ctx, sp)
}

func (s *Service) destroySpareLocked(ctx context.Context, sp *spare) {
	vm, err := s.store.GetVMByID(ctx, sp.c.vm.ID)
	if errors.Is(err, failure.NotFound) {
		return
	}
	if err != nil {
		vm = sp.c.vm
	}
	if err := s.destroy(ctx, vm); err != nil {
		s.log.Error("delete a spare VM", "vm", vm.Name, "err", err)
	}
}

// SpareCounts returns how many ready spares were restored from each boot snapshot, by name.
func (s *Service) SpareCounts() map[string]int {
	s.spares.mu.Lock()
	defer s.spares.mu.Unlock()
	out := map[string]int{}
	for _, list := range s.spares.ready {
		for _, sp := range list {
			out[sp.snap]++
		}
	}
	return out
}

// removeLocked takes out of the pool the spares keep refuses (given each one's combination
// and its place in that combination's list) and returns them. The caller holds p.mu.
func (p *sparePool) removeLocked(keep func(key string, i int, sp *spare) bool) []*spare {
	var drop []*spare
	for k, list := range p.ready {
		kept := list[:0:0]
		for i, sp := range list {
			if keep(k, i, sp) {
				kept = append(kept, sp)
			} else {
				drop = append(drop, sp)
			}
		}
		if len(kept) == 0 {
			delete(p.ready, k)
		} else {
			p.ready[k] = kept
		}
	}
	return drop
}

// destroySpares deletes spares taken out of the pool.
func (s *Service) destroySpares(ctx context.Context, spares []*spare) {
	for _, sp := range spares {
		s.destroySpare(ctx, sp)
	}
}

// RemoveSpares deletes every spare (the daemon stops, or the network is torn down).
func (s *Service) RemoveSpares(ctx context.Context) {
	s.spares.mu.Lock()
	drop := s.spares.removeLocked(func(string, int, *spare) bool { return false })
	s.spares.want = ""
	s.spares.mu.Unlock()
	s.destroySpares(ctx, drop)
}

// SparesOf deletes the spares restored from the named boot snapshots, which are gone (an
// image rebuilt or removed, a kernel replaced): no create would take them any more.
func (s *Service) SparesOf(ctx context.Context, snapshots []string) {
	s.spares.mu.Lock()
	drop := s.spares.removeLocked(func(_ string, _ int, sp *spare) bool { return !slices.Contains(snapshots, sp.snap) })
	s.spares.mu.Unlock()
	s.destroySpares(ctx, drop)
}

// claim makes the spare sp the VM c creates (c restores from the boot snapshot sp was made
// from): record, renewal, files, ready. The spare's record takes c's name, ephemerality and
// spec; its host key, pinned for the spare, is pinned under the new name; the guest is told
// the clock, given fresh randomness and its new host name (its machine id, address, MAC and
// host key are the spare's own, made when it was). Any failure deletes the spare: it is no
// use half renamed.
func (s *Service) claim(ctx context.Context, c *creation, sp *spare) (store.VM, []steps.Timing, error) {
	unlock := s.lock(sp.c.vm.ID)
	defer unlock()
	planned, spareVM := c.vm, sp.c.vm
	c.vm = spareVM
	b := sp.c.boot
	b.vm, b.obs, b.creating = &c.vm, c.obs, true
	c.boot = b
	vm := &c.vm
	list := []steps.Step{
		{
			Name: StepClaim,
			Do: func(ctx context.Context) (err error) {
				c.obs.Progress.Stage("vm.restore", "taking a spare restored from boot snapshot "+sp.snap)
				defer func() {
					if err != nil { // no undo runs for this step: delete the spare here
						if derr := s.destroy(context.WithoutCancel(ctx), *vm); derr != nil {
							err = errors.Join(err, fmt.Errorf("delete the spare: %w", derr))
						}
					}
				}()
				vm.Name, vm.State, vm.AutoRemove = c.name, StateCreating, c.req.AutoRemove
				if planned.Spec != nil {
					vm.Spec = planned.Spec
				}
				for attempt := 0; ; attempt++ {
					err := s.store.UpdateVM(ctx, vm)
					if errors.Is(err, store.ErrNameTaken) && c.rename != nil && attempt < 50 {
						vm.Name = c.rename()
						continue
					}
					if errors.Is(err, store.ErrNameTaken) {
						return conflictf("a VM named %q already exists; pick another name or delete it with `banger vm delete %s`", vm.Name, vm.Name)
					}
					if err != nil {
						return err
					}
					break
				}
				if err := s.ssh.Forget(spareVM.Name); err != nil {
					s.log.Warn("known_hosts", "vm", spareVM.Name, "err", err)
				}
				return s.ssh.EnsureHostKey(sshVM(vm))
			},
			Undo: func(ctx context.Context) error {
				return s.destroy(ctx, *vm)
			},
		},
		{
			Name: StepRenew,
			Do: func(ctx context.Context) error {
				cli, err := s.session(ctx, b.in)
				if err != nil {
					return err
				}
				b.cli = cli
				r := freshRenewal(vm.Name)
				if b.link != nil {
					// The same identity: the agent leaves the link as it is and rewrites
					// /etc/hosts for the new host name.
					r.Network = linkIdentity(b.link, b.link.MAC)
				}
				if err := s.renewGuest(ctx, vm.Name, cli, r); err != nil {
					return fmt.Errorf("the spare could not take its new name: %w", err)
				}
				return nil
			},
		},
		s.fileSyncStep(b),
		s.readyStep(vm),
	}
	timings, err := steps.Run(ctx, list, s.hooks(c.name, c.req.FailStep, c.req.PauseStep))
	if err != nil {
		return store.VM{}, timings, s.createFailed(ctx, c, err)
	}
	return c.vm, timings, nil
}
