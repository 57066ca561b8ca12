package vmmtest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/hostnet"
	"github.com/banger-dev/banger/internal/vmm"
)

// nicByFile checks vmm.NIC.File for a driver whose VMM takes its tap by file descriptor
// (Harness.NICByFile): with a real tap in a network namespace made for the test (root only),
// and Config.NetNS left empty — a VMM that opened the tap by name would not find it — Start
// and Restore run machines that hold the tap's queue (the tap has carrier once the caller
// closed its copy) and leave the caller's file open; Kill, and a Start that fails, leave no
// process holding it (the tap loses its carrier).
func nicByFile(t *testing.T, newHarness func(t *testing.T) Harness) {
	h := newHarness(t)
	if !h.NICByFile {
		t.Skipf("the %s driver opens its tap by name in Config.NetNS (Harness.NICByFile is false)", h.Driver.Name())
	}
	hn := tapHost(t)
	withTap := func(cfg vmm.Config) (vmm.Config, *os.File) {
		t.Helper()
		q, err := hn.AddTap(cfg.ID)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Close() })
		cfg.NIC = &vmm.NIC{Tap: hostnet.TapName(cfg.ID), MAC: hostnet.MAC(cfg.ID).String(), File: q}
		cfg.NetNS = ""
		return cfg, q
	}
	handedOver := func(q *os.File, what string) {
		t.Helper()
		if _, err := q.Stat(); err != nil {
			t.Errorf("the caller's tap queue after %s: %v; the driver must leave it to the caller", what, err)
		}
		q.Close()
	}

	cfg, q := withTap(h.Config(t))
	m := mustStart(t, h.Driver, cfg)
	handedOver(q, "Start")
	if !carrier(t, hn, cfg.NIC.Tap) {
		t.Errorf("tap %s has no carrier after Start: the VMM does not hold the queue it was handed", cfg.NIC.Tap)
	}

	if s, ok := m.(vmm.Snapshotter); ok {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		snap, err := s.Snapshot(ctx, t.TempDir())
		if err != nil {
			t.Fatalf("Snapshot of a machine with a NIC: %v", err)
		}
		ccfg := h.Config(t)
		ccfg.ID += "c" // a tap of its own
		ccfg, cq := withTap(ccfg)
		c, err := h.Driver.(vmm.Restorer).Restore(ctx, ccfg, snap)
		if err != nil {
			t.Fatalf("Restore with a NIC by file: %v", err)
		}
		handedOver(cq, "Restore")
		if !carrier(t, hn, ccfg.NIC.Tap) {
			t.Errorf("tap %s has no carrier after Restore: the restored VMM does not hold the queue it was handed", ccfg.NIC.Tap)
		}
		kill(t, c, "Kill of the restored machine")
		if carrier(t, hn, ccfg.NIC.Tap) {
			t.Errorf("tap %s has carrier after Kill of the restored machine: a process still holds its queue", ccfg.NIC.Tap)
		}
	}

	kill(t, m, "Kill")
	if carrier(t, hn, cfg.NIC.Tap) {
		t.Errorf("tap %s has carrier after Kill: a process still holds its queue", cfg.NIC.Tap)
	}

	fcfg := h.FailingConfig(t)
	fcfg.ID += "f"
	fcfg, fq := withTap(fcfg)
	if fm, err := start(t, h.Driver, fcfg); err == nil {
		_ = fm.Kill()
		t.Fatal("Start of the failing config succeeded")
	}
	handedOver(fq, "a failed Start")
	if carrier(t, hn, fcfg.NIC.Tap) {
		t.Errorf("tap %s has carrier after a failed Start: a process it started still holds the queue", fcfg.NIC.Tap)
	}
}

// tapHost is guest networking in a network namespace made for the test, removed afterwards.
func tapHost(t *testing.T) *hostnet.Net {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace and taps")
	}
	ns := fmt.Sprintf("banger-vmmt-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	hn, err := hostnet.Open(hostnet.Config{Bridge: "bgvmmt0", CIDR: netip.MustParsePrefix("172.31.2.0/29"), NetNS: ns, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hn.Close() })
	return hn
}

// carrier reports whether tap has carrier: whether a process holds a queue of it.
func carrier(t *testing.T, hn *hostnet.Net, tap string) bool {
	t.Helper()
	var up bool
	err := hn.Do(func() error {
		l, err := netlink.LinkByName(tap)
		if err != nil {
			return err
		}
		up = l.Attrs().RawFlags&unix.IFF_LOWER_UP != 0
		return nil
	})
	if err != nil {
		t.Fatalf("tap %s: %v", tap, err)
	}
	return up
}
