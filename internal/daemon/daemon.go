// Package daemon is bangerd: it owns the state (store, kernels, images, VMs), serves the
// versioned HTTP/JSON API of package api on a unix socket, streams progress of long
// operations, and splices exec sessions through to guest agents.
package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/catalog"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/dnsserver"
	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/hostnet"
	"github.com/banger-dev/banger/internal/kernel"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/roothelper"
	"github.com/banger-dev/banger/internal/snapshot"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/version"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/firecracker"
	"github.com/banger-dev/banger/internal/vmm/qemu"
	"github.com/banger-dev/banger/internal/vmnet"
	"github.com/banger-dev/banger/internal/vmservice"
	"github.com/banger-dev/banger/internal/vmssh"
)

// Options configure a daemon.
type Options struct {
	Layout paths.Layout
	// AgentPath is the banger-agent binary put into initramfs images.
	AgentPath string
	// CLIPath is the banger CLI, run by banger's ssh_config as ProxyCommand.
	CLIPath string
	// TestHooks enables request headers that inject faults (end-to-end tests only).
	TestHooks bool
	Log       *slog.Logger
	// OpenHelper, for a daemon that does not run as root, opens the host side of guest
	// networking through banger's root helper listening on socket (config helper_socket).
	// Nil: such a daemon cannot network guests, and Run fails saying that it needs the helper.
	// A daemon running as root does the host side itself and never calls it.
	OpenHelper func(cfg hostnet.Config, socket string) (vmnet.Host, error)
}

// Daemon is a running bangerd.
type Daemon struct {
	opts     Options
	log      *slog.Logger
	store    *store.Store
	vms      *vmservice.Service
	catalog  *catalog.Service
	ops      *operations
	work     *background
	shutdown chan struct{}
}

