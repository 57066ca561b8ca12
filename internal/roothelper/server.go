package roothelper

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/hostnet"
	"github.com/banger-dev/banger/internal/version"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// maxConns bounds the connections served at once; more wait in the listen queue.
const maxConns = 32

// Server is the root helper: it serves requests on a unix socket for root and the members of
// its group, and keeps, per network, the guest set of each caller uid.
type Server struct {
	cfg Config
	gid int // the group whose members may ask; -1: root only
	log *slog.Logger

	mu     sync.Mutex
	nets   map[string]*network // by bridge and namespace
	closed bool
	wg     sync.WaitGroup
	slots  chan struct{}
	// reapplied, when set (by tests, before Serve), is called after each re-apply of a filter
	// for a default route change.
	reapplied func()

	jmu      sync.Mutex               // jail id picks and jailBusy
	jailBusy map[string]chan struct{} // jail directories a request is at work on; closed when done
}

// network is one served bridge in one namespace.
type network struct {
	mu     sync.Mutex
	cfg    *NetworkConfig
	ns     string
	net    *hostnet.Net
	nsh    netns.NsHandle    // the namespace opened, to notice it being replaced; None for the host's
	sets   map[int]callerSet // by caller uid; never an empty set
	stop   chan struct{}     // closes the uplink watch; nil until guests appeared
	closed bool              // released: the uplink watch must not touch it
	// stateFile keeps guests for a restarted helper; nsID tells the namespace they were in.
	stateFile string
	nsID      string
	// jailCaller returns the uid whose jail has uid owner, or -1: a tap lent to a jail is
	// its caller's still.
	jailCaller func(owner int) int
}

// callerSet is what one caller uid asked the filter for.
type callerSet struct {
	guests []hostnet.Guest
	ports  []uint16 // host ports its guests may reach
}

// NewServer returns a server for cfg (from LoadConfig or DefaultConfig, modified). The group
// is looked up now: when it does not exist only root may use the helper.
func NewServer(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, gid: -1, log: log, nets: map[string]*network{}, jailBusy: map[string]chan struct{}{}, slots: make(chan struct{}, maxConns)}
	if cfg.Group != "" {
		g, err := user.LookupGroup(cfg.Group)
		if err != nil {
			log.Warn("the helper's group does not exist: only root may use the helper (create it with `groupadd --system "+cfg.Group+"`)", "group", cfg.Group, "err", err)
		} else if s.gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("group %s: gid %q", cfg.Group, g.Gid)
		}
	}
	return s, nil
}

// SetGroupID makes gid the group whose members may use the helper, in place of the
// configured group's (tests).
func (s *Server) SetGroupID(gid int) { s.gid = gid }

// Serve answers connections on l, a unix stream listener, until l is closed.
func (s *Server) Serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			continue
		}
		s.slots <- struct{}{}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			<-s.slots
			uc.Close()
			continue
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer func() { <-s.slots; s.wg.Done() }()
			defer uc.Close()
			s.serveConn(uc)
		}()
	}
}

// Close stops taking connections, waits for the requests being served, then stops the uplink
// watches and releases the namespaces. It leaves the host network as it is. Close the
// listener too, so that Serve returns.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, n := range s.nets {
		n.close()
		delete(s.nets, k)
	}
	return nil
}

// caller is the process at the other end of a connection.
type caller struct {
	pid, uid, gid int
	groups        []int
}

func peer(c *net.UnixConn) (caller, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return caller{}, err
	}
	var cl caller
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			serr = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		cl = caller{pid: int(cred.Pid), uid: int(cred.Uid), gid: int(cred.Gid)}
		cl.groups, serr = peerGroups(int(fd))
	}); err != nil {
		return caller{}, err
	}
	return cl, serr
}

// peerGroups reads SO_PEERGROUPS: the supplementary groups of the peer when it connected.
func peerGroups(fd int) ([]int, error) {
	buf := make([]uint32, 256)
	for {
		size := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch {
		case errno == unix.ERANGE && size/4 > uint32(len(buf)) && size/4 <= 65536:
			buf = make([]uint32, size/4)
			continue
		case errno != 0:
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", errno)
		}
		out := make([]int, 0, size/4)
		for _, g := range buf[:size/4] {
			out = append(out, int(g))
		}
		return out, nil
	}
}

