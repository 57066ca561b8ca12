package hostnet

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EnsureBridge creates the bridge with the host address and brings it up; it is idempotent
// and repairs a bridge that lost its address or went down.
func (n *Net) EnsureBridge() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.Do(n.ensureBridge)
}

func (n *Net) ensureBridge() error {
	link, err := netlink.LinkByName(n.cfg.Bridge)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.cfg.Bridge}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create bridge %s: %w", n.cfg.Bridge, err)
		}
		if link, err = netlink.LinkByName(n.cfg.Bridge); err != nil {
			return fmt.Errorf("bridge %s: %w", n.cfg.Bridge, err)
		}
	case err != nil:
		return fmt.Errorf("look up bridge %s: %w", n.cfg.Bridge, err)
	default:
		if link.Type() != "bridge" {
			return fmt.Errorf("%s exists but is a %s, not a bridge; pick another bridge_name in config.toml", n.cfg.Bridge, link.Type())
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: n.HostIP().AsSlice(), Mask: net.CIDRMask(n.cfg.CIDR.Bits(), 32)}}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("address %s on bridge %s: %w", addr.IPNet, n.cfg.Bridge, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring bridge %s up: %w", n.cfg.Bridge, err)
	}
	return nil
}

// tunQueueFlags are the flags of the tap queue AddTap returns: the tap as it was created
// (an Ethernet device, no packet information header, virtio-net headers), the flags QEMU
// expects of a tap it is handed by file descriptor.
const tunQueueFlags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR

// AddTap creates the VM's tap device on the bridge (replacing a stale one of the same name,
// and making the bridge when it is missing), brings it up, and returns an open queue of it:
// /dev/net/tun opened inside the namespace and attached to the tap (IFF_TAP|IFF_NO_PI|
// IFF_VNET_HDR), close-on-exec. The caller hands the queue to the VMM and closes its own copy;
// while no process holds a queue the tap has no carrier. On failure nothing of the tap is
// left.
func (n *Net) AddTap(vmID string) (*os.File, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	name := TapName(vmID)
	var queue *os.File
	err := n.Do(func() error {
		if err := n.ensureBridge(); err != nil {
			return err
		}
		if old, err := netlink.LinkByName(name); err == nil {
			_ = netlink.LinkDel(old)
		}
		br, err := netlink.LinkByName(n.cfg.Bridge)
		if err != nil {
			return fmt.Errorf("bridge %s: %w", n.cfg.Bridge, err)
		}
		// The tap is made on the descriptor that becomes its queue: made by one descriptor
		// and opened by another, it could be found with its queue taken (EBUSY) by a VMM
		// started meanwhile, which holds the maker's descriptor until it executes.
		if queue, err = createTap(name); err != nil {
			return err
		}
		if err := attachTap(name, br); err != nil {
			queue.Close()
			queue = nil
			if l, lerr := netlink.LinkByName(name); lerr == nil {
				_ = netlink.LinkDel(l)
			}
			return err
		}
		return nil
	})
	if err != nil && queue != nil {
		// The tap was made but the thread could not leave the namespace: undo it from a
		// thread that can.
		queue.Close()
		_ = n.Do(func() error {
			if l, lerr := netlink.LinkByName(name); lerr == nil {
				return netlink.LinkDel(l)
			}
			return nil
		})
	}
	if err != nil {
		return nil, err
	}
	return queue, nil
}

// attachTap puts the tap name on the bridge br and brings it up.
func attachTap(name string, br netlink.Link) error {
	tap, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("look up tap %s: %w", name, err)
	}
	if err := netlink.LinkSetMaster(tap, br); err != nil {
		return fmt.Errorf("attach tap %s to %s: %w", name, br.Attrs().Name, err)
	}
	if err := netlink.LinkSetUp(tap); err != nil {
		return fmt.Errorf("bring tap %s up: %w", name, err)
	}
	return nil
}

// createTap makes the persistent tap name in the calling thread's network namespace and
// returns its queue: the descriptor that made it.
func createTap(name string) (*os.File, error) {
	q, err := openTapQueue(name)
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlSetInt(int(q.Fd()), unix.TUNSETPERSIST, 1); err != nil {
		q.Close() // the tap goes with its only queue
		return nil, fmt.Errorf("make tap %s persistent: %w", name, err)
	}
	return q, nil
}

// openTapQueue opens /dev/net/tun and attaches it to the tap name, made if there is none, in
// the calling thread's network namespace (the tun device looks the name up there).
func openTapQueue(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open a queue of tap %s: /dev/net/tun: %w", name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open a queue of tap %s: %w", name, err)
	}
	ifr.SetUint16(tunQueueFlags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open a queue of tap %s: TUNSETIFF: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

// DeleteTap removes the VM's tap device; a missing one is fine.
func (n *Net) DeleteTap(vmID string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	name := TapName(vmID)
	return n.Do(func() error {
		link, err := netlink.LinkByName(name)
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("look up tap %s: %w", name, err)
		}
		if err := netlink.LinkDel(link); err != nil {
			return fmt.Errorf("delete tap %s: %w", name, err)
		}
		return nil
	})
}

// Taps lists the banger tap devices that exist (for reconciling leftovers).
func (n *Net) Taps() ([]string, error) {
	var out []string
	err := n.Do(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if l.Type() == "tuntap" && len(l.Attrs().Name) == 14 && l.Attrs().Name[:2] == "bg" {
				out = append(out, l.Attrs().Name)
			}
		}
		return nil
	})
	return out, err
}

// RemoveBridge deletes the bridge when no device is attached to it any more.
func (n *Net) RemoveBridge() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.Do(func() error {
		br, err := netlink.LinkByName(n.cfg.Bridge)
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		if err != nil {
			return err
		}
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if l.Attrs().MasterIndex == br.Attrs().Index {
				return nil // still in use
			}
		}
		return netlink.LinkDel(br)
	})
}
