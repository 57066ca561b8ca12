package vmnet

import (
	"net"
	"net/netip"
	"os"

	"github.com/banger-dev/banger/internal/hostnet"
)

// Host is the host side of guest networking, which needs privilege: *hostnet.Net does it in-process (root), roothelper.Client through the root helper.
//
// Everything a Host changes lives in one network namespace, the network's (NetNSPath): the
// bridge, the taps, the packet filter, and the sockets of ListenPacket, Listen and Dial. The
// fixed facts (Bridge, CIDR, HostIP, GuestIPs, NetNSPath) do not change while the Host is
// open and cost nothing to ask. Every change returns once it is in place on the host. The
// changes that set a state (EnsureBridge, DeleteTap, SetGuests, RouteDomain, UnrouteDomain,
// RemoveBridge) are idempotent: asking again for the state that is already there succeeds and
// changes nothing; AddTap asked again replaces the tap (a new device, a new queue). Errors say
// what failed on which device; a Host that works through another process (the root helper)
// classifies refusals with package failure. Its methods are safe for concurrent use.
type Host interface {
	// Bridge is the name of the bridge every tap joins.
	Bridge() string
	// CIDR is the guests' subnet, on the bridge.
	CIDR() netip.Prefix
	// HostIP is the host's address on the bridge (the subnet's first): the guests' gateway
	// and DNS server.
	HostIP() netip.Addr
	// GuestIPs are the addresses guests can get, in ascending order (the subnet without its
	// network, host and broadcast addresses).
	GuestIPs() []netip.Addr
	// NetNSPath is the path of the network namespace everything lives in (such as
	// /run/netns/x), or "" for the host's own.
	NetNSPath() string

	// EnsureBridge makes the bridge with the host's address and brings it up; on a bridge
	// that exists it repairs a lost address or a link that went down. A device of the
	// bridge's name that is no bridge is an error.
	EnsureBridge() error
	// AddTap creates the tap of VM vmID (hostnet.TapName) as a port of the bridge, up,
	// making the bridge first when it is missing; a tap of that name that exists (a stale
	// one) is replaced. It returns an open queue of the tap (/dev/net/tun attached with
	// IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, close-on-exec) for the caller to hand to its VMM and then
	// close: the caller owns it. The tap outlives the queue (it is persistent) until DeleteTap.
	// On failure no tap of vmID is left and no file is returned.
	AddTap(vmID string) (*os.File, error) // creates the tap (replacing a stale one) on the bridge, returns an open queue (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) the caller hands to the VMM and closes
	// DeleteTap removes the tap of VM vmID; a tap that does not exist is not an error.
	DeleteTap(vmID string) error
	// Taps lists the names of banger's taps that exist (for removing leftovers: a tap's
	// name is "bg" and the first 12 characters of its VM's id).
	Taps() ([]string, error)
	// SetGuests makes the packet filter admit exactly guests, replacing the previous list in
	// one atomic change (see hostnet.Net.SetGuests for the rules); an empty list removes
	// banger's tables. A list the filter cannot express (one address or tap twice, an address
	// outside CIDR) is refused and the filter stays as it was.
	SetGuests(guests []hostnet.Guest) error
	// RouteDomain sends the host's queries for the vm domain to the DNS server on the bridge
	// through systemd-resolved; where resolved does not manage DNS (or the network has a
	// namespace of its own) it does nothing. It is asked again whenever the bridge is made,
	// since resolved forgets a link's settings with the link.
	RouteDomain() error
	// UnrouteDomain undoes RouteDomain; without resolved it does nothing.
	UnrouteDomain() error
	// RemoveBridge deletes the bridge once no device is attached to it; a missing bridge, or
	// one that still has ports, is left as it is without error.
	RemoveBridge() error

	// ListenPacket, Listen and Dial are net.ListenPacket, net.Listen and net.Dial (bounded to a
	// few seconds) from inside the namespace, so that package dnsserver (a
	// dnsserver.Listener, and its upstream dialer) serves guests on the bridge's address and
	// reaches upstreams from where guests' traffic leaves. The sockets belong to the caller.
	ListenPacket(network, addr string) (net.PacketConn, error) // sockets in the network's namespace (dnsserver.Listener)
	Listen(network, addr string) (net.Listener, error)
	Dial(network, addr string) (net.Conn, error)

	// WatchUplink follows the namespace's IPv4 default route: when it appears, goes or
	// changes, the packet filter is applied again with the new uplink, so that NAT guests
	// leave through it. It returns once watching began (an error if it cannot), and watches
	// until done is closed; errors of a re-apply go to report (which may be nil).
	WatchUplink(done <-chan struct{}, report func(error)) error
	// Close releases what the Host holds (a namespace handle, a connection to the helper);
	// the host's network state stays. Nothing may be asked of a closed Host.
	Close() error
}

// *hostnet.Net is the Host of a daemon that runs as root.
var _ Host = (*hostnet.Net)(nil)
