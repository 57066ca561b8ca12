package guestagent

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/agent"
)

// System is what a renewal changes outside Server.Root: the kernel's clock, random pool, host
// name and network, and the running sshd. Every method returns once its change is in effect;
// none waits on the network. Tests (and fake guests run on a host) replace it so that the
// machine they run on stays as it is.
type System interface {
	// SetClock sets the system clock (CLOCK_REALTIME) to t and, where the guest has one,
	// the RTC; an RTC that refuses is logged, not an error.
	SetClock(t time.Time) error
	// AddEntropy credits b to the kernel's random pool and reseeds its CRNG from it.
	AddEntropy(b []byte) error
	// SetHostname sets the kernel's host name (the UTS name).
	SetHostname(name string) error
	// RenewLink gives the interface with n.OldMAC (or, on a retry, n.MAC) the MAC n.MAC,
	// replaces its addresses, routes and neighbours by n.Address and a default route via
	// n.Gateway, and announces the address with a gratuitous ARP.
	RenewLink(n agent.ParsedNetwork) error
	// ReloadSSH makes a running sshd read its host keys again; it does nothing when none runs.
	ReloadSSH() error
}

// renew applies r after checking all of it: an invalid request changes nothing. It returns
// how long the renewal and each part took, for the host (nothing is logged in the guest). The
// clock is set first and the random pool seeded next; then the host name with the machine id,
// the network identity and the host keys are applied at once, as they touch different files and
// kernel state (a restored guest runs each part slowly under emulation, where its code is
// translated afresh). The error names every part that failed; the parts before them and beside
// them stay applied, so the host retries the whole renewal (every part replaces).
//
// /etc/hosts is rewritten with the network part (the new address, under the new host name or
// else the current one): a renewal with a Hostname and no Network leaves it as it was. A VM
// generation ID device, where the VMM has one, needs nothing from the agent: the kernel's
// vmgenid driver reseeds the RNG by itself when the VMM changes the ID.
func (s *Server) renew(r agent.Renewal) (report string, err error) {
	if err := r.Validate(); err != nil {
		return "", err
	}
	s.renewing.Lock()
	defer s.renewing.Unlock()
	var net4 agent.ParsedNetwork
	if r.Network != nil {
		net4, _ = r.Network.Parse() // Validate parsed it already
	}
	sys, root := s.system(), s.root()
	// How long each part took goes to the agent's log: a renewal is on the path of every
	// warm start and fork.
	began := time.Now()
	var (
		mu   sync.Mutex
		took []string
	)
	timed := func(what string, f func() error) error {
		t0 := time.Now()
		err := f()
		mu.Lock()
		took = append(took, fmt.Sprintf("%s %s", what, time.Since(t0).Round(time.Millisecond)))
		mu.Unlock()
		return err
	}
	defer func() {
		mu.Lock()
		report = fmt.Sprintf("%s (%s)", time.Since(began).Round(time.Millisecond), strings.Join(took, ", "))
		mu.Unlock()
	}()
	if !r.Clock.IsZero() && clockAgrees(time.Now(), r.Clock) {
		took = append(took, fmt.Sprintf("clock kept, %+dms from the host's", time.Since(r.Clock).Milliseconds()))
	} else if !r.Clock.IsZero() {
		took = append(took, fmt.Sprintf("clock was %+dms from the host's", time.Since(r.Clock).Milliseconds()))
		if err := timed("clock", func() error { return sys.SetClock(r.Clock) }); err != nil {
			return "", fmt.Errorf("set the clock to %s: %w", r.Clock.UTC().Format(time.RFC3339Nano), err)
		}
	}
	if len(r.Entropy) > 0 {
		if err := timed("entropy", func() error { return sys.AddEntropy(r.Entropy) }); err != nil {
			return "", fmt.Errorf("seed the kernel's random pool with %d bytes: %w", len(r.Entropy), err)
		}
	}
	var parts []func() error
	if r.Hostname != "" || r.MachineID != "" {
		parts = append(parts, func() error {
			return timed("name", func() error {
				if r.Hostname != "" {
					if err := sys.SetHostname(r.Hostname); err != nil {
						return fmt.Errorf("set the host name to %q: %w", r.Hostname, err)
					}
					if err := replaceFile(filepath.Join(root, "etc/hostname"), r.Hostname+"\n"); err != nil {
						return fmt.Errorf("host name: %w", err)
					}
				}
				if r.MachineID != "" {
					if err := writeMachineID(root, r.MachineID); err != nil {
						return fmt.Errorf("machine id: %w", err)
					}
				}
				return nil
			})
		})
	}
	if r.Network != nil {
		parts = append(parts, func() error {
			return timed("network", func() error {
				if err := sys.RenewLink(net4); err != nil {
					return fmt.Errorf("network identity %s %s: %w", net4.MAC, net4.Address, err)
				}
				hostname := r.Hostname
				if hostname == "" {
					hostname, _ = os.Hostname()
				}
				if err := renewNameFiles(root, net4, hostname); err != nil {
					return fmt.Errorf("network identity: %w", err)
				}
				return nil
			})
		})
	}
	if len(r.HostKeys) > 0 {
		parts = append(parts, func() error {
			return timed("host keys", func() error {
				if err := provision(agent.Provision{Files: r.HostKeys}, root); err != nil {
					return fmt.Errorf("host keys: %w", err)
				}
				if err := sys.ReloadSSH(); err != nil {
					return fmt.Errorf("make sshd use its new host keys: %w", err)
				}
				return nil
			})
		})
	}
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, part := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = part()
		}()
	}
	wg.Wait()
	return "", errors.Join(errs...)
}