func (s *Server) allowed(cl caller) bool {
	if cl.uid == 0 {
		return true
	}
	return s.gid >= 0 && (cl.gid == s.gid || slices.Contains(cl.groups, s.gid))
}

func (s *Server) serveConn(c *net.UnixConn) {
	cl, err := peer(c)
	if err != nil {
		s.log.Error("refused a connection: cannot read its credentials", "err", err)
		return
	}
	if !s.allowed(cl) {
		s.log.Warn("refused", "uid", cl.uid, "pid", cl.pid, "reason", "not root and not in group "+s.cfg.Group)
		_ = writeResponse(c, Response{Error: &WireError{Kind: KindDenied, Message: fmt.Sprintf(
			"uid %d is not in group %s; add the user with `sudo usermod -aG %s USER` and log in again", cl.uid, s.cfg.Group, s.cfg.Group)}}, nil)
		// Closing with the request unread would reset the connection before the client read
		// why: let it finish sending, and throw that away, within bounds.
		_ = c.CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(readTimeout))
		_, _ = io.Copy(io.Discard, io.LimitReader(c, MaxRequest+1))
		return
	}
	req, reqFiles, err := readRequest(c)
	defer closeAll(reqFiles)
	var resp Response
	var files []*os.File
	var ck checked
	if err == nil {
		ck, err = s.cfg.validate(req)
	}
	if err == nil && len(reqFiles) > 0 && ck.op != OpJailStart {
		err = invalid("%s takes no descriptors; the request carried %d", ck.op, len(reqFiles))
	}
	if err == nil {
		switch ck.op {
		case OpJailStart, OpJailDial, OpJailKill, OpJailRemove, OpJailList:
			resp, files, err = s.doJail(cl, ck, reqFiles)
		default:
			resp, files, err = s.do(cl, ck)
		}
	}
	defer closeAll(files)
	attrs := []any{"uid", cl.uid, "pid", cl.pid, "op", req.Op, "bridge", req.Network.Bridge, "netns", req.Network.Namespace}
	switch {
	case req.Tap != "":
		attrs = append(attrs, "tap", req.Tap)
	case req.Op == OpSetGuests:
		attrs = append(attrs, "guests", len(req.Guests))
	case req.Addr != "" || req.Proto != "":
		attrs = append(attrs, "proto", req.Proto, "addr", req.Addr)
	}
	if req.Jail != "" {
		attrs = append(attrs, "jail", req.Jail)
		if resp.Jail != nil {
			attrs = append(attrs, "jail_uid", resp.Jail.UID, "jail_pid", resp.Jail.PID)
		}
		if req.Socket != "" {
			attrs = append(attrs, "socket", req.Socket)
		}
	}
	if err != nil {
		s.log.Warn("failed", append(attrs, "kind", errorKind(err), "err", err)...)
		resp = Response{Error: &WireError{Kind: errorKind(err), Message: err.Error()}}
		files = nil
	} else {
		s.log.Info("done", attrs...)
		resp.OK = true
	}
	if err := writeResponse(c, resp, files); err != nil {
		s.log.Warn("could not answer", "uid", cl.uid, "pid", cl.pid, "op", req.Op, "err", err)
	}
}