// Run serves until ctx ends or a client asks for shutdown. VMs keep running either way; the
// daemon's own work (operations, requests, exec sessions) is cancelled and waited for, up to
// shutdownWait, before the store is closed. A shutdown is not an error: Run returns nil.
func Run(ctx context.Context, o Options) error {
	l := o.Layout
	if err := l.Create(); err != nil {
		return err
	}
	if err := paths.CheckSocketPath(l.Socket); err != nil {
		return err
	}
	lg := o.Log
	if lg == nil {
		lg = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}

	// One daemon per socket: the lock is held for the daemon's life.
	lock, err := os.OpenFile(l.Socket+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("open daemon lock: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("another bangerd already serves %s", l.Socket)
	}

	// One daemon per state dir too: two daemons on different sockets must never share VMs.
	stateLock, err := lockStateDir(l)
	if err != nil {
		return err
	}
	defer stateLock.Close()

	st, err := store.Open(l.DBFile())
	if err != nil {
		return err
	}
	defer st.Close()

	loadConfig := func() (config.Config, error) { return config.Load(l) }
	cfg, err := loadConfig()
	if err != nil {
		// A broken config must not stop the daemon: each operation re-reads it and reports.
		lg.Warn("config", "err", err)
		cfg = config.Default(l)
	}
	hostRoot := host.Root("/")
	// Every driver reads its settings afresh per operation; a broken config is reported by
	// the operation that reads it, and the drivers go on with the one read at start.
	current := func() config.Config {
		c, err := loadConfig()
		if err != nil {
			return cfg
		}
		return c
	}
	qd := &qemu.Driver{TSCkHz: hostRoot.TSCkHz(), Settings: func() qemu.Settings { return qemu.SettingsFrom(current()) }, Log: lg}
	fd := &firecracker.Driver{Settings: func() firecracker.Settings { return firecracker.SettingsFrom(current()) }}
	// One store of snapshots, so that the VM service (which makes and restores them) and the
	// catalog (which keeps their image versions and kernels, and drops stale boot snapshots)
	// share its locks: a removal waits for the restores reading the snapshot.
	snaps := snapshot.NewStore(l.SnapshotsDir())
	var vms *vmservice.Service // the catalog tells it which boot snapshots went, for their spares
	cat := catalog.New(catalog.Options{
		Store: st, Layout: l, Config: loadConfig, AgentPath: o.AgentPath, Log: lg, Snapshots: snaps,
		BootSnapshotsDropped: func(names []string) { vms.SparesOf(context.Background(), names) },
	})
	// guestNet is where guests' networking lives: the host's namespace or the one
	// network_namespace names. The daemon's own API socket is not part of it.
	guestNet, dns, err := openNetwork(cfg, l, os.Geteuid(), o.OpenHelper, lg)
	if err != nil {
		return err
	}
	defer guestNet.Close()
	defer dns.Close()
	// A daemon that is not root runs Firecracker in jails the root helper makes and starts
	// (the helper is the one it reaches for the guest network).
	if c, ok := guestNet.(*roothelper.Client); ok {
		fd.Jails = c
	}
	// A snapshot of a restored VM goes through a template QEMU that needs a NIC; it takes a
	// scratch tap from the network (a daemon that is not root cannot make the namespace the
	// template would make its own in). Nothing is admitted on it; a crash leaves it to the
	// next start's sweep of taps without a VM.
	qd.ScratchTap = func() (*os.File, func(), error) { return scratchTap(guestNet) }
	work := newBackground()
	vms = vmservice.New(vmservice.Options{
		Store: st, Layout: l, Config: loadConfig, Host: hostRoot,
		Artifacts: cat, Drivers: []vmm.Driver{fd, qd}, Log: lg, // vmm = "auto" prefers Firecracker
		Network:    vmnet.New(vmnet.Options{Host: guestNet, DNS: dns, DNSPort: cfg.DNSPort, Log: lg}),
		SSH:        vmssh.New(vmssh.Options{Layout: l, Config: loadConfig, CLIPath: o.CLIPath}),
		Snapshots:  snaps,
		Background: work.start, // spare VMs are made as the daemon's work, and stop with it
	})
	d := &Daemon{
		opts:     o,
		log:      lg,
		store:    st,
		vms:      vms,
		catalog:  cat,
		ops:      newOperations(),
		work:     work,
		shutdown: make(chan struct{}),
	}
	cat.Cleanup()
	if err := d.vms.Reconcile(ctx); err != nil {
		lg.Error("reconcile", "err", err)
	}
	if err := dropOtherAgentsBootSnapshots(ctx, d.vms, o.AgentPath, lg); err != nil {
		lg.Warn("boot snapshots", "err", err)
	}
	// NAT guests leave through the default route's interface: follow it when it changes.
	done := make(chan struct{})
	defer close(done)
	if err := guestNet.WatchUplink(done, func(err error) { lg.Warn("packet filter", "err", err) }); err != nil {
		lg.Warn("NAT guests will not follow a change of default route until the next VM start or stop", "err", err)
	}

	// The API socket is the daemon's, in the daemon's own network namespace: never the
	// guests' (package net, not guestNet).
	ln, err := listenSocket(l.Socket, net.Listen, lg)
	if err != nil {
		return err
	}
	trim := newTrimmer()
	defer trim.stop()
	srv := &http.Server{Handler: trim.wrap(d.handler()), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(lg.Handler(), slog.LevelWarn)}
	lg.Info("bangerd started", "version", version.Get().String(), "socket", l.Socket, "state", l.StateDir, "pid", os.Getpid())

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var serveErr error
	select {
	case <-ctx.Done():
	case <-d.shutdown:
	case serveErr = <-errc:
	}
	lg.Info("bangerd stopping; VMs keep running")
	d.stop(srv, shutdownWait)
	_ = os.Remove(l.Socket)
	if serveErr != nil {
		return fmt.Errorf("serve the API on %s: %w", l.Socket, serveErr)
	}
	return nil
}

// dropOtherAgentsBootSnapshots removes the boot snapshots made with another build of the
// guest agent than the one at agentPath (a banger upgrade or rebuild): a restored guest runs
// the agent it was saved with, so no warm start restores them (their combination names the
// old build), and they would only take space. Their agent is the name of the initramfs that
// carried it, named after the binary's hash as package kernel names it. If the agent cannot be
// read, nothing is removed. The daemon calls it at start, after Reconcile has cleaned the
// store and before it serves.
func dropOtherAgentsBootSnapshots(ctx context.Context, vms *vmservice.Service, agentPath string, lg *slog.Logger) error {
	current, err := kernel.AgentInitramfsName(agentPath)
	if err != nil {
		return fmt.Errorf("boot snapshots of other agent builds are kept: %w", err)
	}
	dropped, err := vms.DropBootSnapshots(ctx, func(m snapshot.Meta) bool { return m.Agent != current })
	if len(dropped) > 0 {
		lg.Info("removed boot snapshots of another agent build", "snapshots", dropped, "agent", current)
	}
	if err != nil {
		return fmt.Errorf("remove boot snapshots of other agent builds: %w", err)
	}
	return nil
}

// handler is the daemon's API: every request counts as the daemon's work (see background).
func (d *Daemon) handler() http.Handler { return d.work.track(d.routes()) }

// stop ends the daemon's work before the store is closed: it stops taking clients, cancels
// operations, log follows and exec sessions, and waits up to limit for them and for the
// requests that finish what they began (deletes) to end. Work still running then is named in
// the log and cut short by the exit: a stop was asked for, and VMs keep running anyway
// (spare VMs do not: they are deleted).
func (d *Daemon) stop(srv *http.Server, limit time.Duration) {
	d.work.stop()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	_ = srv.Shutdown(ctx) // closes the socket, then waits for the requests (as wait does)
	left := d.work.wait(ctx)
	if d.vms != nil {
		// Spares are a cache of the running daemon: the next one makes its own.
		d.vms.RemoveSpares(context.WithoutCancel(ctx))
	}
	if len(left) > 0 {
		d.log.Warn(fmt.Sprintf("work still running %s after the stop began; the exit cuts it short", limit), "work", left)
		return
	}
	d.log.Info("all work ended")
}

// requestShutdown ends Run after the current answer has been sent.
func (d *Daemon) requestShutdown() {
	select {
	case <-d.shutdown:
	default:
		close(d.shutdown)
	}
}

// isClosed reports errors that only mean the peer went away.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// lockStateDir takes the state dir's lock and records this daemon's socket in it, so that a
// second daemon for the same state dir (on another socket) can say which one holds it.
func lockStateDir(l paths.Layout) (*os.File, error) {
	path := filepath.Join(l.StateDir, "bangerd.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open state lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		return nil, fmt.Errorf("state dir %s is already served by the daemon on %s; use that socket (BANGER_SOCKET) or another state dir (XDG_STATE_HOME)", l.StateDir, strings.TrimSpace(string(holder)))
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(l.Socket+"\n"), 0)
	return f, nil
}

// openNetwork sets up guest networking from the config (read at start: network keys take
// effect when the daemon restarts) for a daemon running as euid, with openHelper as in
// Options.OpenHelper. BANGER_NETWORK_NAMESPACE overrides network_namespace, so a test or CI
// harness can keep guest traffic in a namespace of its own without a config file. The DNS
// server's sockets, to upstreams included, are the network's (Host.Dial).
func openNetwork(cfg config.Config, l paths.Layout, euid int, openHelper func(hostnet.Config, string) (vmnet.Host, error), lg *slog.Logger) (vmnet.Host, *dnsserver.Server, error) {
	ns := cfg.NetworkNamespace
	if v := os.Getenv("BANGER_NETWORK_NAMESPACE"); v != "" {
		ns = v
	}
	hc := hostnet.Config{Bridge: cfg.BridgeName, CIDR: cfg.BridgeCIDR, NetNS: ns, StateDir: l.StateDir, OpenPorts: cfg.HostPortsOpenToGuests}
	socket := cfg.HelperSocket
	if v := os.Getenv("BANGER_HELPER_SOCKET"); v != "" && filepath.IsAbs(v) {
		socket = v
	}
	guestNet, err := openHost(hc, socket, euid, openHelper)
	if err != nil {
		return nil, nil, fmt.Errorf("guest network: %w", err)
	}
	upstreams := cfg.DNSUpstreams
	if len(upstreams) == 0 {
		upstreams = dnsserver.HostUpstreams("/etc/resolv.conf", guestNet.HostIP().String())
	}
	lg.Info("guest network", "bridge", cfg.BridgeName, "cidr", cfg.BridgeCIDR, "netns", ns, "dns_upstreams", upstreams, "host_ports_open_to_guests", cfg.HostPortsOpenToGuests)
	return guestNet, dnsserver.New(upstreams, guestNet.Dial, lg), nil
}

// openHost picks who does the host side of guest networking, which needs privilege: the
// daemon itself (package hostnet) when it runs as root (euid 0) — one process —, banger's root
// helper on socket otherwise, through openHelper (nil: package roothelper's client).
func openHost(hc hostnet.Config, socket string, euid int, openHelper func(hostnet.Config, string) (vmnet.Host, error)) (vmnet.Host, error) {
	if euid == 0 {
		return hostnet.Open(hc)
	}
	if openHelper == nil {
		openHelper = dialHelper
	}
	h, err := openHelper(hc, socket)
	if err != nil {
		return nil, fmt.Errorf("bangerd runs as uid %d, not root, so the bridge, taps and packet filter go through banger's root helper on %s (config helper_socket): %w", euid, socket, err)
	}
	return h, nil
}

// The root helper starts the jails of a Firecracker driver that does not run as root.
var _ firecracker.Jails = (*roothelper.Client)(nil)

// dialHelper connects to the root helper for hc's network. The helper takes namespaces by
// name only: a path is accepted when it is /run/netns/<name>.
func dialHelper(hc hostnet.Config, socket string) (vmnet.Host, error) {
	ns := hc.NetNS
	if strings.Contains(ns, "/") {
		if filepath.Dir(ns) != "/run/netns" {
			return nil, fmt.Errorf("network namespace %s: the root helper works in namespaces under /run/netns only; name one (`ip netns add NAME`)", ns)
		}
		ns = filepath.Base(ns)
	}
	c, err := roothelper.Dial(socket, roothelper.Network{Bridge: hc.Bridge, CIDR: hc.CIDR.String(), Namespace: ns}, hc.OpenPorts)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// scratchTap makes a tap on h's bridge that belongs to no VM (a random id) and returns its
// queue and how to remove it.
func scratchTap(h vmnet.Host) (*os.File, func(), error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, nil, err
	}
	id := hex.EncodeToString(b[:])
	f, err := h.AddTap(id)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { _ = h.DeleteTap(id) }, nil
}