// clockSlack is how far behind a renewal's time the guest's clock may be and be left alone:
// a clock set anew wakes every timer that asked to hear of clock changes (under emulation
// PID 1, journald, logind and D-Bus then spend ~0.2 s of a fresh clone's CPU), work a guest
// that kept time need not do: a spare taken by a create, or a clone whose VMM caught its
// clock up over the time since its snapshot (the QEMU driver does under TCG).
const clockSlack = 100 * time.Millisecond

// clockTransit is how far ahead of a renewal's time the guest's clock may be and be left
// alone. The renewal's time is read on the host before the request crosses to the guest, and a
// guest restored a moment ago reads and decodes it slowly (its code is translated afresh under
// emulation): clones whose clocks were right read it 50-140 ms after it was stamped.
const clockTransit = 500 * time.Millisecond

// clockAgrees says whether the guest's time now agrees with the host's time host, read on the
// host when the request left: at most clockSlack behind it, at most clockTransit ahead.
func clockAgrees(now, host time.Time) bool {
	d := now.Sub(host)
	return d > -clockSlack && d < clockTransit
}

func (s *Server) system() System {
	if s.Sys != nil {
		return s.Sys
	}
	return linuxSystem{root: s.root(), logf: s.Log.Printf}
}

// writeMachineID replaces /etc/machine-id (and a D-Bus machine id that is a file of its own
// rather than a link to it). systemd, when /etc is read-only, mounts /run/machine-id over
// /etc/machine-id: that file is rewritten in place, as a rename over a mount point fails.
// What already runs keeps the identity it read (PID 1 and journald among them: the journal
// of this boot stays under the old id); everything started afterwards reads the new one.
func writeMachineID(root, id string) error {
	path := filepath.Join(root, "etc/machine-id")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	err := writeFileAtomic(path, []byte(id+"\n"), 0o444)
	if errors.Is(err, syscall.EBUSY) {
		err = os.WriteFile(path, []byte(id+"\n"), 0o444)
	}
	if err != nil {
		return err
	}
	dbus := filepath.Join(root, "var/lib/dbus/machine-id")
	if fi, err := os.Lstat(dbus); err == nil && fi.Mode().IsRegular() {
		return writeFileAtomic(dbus, []byte(id+"\n"), 0o444)
	}
	return nil
}

// writeFileAtomic replaces path by a file holding data with exactly mode.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".banger-tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// renewNameFiles writes /etc/hosts for the new address and, when the renewal names
// resolvers, /etc/resolv.conf, as the agent writes them at boot.
func renewNameFiles(root string, n agent.ParsedNetwork, hostname string) error {
	if err := replaceFile(filepath.Join(root, "etc/hosts"), hostsFile(n.Address.Addr(), hostname)); err != nil {
		return err
	}
	if len(n.DNS) == 0 {
		return nil
	}
	return replaceFile(filepath.Join(root, "etc/resolv.conf"), resolvConf(n.DNS))
}

