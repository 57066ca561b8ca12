package roothelper

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/fcjail"
	"github.com/banger-dev/banger/internal/hostnet"
	"github.com/banger-dev/banger/internal/peercred"
	"golang.org/x/sys/unix"
)

// dialTimeout bounds Client.Dial's connect, as hostnet's Dial does.
const dialTimeout = 5 * time.Second

// Client is the host side of guest networking through the root helper: it implements
// vmnet's Host for an unprivileged daemon. Each call is one request on a new connection; the
// client holds no connection between calls and is safe for concurrent use.
type Client struct {
	socket    string
	netw      Network
	openPorts []uint16     // sent with every set_guests
	addrs     *hostnet.Net // computes the network's addresses; opens nothing
}

// Dial checks netw, asks the helper at socket (which must be served by root) whether it serves
// netw, and returns a client for it. openPorts are the host ports (1024 or more) the caller's
// guests may reach besides DNS (config host_ports_open_to_guests); the helper opens them with
// the caller's guest set.
func Dial(socket string, netw Network, openPorts []uint16) (*Client, error) {
	p, err := netip.ParsePrefix(netw.CIDR)
	if err != nil {
		return nil, failure.New(failure.Invalid, "bridge_cidr %q: %v", netw.CIDR, err)
	}
	if netw.Namespace != "" && !nsNameRE.MatchString(netw.Namespace) {
		return nil, failure.New(failure.Invalid, "network namespace %q: the root helper takes a name under /run/netns, not a path", netw.Namespace)
	}
	addrs, err := hostnet.Open(hostnet.Config{Bridge: netw.Bridge, CIDR: p})
	if err != nil {
		return nil, failure.Wrap(failure.Invalid, err)
	}
	netw.CIDR = p.String()
	c := &Client{socket: socket, netw: netw, openPorts: slices.Clone(openPorts), addrs: addrs}
	resp, _, err := c.call(Request{Op: OpHello})
	if err != nil {
		return nil, err
	}
	if resp.Protocol != ProtocolVersion {
		return nil, fmt.Errorf("banger's root helper at %s speaks protocol %d, this banger %d: install the helper of this banger build (make install) and restart it", socket, resp.Protocol, ProtocolVersion)
	}
	return c, nil
}

// call sends one request about the client's network and returns the response with its files
// (closed by the caller), or the helper's error with its kind.
func (c *Client) call(req Request) (Response, []*os.File, error) {
	return c.callWith(req, nil, clientTimeout)
}

