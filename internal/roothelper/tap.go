package roothelper

import (
	"errors"
	"fmt"
	"os"

	"github.com/banger-dev/banger/internal/failure"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tapFlags are the flags of banger's taps and of the queues handed out.
const tapFlags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR

// tapLink looks up name in the current namespace: nil when there is no such link, an error
// of kind Conflict when it is not a tap (a link banger does not own), otherwise the tap.
func tapLink(name string) (*netlink.Tuntap, error) {
	l, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", name, err)
	}
	t, ok := l.(*netlink.Tuntap)
	if !ok || t.Mode != netlink.TUNTAP_MODE_TAP {
		return nil, failure.New(failure.Conflict, "%s exists and is a %s, not a tap: the helper leaves it alone", name, l.Type())
	}
	return t, nil
}

// checkOwner refuses a tap the caller does not own. Root may touch every banger tap. A tap
// without an owner reads as owned by uid 0. A tap lent to one of the caller's Firecracker
// jails (owned by the jail's uid while it runs, see shareTap) is still the caller's.
func (n *network) checkOwner(t *netlink.Tuntap, uid int) error {
	if uid == 0 || n.owns(int(t.Owner), uid) {
		return nil
	}
	return failure.New(failure.Conflict, "tap %s belongs to uid %d, not to the caller (uid %d)", t.Name, t.Owner, uid)
}

// owns reports whether owner is uid or the uid of one of uid's jails.
func (n *network) owns(owner, uid int) bool {
	return owner == uid || (n.jailCaller != nil && n.jailCaller(owner) == uid)
}

// createTap makes a persistent tap owned by uid on the bridge with index master, up, and
// returns an open queue of it. It runs inside the namespace; on failure nothing is left.
func createTap(name string, uid int, master int) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	f := os.NewFile(uintptr(fd), "tap "+name)
	ok := false
	defer func() {
		if !ok {
			// Not persistent any more: the device goes with its last queue.
			_ = unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 0)
			f.Close()
		}
	}()
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	ifr.SetUint16(tapFlags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return nil, fmt.Errorf("create tap %s (TUNSETIFF): %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, uid); err != nil {
		return nil, fmt.Errorf("give tap %s to uid %d (TUNSETOWNER): %w", name, uid, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return nil, fmt.Errorf("make tap %s persistent: %w", name, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	if err := netlink.LinkSetMasterByIndex(link, master); err != nil {
		return nil, fmt.Errorf("attach tap %s to the bridge: %w", name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bring tap %s up: %w", name, err)
	}
	ok = true
	return f, nil
}

// TapQueueName returns the name of the tap device f is a queue of (TUNGETIFF), or an error
// when f is not a tun/tap queue.
func TapQueueName(f *os.File) (string, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return "", err
	}
	var name string
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ifr, err := unix.NewIfreq("")
		if err != nil {
			ierr = err
			return
		}
		if ierr = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr); ierr == nil {
			name = ifr.Name()
		}
	}); err != nil {
		return "", err
	}
	if ierr != nil {
		return "", fmt.Errorf("TUNGETIFF: %w", ierr)
	}
	return name, nil
}