// linuxSystem is the guest's kernel.
type linuxSystem struct {
	root string
	logf func(string, ...any)
}

func (l linuxSystem) SetClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("clock_settime: %w", err)
	}
	f, err := os.OpenFile("/dev/rtc0", os.O_WRONLY, 0)
	if err != nil {
		return nil // no RTC (Firecracker has none): the system clock is what counts
	}
	defer f.Close()
	u := t.UTC()
	rtc := unix.RTCTime{Sec: int32(u.Second()), Min: int32(u.Minute()), Hour: int32(u.Hour()),
		Mday: int32(u.Day()), Mon: int32(u.Month()) - 1, Year: int32(u.Year()) - 1900}
	if err := unix.IoctlSetRTCTime(int(f.Fd()), &rtc); err != nil {
		l.logf("renew: set the RTC: %v (the system clock is set)", err)
	}
	return nil
}

func (linuxSystem) AddEntropy(b []byte) error {
	f, err := os.OpenFile("/dev/random", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	info := randPoolInfo(b)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0]))); e != 0 {
		return fmt.Errorf("RNDADDENTROPY: %w", e)
	}
	// Kernels before 4.17 have no RNDRESEEDCRNG; their pool mixes the entropy in anyway.
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); e != 0 && e != unix.EINVAL && e != unix.ENOTTY {
		return fmt.Errorf("RNDRESEEDCRNG: %w", e)
	}
	return nil
}

// randPoolInfo is RNDADDENTROPY's argument crediting all of b:
// struct rand_pool_info { int entropy_count (bits); int buf_size (bytes); __u32 buf[]; }.
func randPoolInfo(b []byte) []uint32 {
	info := make([]uint32, 2+(len(b)+3)/4)
	info[0], info[1] = uint32(len(b)*8), uint32(len(b))
	if len(b) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&info[2])), len(b)), b)
	}
	return info
}

func (linuxSystem) SetHostname(name string) error { return unix.Sethostname([]byte(name)) }

func (linuxSystem) RenewLink(n agent.ParsedNetwork) error { return renewLink(n) }