// callWith is call sending the descriptors of send with the request (SCM_RIGHTS), the whole
// exchange bounded by timeout.
func (c *Client) callWith(req Request, send []*os.File, timeout time.Duration) (Response, []*os.File, error) {
	req.Network = c.netw
	b, err := json.Marshal(req)
	if err != nil {
		return Response{}, nil, err
	}
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: c.socket, Net: "unix"})
	if err != nil {
		return Response{}, nil, fmt.Errorf("banger's root helper at %s: %w (is banger-helper.socket running? `systemctl status banger-helper.socket`)", c.socket, err)
	}
	defer conn.Close()
	if err := peercred.Check(conn, "the process serving "+c.socket, "banger's root helper runs as root", 0); err != nil {
		return Response{}, nil, err
	}
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return Response{}, nil, err
	}
	var oob []byte
	if len(send) > 0 {
		fds := make([]int, len(send))
		for i, f := range send {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	n, _, err := conn.WriteMsgUnix(b, oob, nil)
	if err == nil && n < len(b) {
		_, err = conn.Write(b[n:])
	}
	if err != nil {
		return Response{}, nil, fmt.Errorf("send %s to banger's root helper: %w", req.Op, err)
	}
	if err := conn.CloseWrite(); err != nil {
		return Response{}, nil, fmt.Errorf("send %s to banger's root helper: %w", req.Op, err)
	}
	resp, files, err := readResponse(conn)
	if err != nil {
		return Response{}, nil, fmt.Errorf("%s: %w", req.Op, err)
	}
	if resp.Error != nil || !resp.OK {
		closeAll(files)
		if resp.Error == nil {
			resp.Error = &WireError{Kind: KindInternal, Message: "failed without saying why"}
		}
		return Response{}, nil, &remoteError{op: req.Op, kind: resp.Error.Kind, msg: resp.Error.Message}
	}
	return resp, files, nil
}

// callFile is call for an op answered with one descriptor.
func (c *Client) callFile(req Request) (*os.File, error) {
	_, files, err := c.call(req)
	if err != nil {
		return nil, err
	}
	if len(files) != 1 {
		closeAll(files)
		return nil, fmt.Errorf("%s: the helper sent %d descriptors, not 1", req.Op, len(files))
	}
	return files[0], nil
}

func (c *Client) do(op string) error {
	_, _, err := c.call(Request{Op: op})
	return err
}

// Bridge is the bridge's name.
func (c *Client) Bridge() string { return c.netw.Bridge }

// CIDR is the guests' subnet.
func (c *Client) CIDR() netip.Prefix { return c.addrs.CIDR() }

// HostIP is the host's address on the bridge.
func (c *Client) HostIP() netip.Addr { return c.addrs.HostIP() }

// GuestIPs lists the addresses guests can get, in order.
func (c *Client) GuestIPs() []netip.Addr { return c.addrs.GuestIPs() }

// NetNSPath is the namespace's path, or "" for the host's.
func (c *Client) NetNSPath() string {
	if c.netw.Namespace == "" {
		return ""
	}
	return filepath.Join("/run/netns", c.netw.Namespace)
}

// EnsureBridge makes the bridge with its address, up.
func (c *Client) EnsureBridge() error { return c.do(OpEnsureBridge) }

// AddTap makes VM vmID's tap on the bridge, owned by the caller (a stale one of the caller's
// is replaced), and returns an open queue of it for the VMM; the caller closes it.
func (c *Client) AddTap(vmID string) (*os.File, error) {
	tap := hostnet.TapName(vmID)
	f, err := c.callFile(Request{Op: OpAddTap, Tap: tap})
	if err != nil {
		return nil, err
	}
	if got, err := TapQueueName(f); err != nil || got != tap {
		f.Close()
		return nil, fmt.Errorf("add_tap: the helper sent a descriptor that is not a queue of %s (%q, %v)", tap, got, err)
	}
	return f, nil
}

// DeleteTap removes VM vmID's tap; a missing one is fine.
func (c *Client) DeleteTap(vmID string) error {
	_, _, err := c.call(Request{Op: OpDeleteTap, Tap: hostnet.TapName(vmID)})
	return err
}

// Taps lists the banger taps the caller owns.
func (c *Client) Taps() ([]string, error) {
	resp, _, err := c.call(Request{Op: OpListTaps})
	return resp.Taps, err
}

// SetGuests makes the caller's guest set exactly guests; the helper's filter admits the
// union of every caller's set.
func (c *Client) SetGuests(guests []hostnet.Guest) error {
	wire := make([]Guest, len(guests))
	for i, g := range guests {
		wire[i] = Guest{Tap: g.Tap, MAC: g.MAC.String(), IP: g.IP.String(), NAT: g.NAT}
	}
	req := Request{Op: OpSetGuests, Guests: wire}
	if len(guests) > 0 && len(c.openPorts) > 0 {
		req.OpenPorts = c.openPorts
	}
	_, _, err := c.call(req)
	return err
}

// RouteDomain routes the vm domain to the bridge's DNS through systemd-resolved.
func (c *Client) RouteDomain() error { return c.do(OpRouteDomain) }

// UnrouteDomain undoes RouteDomain.
func (c *Client) UnrouteDomain() error { return c.do(OpUnrouteDomain) }

// RemoveBridge removes the bridge when nothing is attached to it.
func (c *Client) RemoveBridge() error { return c.do(OpRemoveBridge) }

// viaHelper reports whether a listening socket on addr needs the helper: every socket in a
// namespace, and a privileged port (DNS on the bridge) in the host's.
func (c *Client) viaHelper(addr string) bool {
	if c.netw.Namespace != "" {
		return true
	}
	ap, err := netip.ParseAddrPort(addr)
	return err == nil && ap.Port() != 0 && ap.Port() < 1024
}

// ListenPacket opens a UDP socket bound to addr in the network's namespace.
func (c *Client) ListenPacket(network, addr string) (net.PacketConn, error) {
	if !c.viaHelper(addr) {
		return net.ListenPacket(network, addr)
	}
	if network != "udp" && network != "udp4" {
		return nil, failure.New(failure.Invalid, "listen on %s %s through the root helper: only udp", network, addr)
	}
	f, err := c.callFile(Request{Op: OpListen, Proto: "udp", Addr: addr})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FilePacketConn(f)
}

// Listen opens a TCP listener on addr in the network's namespace.
func (c *Client) Listen(network, addr string) (net.Listener, error) {
	if !c.viaHelper(addr) {
		return net.Listen(network, addr)
	}
	if network != "tcp" && network != "tcp4" {
		return nil, failure.New(failure.Invalid, "listen on %s %s through the root helper: only tcp", network, addr)
	}
	f, err := c.callFile(Request{Op: OpListen, Proto: "tcp", Addr: addr})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FileListener(f)
}

// Dial connects to addr, an ip:port, from the network's namespace: through a socket the
// helper makes there, connected here.
func (c *Client) Dial(network, addr string) (net.Conn, error) {
	if c.netw.Namespace == "" {
		return net.DialTimeout(network, addr, dialTimeout)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, failure.New(failure.Invalid, "dial %s in namespace %s: want ip:port", addr, c.netw.Namespace)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	var proto string
	switch network {
	case "tcp", "tcp4", "tcp6":
		proto = "tcp"
	case "udp", "udp4", "udp6":
		proto = "udp"
	default:
		return nil, failure.New(failure.Invalid, "dial %s %s in namespace %s: only tcp and udp", network, addr, c.netw.Namespace)
	}
	var sa unix.Sockaddr
	if ap.Addr().Is4() {
		proto += "4"
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	} else {
		proto += "6"
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	f, err := c.callFile(Request{Op: OpSocket, Proto: proto})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		// The socket is blocking: SO_SNDTIMEO bounds its connect.
		tv := unix.NsecToTimeval(dialTimeout.Nanoseconds())
		if cerr = unix.SetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); cerr == nil {
			cerr = unix.Connect(int(fd), sa)
		}
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, fmt.Errorf("dial %s %s in namespace %s: %w", network, addr, c.netw.Namespace, cerr)
	}
	return net.FileConn(f)
}

// WatchUplink does nothing: the helper re-applies the filter itself when the uplinks change.
func (c *Client) WatchUplink(done <-chan struct{}, report func(error)) error { return nil }

// Close releases nothing: the client holds no connection.
func (c *Client) Close() error { return c.addrs.Close() }

// JailsReady says whether the helper starts Firecracker jails (its [jails] are configured);
// the error says what to do when it does not.
func (c *Client) JailsReady() error {
	resp, _, err := c.call(Request{Op: OpHello})
	if err != nil {
		return err
	}
	if !resp.Jails {
		return fmt.Errorf("banger's root helper at %s starts no Firecracker jails: name the jailer and firecracker binaries in [jails] of its configuration (%s) and restart it", c.socket, DefaultConfigPath)
	}
	return nil
}

// jailStartTimeout bounds jail_start, which may copy inputs into the jail.
const jailStartTimeout = 2 * time.Minute

// StartJail asks the helper to make the caller's jail spec.ID, place spec's files in it and
// start Firecracker there (see fcjail.Spec). The caller owns the returned pidfd.
func (c *Client) StartJail(spec fcjail.Spec) (fcjail.Started, error) {
	req := Request{Op: OpJailStart, Jail: spec.ID, Tap: spec.Tap}
	var send []*os.File
	add := func(name string, f *os.File, writable bool) {
		if f != nil {
			req.Files = append(req.Files, JailFile{Name: name, Writable: writable})
			send = append(send, f)
		}
	}
	add(fcjail.Kernel, spec.Kernel, false)
	add(fcjail.Initrd, spec.Initrd, false)
	for i, d := range spec.Disks {
		add(fcjail.DiskName(i), d.File, d.Writable)
	}
	add(fcjail.Log, spec.Log, true)
	add(fcjail.Metrics, spec.Metrics, true)
	add(consoleFile, spec.Console, false)
	resp, files, err := c.callWith(req, send, jailStartTimeout)
	if err != nil {
		return fcjail.Started{}, err
	}
	if len(files) != 1 || resp.Jail == nil {
		closeAll(files)
		return fcjail.Started{}, fmt.Errorf("jail_start: the helper answered without the process (%d descriptors)", len(files))
	}
	j := resp.Jail
	return fcjail.Started{UID: j.UID, GID: j.GID, PID: j.PID, StartTime: j.StartTime, Pidfd: files[0]}, nil
}

// DialJail connects to socket ("api" or "vsock") of the caller's jail id. A socket not
// there or not served (yet) is an error that errors.Is matches with os.ErrNotExist.
func (c *Client) DialJail(id, socket string) (net.Conn, error) {
	f, err := c.callFile(Request{Op: OpJailDial, Jail: id, Socket: socket})
	if errors.Is(err, failure.NotFound) {
		return nil, fmt.Errorf("%w (%w)", err, os.ErrNotExist)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FileConn(f)
}

// KillJail sends SIGKILL to the Firecracker of the caller's jail id, if it runs.
func (c *Client) KillJail(id string) error {
	_, _, err := c.call(Request{Op: OpJailKill, Jail: id})
	return err
}

// RemoveJail kills the Firecracker of the caller's jail id if it runs, gives the caller's
// files and tap back and removes the jail; a missing jail is fine.
func (c *Client) RemoveJail(id string) error {
	_, _, err := c.call(Request{Op: OpJailRemove, Jail: id})
	return err
}

// JailIDs lists the ids of the caller's jails.
func (c *Client) JailIDs() ([]string, error) {
	list, err := c.Jails()
	ids := make([]string, len(list))
	for i, j := range list {
		ids[i] = j.ID
	}
	return ids, err
}

// Jails lists the caller's jails.
func (c *Client) Jails() ([]JailInfo, error) {
	resp, _, err := c.call(Request{Op: OpJailList})
	return resp.JailList, err
}

// Hello asks the helper for its build and the caller's uid as it sees it (for doctor).
func (c *Client) Hello() (version string, uid int, err error) {
	resp, _, err := c.call(Request{Op: OpHello})
	if err != nil {
		return "", -1, err
	}
	if resp.UID == nil {
		return resp.Version, -1, nil
	}
	return resp.Version, *resp.UID, nil
}

// String names the client for logs.
func (c *Client) String() string {
	return "banger-helper " + c.socket + " bridge " + c.netw.Bridge + " netns " + strconv.Quote(c.netw.Namespace)
}