// network returns the served network of ck, opening it (and its namespace) on first use, and
// again when its namespace was replaced.
func (s *Server) network(ck checked) (*network, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("the helper is stopping")
	}
	key := ck.net.Bridge + "\x00" + ck.ns
	nsh := netns.None()
	if ck.ns != "" {
		h, err := openNamespace(ck.ns)
		if err != nil {
			return nil, err
		}
		nsh = h
	}
	if n := s.nets[key]; n != nil {
		if ck.ns == "" || n.nsh.Equal(nsh) {
			if nsh.IsOpen() {
				nsh.Close()
			}
			return n, s.oneBridgePerNamespace(n)
		}
		s.log.Info("network namespace was replaced; forgetting the old one", "netns", ck.ns, "bridge", ck.net.Bridge)
		n.close()
		delete(s.nets, key)
	}
	stateDir := filepath.Join(s.cfg.StateDir, "host")
	path := ""
	if ck.ns != "" {
		stateDir = filepath.Join(s.cfg.StateDir, "netns-"+ck.ns)
		path = fmt.Sprintf("/proc/self/fd/%d", int(nsh))
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		nsh.Close()
		return nil, fmt.Errorf("state directory: %w", err)
	}
	hn, err := hostnet.Open(hostnet.Config{Bridge: ck.net.Bridge, CIDR: ck.net.prefix, NetNS: path, StateDir: stateDir, OpenPorts: ck.net.OpenPorts})
	if err != nil {
		if nsh.IsOpen() {
			nsh.Close()
		}
		return nil, err
	}
	n := &network{cfg: ck.net, ns: ck.ns, net: hn, nsh: nsh, sets: map[int]callerSet{}, stateFile: filepath.Join(stateDir, "guests.json"), jailCaller: s.jailCaller}
	if n.nsID, err = namespaceID(nsh); err != nil {
		n.close()
		return nil, err
	}
	if ck.ns != "" && !s.cfg.HostNamespace {
		if own, err := namespaceID(netns.None()); err != nil || own == n.nsID {
			n.close()
			return nil, failure.New(failure.Invalid, "network namespace %s is the helper's own, and its configuration does not allow that (host_namespace)", ck.ns)
		}
	}
	s.restore(n)
	s.nets[key] = n
	return n, s.oneBridgePerNamespace(n)
}

// oneBridgePerNamespace refuses n while another bridge of the same namespace has guests:
// banger's packet filter is one per namespace (its bridge table sees every bridge's ports),
// so two bridges there would each drop the other's guests. The caller holds s.mu.
func (s *Server) oneBridgePerNamespace(n *network) error {
	for _, o := range s.nets {
		if o == n || o.ns != n.ns || o.cfg.Bridge == n.cfg.Bridge {
			continue
		}
		o.mu.Lock()
		busy := len(o.sets) > 0 && !o.closed
		o.mu.Unlock()
		if busy {
			return failure.New(failure.Conflict, "bridge %s has guests in the same network namespace (%q); banger's packet filter serves one bridge per namespace", o.cfg.Bridge, n.ns)
		}
	}
	return nil
}

// openNamespace opens /run/netns/name, refusing anything but a network namespace there (a
// symlink, a plain file).
func openNamespace(name string) (netns.NsHandle, error) {
	path := filepath.Join("/run/netns", name)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return netns.None(), failure.New(failure.NotFound, "network namespace %s does not exist (create it with `ip netns add %s`)", name, name)
		}
		return netns.None(), fmt.Errorf("open network namespace %s: %w", path, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil || st.Type != unix.NSFS_MAGIC {
		unix.Close(fd)
		return netns.None(), failure.New(failure.Invalid, "%s is not a network namespace", path)
	}
	return netns.NsHandle(fd), nil
}

// close releases n. Nothing may use n.net afterwards: a closed hostnet.Net works in the
// helper's own namespace. Requests and the uplink watch check n.closed under n.mu.
func (n *network) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	if n.stop != nil {
		close(n.stop)
	}
	n.net.Close()
	if n.nsh.IsOpen() {
		n.nsh.Close()
	}
}

// do runs a validated request for cl.
func (s *Server) do(cl caller, ck checked) (Response, []*os.File, error) {
	n, err := s.network(ck)
	if err != nil {
		return Response{}, nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return Response{}, nil, fmt.Errorf("network namespace %s was replaced while the request waited; send it again", ck.ns)
	}
	switch ck.op {
	case OpHello:
		uid := cl.uid
		return Response{Protocol: ProtocolVersion, Version: version.Get().String(), UID: &uid, Jails: s.cfg.Jails.Enabled()}, nil, nil
	case OpEnsureBridge:
		return Response{}, nil, n.net.EnsureBridge()
	case OpAddTap:
		f, err := n.addTap(ck.tap, cl.uid)
		if err != nil {
			return Response{}, nil, err
		}
		return Response{}, []*os.File{f}, nil
	case OpDeleteTap:
		return Response{}, nil, n.deleteTap(ck.tap, cl.uid)
	case OpListTaps:
		taps, err := n.taps(cl.uid)
		return Response{Taps: taps}, nil, err
	case OpSetGuests:
		return Response{}, nil, s.setGuests(n, cl.uid, ck.guests, ck.ports)
	case OpRouteDomain:
		return Response{}, nil, n.net.RouteDomain()
	case OpUnrouteDomain:
		return Response{}, nil, n.net.UnrouteDomain()
	case OpRemoveBridge:
		return Response{}, nil, n.net.RemoveBridge()
	case OpListen:
		f, err := n.listen(ck.proto, ck.addr.String())
		if err != nil {
			return Response{}, nil, err
		}
		return Response{}, []*os.File{f}, nil
	case OpSocket:
		f, err := n.socket(ck.proto)
		if err != nil {
			return Response{}, nil, err
		}
		return Response{}, []*os.File{f}, nil
	}
	return Response{}, nil, invalid("unknown operation %q", ck.op)
}