// ReloadSSH makes every listening sshd (one whose parent is init, not one serving a
// connection) serve the new host keys. An sshd that executes itself anew for each connection
// and reads the host keys there (OpenSSH before 9.8, without -r) already does: nothing is
// done, and the next connection gets the new key. Others are sent SIGHUP and watched until
// they listen again (systemd's reload would first run `sshd -t`, seconds under emulation).
func (l linuxSystem) ReloadSSH() error {
	for _, pid := range sshDaemons(l.root, "/proc") {
		if readsKeysPerConnection(l.root, "/proc", pid) {
			continue
		}
		if err := reloadSshd("/proc", pid, 10*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// sshdSessionPaths are where OpenSSH 9.8 and later install sshd-session, which gets its host
// keys from the listening sshd instead of reading them.
var sshdSessionPaths = []string{"usr/lib/openssh/sshd-session", "usr/libexec/openssh/sshd-session", "usr/libexec/sshd-session"}

// readsKeysPerConnection says whether the listening sshd pid reads the host keys from disk
// for each connection: it re-executes itself per connection (no -r on its command line) and
// its OpenSSH has no sshd-session.
func readsKeysPerConnection(root, procRoot string, pid int) bool {
	for _, p := range sshdSessionPaths {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			return false
		}
	}
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	for _, arg := range strings.Split(strings.TrimRight(string(b), "\x00"), "\x00") {
		if arg == "-r" {
			return false
		}
	}
	return true
}

// reloadSshd sends SIGHUP to the sshd pid and waits, at most wait, until it listens again
// on sockets other than those it had: sshd closes its listeners and executes itself again,
// and its new listeners are opened once it has read its configuration and host keys.
func reloadSshd(procRoot string, pid int, wait time.Duration) error {
	return sshdReload{
		pid:       pid,
		signal:    func() error { return unix.Kill(pid, unix.SIGHUP) },
		listeners: func() map[string]bool { return listeners(procRoot, pid) },
		alive:     func() bool { return alive(procRoot, pid) },
	}.run(wait)
}

// sshdReload is how reloadSshd signals and watches one sshd; tests replace its functions.
type sshdReload struct {
	pid       int
	signal    func() error
	listeners func() map[string]bool // inodes of its listening sockets
	alive     func() bool
}

func (r sshdReload) run(wait time.Duration) error {
	before := r.listeners()
	if err := r.signal(); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil // it has gone: nothing to reload
		}
		return fmt.Errorf("signal sshd (pid %d): %w", r.pid, err)
	}
	deadline := time.Now().Add(wait)
	for {
		now := r.listeners()
		renewed := len(now) > 0
		for inode := range now {
			if before[inode] {
				renewed = false
			}
		}
		if renewed {
			return nil
		}
		if !r.alive() {
			return fmt.Errorf("sshd (pid %d) exited when told to read its new host keys; see the guest's logs", r.pid)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sshd (pid %d) did not listen again within %s of being told to read its new host keys", r.pid, wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid exists and has not exited (a zombie has).
func alive(procRoot string, pid int) bool {
	_, f, ok := procStat(procRoot, pid)
	return ok && len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// procStat reads /proc/pid/stat under procRoot: the process's name and the fields after it
// (state, ppid, pgrp …). The name may hold spaces and parentheses; it ends at the last ')'.
func procStat(procRoot string, pid int) (comm string, fields []string, ok bool) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return "", nil, false
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", nil, false
	}
	return s[open+1 : end], strings.Fields(s[end+1:]), true
}

// listeners is the inodes of the listening TCP sockets that pid holds.
func listeners(procRoot string, pid int) map[string]bool {
	held := map[string]bool{}
	fdDir := filepath.Join(procRoot, strconv.Itoa(pid), "fd")
	fds, _ := os.ReadDir(fdDir)
	for _, fd := range fds {
		if link, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && strings.HasPrefix(link, "socket:[") {
			held[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	out := map[string]bool{}
	for _, proto := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(filepath.Join(procRoot, "net", proto))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			// sl local remote st … inode: st 0A is LISTEN.
			if f := strings.Fields(line); len(f) > 9 && f[3] == "0A" && held[f[9]] {
				out[f[9]] = true
			}
		}
	}
	return out
}

// sshdPidFiles are where sshd writes its pid (its PidFile default), under the guest's root.
var sshdPidFiles = []string{"run/sshd.pid", "var/run/sshd.pid"}

// sshDaemons returns the listening sshd that its pid file names, when that process is one,
// and else every listening sshd in procRoot (listeningSshd). The pid file spares a restored
// guest the scan of /proc, which reads every process's stat: 0.4-0.9 s under emulation for
// ~130 processes, on the path of every warm start and fork.
func sshDaemons(root, procRoot string) []int {
	for _, p := range sshdPidFiles {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil || len(b) > 32 {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err == nil && pid > 1 && isListeningSshd(procRoot, pid) {
			return []int{pid}
		}
	}
	return listeningSshd(procRoot)
}

// listeningSshd lists the processes named sshd whose parent is PID 1: the daemons that
// listen, as opposed to those serving one connection (their parent is the listener).
func listeningSshd(procRoot string) []int {
	entries, _ := os.ReadDir(procRoot)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if isListeningSshd(procRoot, pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// isListeningSshd says whether pid is a process named sshd whose parent is PID 1.
func isListeningSshd(procRoot string, pid int) bool {
	comm, f, ok := procStat(procRoot, pid)
	return ok && comm == "sshd" && len(f) > 1 && f[1] == "1"
}

// renewLink is RenewLink in the calling thread's network namespace. Its requests share one
// netlink socket: the package's functions open and close one per request, and a restored
// guest runs that code afresh under emulation (translated anew in every clone: what counts
// there is how much distinct code a renewal runs, more than how often).
func renewLink(n agent.ParsedNetwork) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	link, err := linkByMAC(n.OldMAC, n.MAC)
	if err != nil {
		return err
	}
	name := link.Attrs().Name
	if n.OldMAC.String() == n.MAC.String() && linkInPlace(h, link, n) {
		// The identity the link has already (a spare taking its user's name renews only
		// that): taking it down and up would only disturb its traffic.
		return nil
	}
	// Down first: some drivers change their MAC only then, and the kernel drops what the
	// link had: its routes in every table (IPv4 and IPv6, fib_disable_ip/rt6_disable_ip),
	// its neighbours (ARP and NDP, static ones too) and its IPv6 addresses, whose link-local
	// one comes from the old MAC (unless keep_addr_on_down is set: the list below removes
	// what is left). IPv4 addresses stay across a down.
	if err := h.LinkSetDown(link); err != nil {
		return fmt.Errorf("take %s down: %w", name, err)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list the addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if err := h.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove %s from %s: %w", a.IPNet, name, err)
		}
	}
	if err := h.LinkSetHardwareAddr(link, n.MAC); err != nil {
		return fmt.Errorf("set the MAC of %s to %s: %w", name, n.MAC, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: n.Address.Addr().AsSlice(), Mask: net.CIDRMask(n.Address.Bits(), 32)}}
	if err := h.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", n.Address, name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: n.Gateway.AsSlice()}
	if err := h.RouteReplace(route); err != nil {
		return fmt.Errorf("default route via %s on %s: %w", n.Gateway, name, err)
	}
	if err := gratuitousARP(link.Attrs().Index, n.MAC, n.Address.Addr()); err != nil {
		return fmt.Errorf("announce %s on %s: %w", n.Address.Addr(), name, err)
	}
	return nil
}

// linkInPlace says whether link is up with the MAC n.MAC, n.Address as its only IPv4
// address, and a default route via n.Gateway.
func linkInPlace(h *netlink.Handle, link netlink.Link, n agent.ParsedNetwork) bool {
	a := link.Attrs()
	if a.Flags&net.FlagUp == 0 || a.HardwareAddr.String() != n.MAC.String() {
		return false
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 {
		return false
	}
	if got, ok := netip.AddrFromSlice(addrs[0].IP.To4()); !ok || got != n.Address.Addr() {
		return false
	}
	if ones, _ := addrs[0].Mask.Size(); ones != n.Address.Bits() {
		return false
	}
	routes, err := h.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		return false
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw != nil && r.Gw.Equal(n.Gateway.AsSlice()) {
			return true
		}
	}
	return false
}

// linkByMAC finds the interface with old, or else the one with renewed (a renewal retried
// after it changed the MAC). It asks the standard library, whose parsing of the link dump is a
// fraction of the netlink package's (all of which a clone translates anew); the requests
// that follow need only the index and name.
func linkByMAC(old, renewed net.HardwareAddr) (netlink.Link, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	for _, want := range []net.HardwareAddr{old, renewed} {
		for _, ifi := range ifs {
			if ifi.Flags&net.FlagLoopback == 0 && bytes.Equal(ifi.HardwareAddr, want) {
				return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ifi.Index, Name: ifi.Name,
					HardwareAddr: ifi.HardwareAddr, Flags: ifi.Flags, MTU: ifi.MTU}}, nil
			}
		}
	}
	return nil, fmt.Errorf("no interface has the MAC %s (or %s): the snapshot's network device is gone", old, renewed)
}

// gratuitousARP broadcasts an ARP request for ip from mac on the interface (as arping -U
// does), so that the bridge and its neighbours learn the new MAC at once.
func gratuitousARP(ifindex int, mac net.HardwareAddr, ip netip.Addr) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifindex, Halen: 6}
	copy(sa.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	if err := unix.Sendto(fd, arpAnnouncement(mac, ip), 0, sa); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// arpAnnouncement is an ARP request whose sender and target are both ip (RFC 5227 §3).
func arpAnnouncement(mac net.HardwareAddr, ip netip.Addr) []byte {
	p := []byte{0, 1, 8, 0, 6, 4, 0, 1} // Ethernet, IPv4, 6-byte MAC, 4-byte IP, request
	a := ip.As4()
	p = append(p, mac...)
	p = append(p, a[:]...)
	p = append(p, 0, 0, 0, 0, 0, 0)
	return append(p, a[:]...)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
