// Package vmservice owns the life of VMs: creating one (resolving its size, getting its
// kernel and image, making its disk, starting its VMM and waiting for its agent) as a list of
// steps that are undone on failure, running commands in it, deleting it, and reconciling
// records with real processes when the daemon starts. It drives the VM's network and its ssh
// files through two interfaces of its own, Network (package vmnet) and SSHAccess (package
// vmssh), and keeps none of their state.
package vmservice

import (
	"context"
	"log/slog"
	"sync"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/catalog"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/progress"
	"github.com/banger-dev/banger/internal/snapshot"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmssh"
)

// VM states.
const (
	StateCreating = "creating" // being made: record, files, disk
	StateCreated  = "created"  // made, never started (vm create --no-start)
	StateStarting = "starting"
	StateRunning  = "running"
	StateStopping = "stopping"
	StateStopped  = "stopped"
	StateError    = "error"
)

// Artifacts provides kernels and images, fetching or building them on first use.
type Artifacts interface {
	Kernel(ctx context.Context, name string, p progress.Func) (catalog.Kernel, error)
	Image(ctx context.Context, name string, p progress.Func) (catalog.Image, error)
}

// Service manages VMs. Create it with New.
type Service struct {
	store     *store.Store
	layout    paths.Layout
	config    func() (config.Config, error)
	host      host.Root
	artifacts Artifacts
	drivers   map[string]vmm.Driver
	log       *slog.Logger
	net       Network // nil: VMs get no network
	ssh       SSHAccess
	snaps     *snapshot.Store

	mu      sync.Mutex
	locks   map[string]*sync.Mutex // per VM id: operations on one VM serialize
	running map[string]*instance   // VMs whose VMM this daemon knows to run

	// faultStep makes the suspend or resume step of that name fail (tests; see hooks).
	faultStep string

	// driverOrder is Options.Drivers: the order of preference for vmm.Choose.
	driverOrder []vmm.Driver
	// background runs the spare pool's fills (Options.Background); spares holds them.
	background Background
	spares     sparePool
}

// Options configure a Service.
type Options struct {
	Store     *store.Store
	Layout    paths.Layout
	Config    func() (config.Config, error) // loads the current config (re-read per operation)
	Host      host.Root
	Artifacts Artifacts
	Drivers   []vmm.Driver // in order of preference (see vmm.Choose)
	Log       *slog.Logger
	// Network is guest networking (addresses, taps, packet filter, .vm names); nil gives VMs
	// no network device.
	Network Network
	// SSH keeps banger's ssh files (host keys, known_hosts, ssh_config, client key); nil:
	// those of Layout, with `banger` on PATH as ssh_config's ProxyCommand.
	SSH SSHAccess
	// Snapshots is the store of saved guests (shared with the catalog, which keeps the image
	// versions they need); nil: the one in Layout.SnapshotsDir.
	Snapshots *snapshot.Store
	// Background runs work that outlives the request that caused it: making spare VMs
	// (config warm_spares). nil: no spares are made.
	Background Background
}

// New returns a Service.
func New(o Options) *Service {
	s := &Service{
		store:      o.Store,
		layout:     o.Layout,
		config:     o.Config,
		host:       o.Host,
		artifacts:  o.Artifacts,
		drivers:    map[string]vmm.Driver{},
		log:        o.Log,
		net:        o.Network,
		ssh:        o.SSH,
		snaps:      o.Snapshots,
		locks:      map[string]*sync.Mutex{},
		running:    map[string]*instance{},
		background: o.Background,
		spares:     sparePool{ready: map[string][]*spare{}},
	}
	for _, d := range o.Drivers {
		s.drivers[d.Name()] = d
		s.driverOrder = append(s.driverOrder, d)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.snaps == nil {
		s.snaps = snapshot.NewStore(o.Layout.SnapshotsDir())
	}
	if s.ssh == nil {
		s.ssh = vmssh.New(vmssh.Options{Layout: o.Layout, Config: o.Config})
	}
	return s
}

// instance is a VM whose VMM runs, with its (lazily re-dialled) agent session.
type instance struct {
	machine vmm.Machine
	// deleting is set when banger itself ends the VMM, so the exit watcher does not record it
	// as a crash.
	deleting bool

	mu    sync.Mutex
	agent *agent.Client
}

// lock takes the per-VM lock for id and returns its unlock.
func (s *Service) lock(id string) func() {
	s.mu.Lock()
	l, ok := s.locks[id]
	if !ok {
		l = &sync.Mutex{}
		s.locks[id] = l
	}
	s.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (s *Service) instance(id string) *instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[id]
}

func (s *Service) setInstance(id string, in *instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in == nil {
		delete(s.running, id)
	} else {
		s.running[id] = in
	}
}

func invalidf(format string, args ...any) error { return failure.New(failure.Invalid, format, args...) }
func notFoundf(format string, args ...any) error {
	return failure.New(failure.NotFound, format, args...)
}
func conflictf(format string, args ...any) error {
	return failure.New(failure.Conflict, format, args...)
}