// addTap replaces a stale tap of the caller's (or makes a new one) and returns its queue.
func (n *network) addTap(name string, uid int) (*os.File, error) {
	if err := n.net.EnsureBridge(); err != nil {
		return nil, err
	}
	var f *os.File
	err := n.net.Do(func() error {
		old, err := tapLink(name)
		if err != nil {
			return err
		}
		if old != nil {
			if err := n.checkOwner(old, uid); err != nil {
				return err
			}
			if err := netlink.LinkDel(old); err != nil {
				return fmt.Errorf("delete the stale tap %s: %w", name, err)
			}
		}
		br, err := netlink.LinkByName(n.cfg.Bridge)
		if err != nil {
			return fmt.Errorf("bridge %s: %w", n.cfg.Bridge, err)
		}
		f, err = createTap(name, uid, br.Attrs().Index)
		return err
	})
	return f, err
}

// deleteTap removes the caller's tap; a missing one is fine.
func (n *network) deleteTap(name string, uid int) error {
	return n.net.Do(func() error {
		t, err := tapLink(name)
		if err != nil || t == nil {
			return err
		}
		if err := n.checkOwner(t, uid); err != nil {
			return err
		}
		if err := netlink.LinkDel(t); err != nil {
			return fmt.Errorf("delete tap %s: %w", name, err)
		}
		return nil
	})
}

// taps lists the banger taps the caller owns. For root that is the taps of uid 0 and those
// without an owner (a root daemon's), not every user's: a daemon removes the taps it lists
// that are not its VMs'.
func (n *network) taps(uid int) ([]string, error) {
	out := []string{}
	err := n.net.Do(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return fmt.Errorf("list links: %w", err)
		}
		for _, l := range links {
			t, ok := l.(*netlink.Tuntap)
			if ok && tapNameRE.MatchString(t.Name) && n.owns(int(t.Owner), uid) {
				out = append(out, t.Name)
			}
		}
		return nil
	})
	slices.Sort(out)
	return out, err
}

// setGuests replaces uid's guest set and open ports and applies the union of all sets. A
// guest whose tap or address another uid's set holds, or whose tap another uid owns, is a
// Conflict; on any failure the old set stays.
func (s *Server) setGuests(n *network, uid int, guests []hostnet.Guest, ports []uint16) error {
	for other, set := range n.sets {
		if other == uid {
			continue
		}
		for _, o := range set.guests {
			for _, g := range guests {
				if g.IP == o.IP || g.Tap == o.Tap {
					return failure.New(failure.Conflict, "guest %s (%s) collides with a guest of uid %d (%s, %s)", g.Tap, g.IP, other, o.Tap, o.IP)
				}
			}
		}
	}
	if uid != 0 {
		if err := n.net.Do(func() error {
			for _, g := range guests {
				t, err := tapLink(g.Tap)
				if err != nil {
					return err
				}
				if t != nil {
					if err := n.checkOwner(t, uid); err != nil {
						return err
					}
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	old, had := n.sets[uid]
	if len(guests) == 0 {
		delete(n.sets, uid)
	} else {
		n.sets[uid] = callerSet{guests: guests, ports: ports}
	}
	if err := n.apply(); err != nil {
		if had {
			n.sets[uid] = old
		} else {
			delete(n.sets, uid)
		}
		n.net.SetOpenPorts(n.openPorts())
		return err
	}
	if err := n.save(); err != nil {
		s.log.Warn("a restarted helper would not know these guests", "bridge", n.cfg.Bridge, "netns", n.ns, "err", err)
	}
	s.watch(n)
	return nil
}

// apply writes the filter for every uid's sets. The caller holds n.mu.
func (n *network) apply() error {
	n.net.SetOpenPorts(n.openPorts())
	return n.net.SetGuests(n.union())
}

// union is every uid's guests, in a stable order.
func (n *network) union() []hostnet.Guest {
	var all []hostnet.Guest
	for _, set := range n.sets {
		all = append(all, set.guests...)
	}
	slices.SortFunc(all, func(a, b hostnet.Guest) int { return a.IP.Compare(b.IP) })
	return all
}

// openPorts are the configured ports and those of every uid with guests, sorted, once each.
func (n *network) openPorts() []uint16 {
	ports := slices.Clone(n.cfg.OpenPorts)
	for _, set := range n.sets {
		ports = append(ports, set.ports...)
	}
	slices.Sort(ports)
	return slices.Compact(ports)
}

// watch re-applies n's filter whenever an IPv4 default route appears or goes, from the first
// guest on, so that NAT guests follow the host to a new uplink. (hostnet's WatchUplink does
// the same for a daemon; here the re-apply takes n.mu and stops once n is closed, so that it
// never runs on a network the helper let go.)
func (s *Server) watch(n *network) {
	if len(n.sets) == 0 || n.stop != nil {
		return
	}
	n.stop = make(chan struct{})
	stop := n.stop
	updates := make(chan netlink.RouteUpdate, 16)
	opts := netlink.RouteSubscribeOptions{ErrorCallback: func(err error) {
		select {
		case <-stop:
			return // closing the subscription ends its receive with an error: not news
		default:
		}
		s.log.Warn("watch routes for uplink changes", "bridge", n.cfg.Bridge, "netns", n.ns, "err", err)
	}}
	if n.nsh.IsOpen() {
		h := n.nsh
		opts.Namespace = &h
	}
	if err := netlink.RouteSubscribeWithOptions(updates, n.stop, opts); err != nil {
		s.log.Warn("NAT guests will not follow a change of default route", "bridge", n.cfg.Bridge, "netns", n.ns, "err", err)
		close(n.stop)
		n.stop = nil
		return
	}
	go func() {
		for u := range updates {
			if u.Family != netlink.FAMILY_V4 || (u.Dst != nil && !(u.Dst.IP.IsUnspecified() && net.IP(u.Dst.Mask).IsUnspecified())) {
				continue
			}
			n.mu.Lock()
			if !n.closed {
				if err := n.net.ReapplyFilter(); err != nil {
					s.log.Warn("re-apply the packet filter after a default route change", "bridge", n.cfg.Bridge, "netns", n.ns, "err", err)
				} else {
					s.log.Info("re-applied the packet filter after a default route change", "bridge", n.cfg.Bridge, "netns", n.ns)
				}
			}
			n.mu.Unlock()
			if f := s.reapplied; f != nil {
				f()
			}
		}
	}()
}

// listen opens a bound socket in the namespace and returns it as a file.
func (n *network) listen(proto, addr string) (*os.File, error) {
	if proto == "udp" {
		pc, err := n.net.ListenPacket("udp", addr)
		if err != nil {
			return nil, err
		}
		defer pc.Close()
		return pc.(*net.UDPConn).File()
	}
	l, err := n.net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	return l.(*net.TCPListener).File()
}

// socket makes an unconnected socket in the namespace.
func (n *network) socket(proto string) (*os.File, error) {
	family, typ := unix.AF_INET, unix.SOCK_STREAM
	if proto == "tcp6" || proto == "udp6" {
		family = unix.AF_INET6
	}
	if proto == "udp4" || proto == "udp6" {
		typ = unix.SOCK_DGRAM
	}
	var f *os.File
	err := n.net.Do(func() error {
		fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket %s: %w", proto, err)
		}
		f = os.NewFile(uintptr(fd), proto)
		return nil
	})
	return f, err
}
