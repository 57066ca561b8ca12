package guestagent

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netns"
)

func TestParseNetConfig(t *testing.T) {
	c, ok, err := ParseNetConfig("console=ttyS0 banger.ip=172.16.0.5/24 banger.gw=172.16.0.1 banger.dns=172.16.0.1 banger.mac=02:AA:bb:cc:dd:ee systemd.hostname=dev")
	if err != nil || !ok {
		t.Fatalf("ParseNetConfig: %v %v", ok, err)
	}
	if c.Addr.String() != "172.16.0.5/24" || c.Gateway.String() != "172.16.0.1" || c.DNS.String() != "172.16.0.1" || c.MAC != "02:aa:bb:cc:dd:ee" || c.Hostname != "dev" {
		t.Errorf("got %+v", c)
	}
	if _, ok, err := ParseNetConfig("console=ttyS0 quiet"); ok || err != nil {
		t.Errorf("no banger.ip: ok=%v err=%v, want not ok and no error (a VM without network)", ok, err)
	}
	if _, _, err := ParseNetConfig("banger.ip=nonsense"); err == nil {
		t.Error("a bad address must be an error")
	}
}

func TestWriteNameFilesReplacesSymlinks(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A resolved-style stub link must be replaced, not followed.
	outside := filepath.Join(t.TempDir(), "stub")
	_ = os.WriteFile(outside, []byte("untouched"), 0o644)
	_ = os.Symlink(outside, filepath.Join(root, "etc/resolv.conf"))
	c := NetConfig{Addr: netip.MustParsePrefix("172.16.0.5/24"), DNS: netip.MustParseAddr("172.16.0.1"), Hostname: "dev"}
	if err := writeNameFiles(c, root); err != nil {
		t.Fatal(err)
	}
	resolv, _ := os.ReadFile(filepath.Join(root, "etc/resolv.conf"))
	hosts, _ := os.ReadFile(filepath.Join(root, "etc/hosts"))
	if !strings.Contains(string(resolv), "nameserver 172.16.0.1\n") || !strings.Contains(string(resolv), "search vm") {
		t.Errorf("resolv.conf:\n%s", resolv)
	}
	if !strings.Contains(string(hosts), "172.16.0.5\tdev.vm dev\n") || !strings.Contains(string(hosts), "127.0.0.1\tlocalhost") {
		t.Errorf("hosts:\n%s", hosts)
	}
	if b, _ := os.ReadFile(outside); string(b) != "untouched" {
		t.Errorf("the symlink's target was written through: %q", b)
	}
}

// TestConfigureNetworkInANamespace configures a veth end found by its MAC, inside a network
// namespace made for the test, as the agent configures virtio-net in a guest.
func TestConfigureNetworkInANamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	ns := fmt.Sprintf("banger-ga-%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", ns)
	defer exec.Command("ip", "netns", "del", ns).Run()
	run("-n", ns, "link", "add", "gx0", "address", "02:00:00:00:00:42", "type", "veth", "peer", "name", "gx1")

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, _ := netns.Get()
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		t.Fatal(err)
	}
	c := NetConfig{Addr: netip.MustParsePrefix("10.9.0.5/24"), Gateway: netip.MustParseAddr("10.9.0.1"), MAC: "02:00:00:00:00:42", Hostname: "dev"}
	err = ConfigureNetwork(c, t.TempDir())
	_ = netns.Set(orig)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("ip", "-n", ns, "-o", "addr", "show", "gx0").CombinedOutput()
	if !strings.Contains(string(out), "10.9.0.5/24") {
		t.Errorf("addresses: %s", out)
	}
	out, _ = exec.Command("ip", "-n", ns, "route").CombinedOutput()
	if !strings.Contains(string(out), "default via 10.9.0.1 dev gx0") {
		t.Errorf("routes: %s", out)
	}
}

// replaceFile leaves a regular file that holds the content already as it is (same inode, as a
// clone's unchanged resolv.conf), and replaces anything else: other content, or a symlink
// (a resolved stub link) even to the same content.
func TestReplaceFileKeepsWhatHoldsTheContent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "etc/resolv.conf")
	inode := func() uint64 {
		t.Helper()
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	if err := replaceFile(path, "nameserver 10.0.0.1\n"); err != nil {
		t.Fatal(err)
	}
	first := inode()
	if err := replaceFile(path, "nameserver 10.0.0.1\n"); err != nil {
		t.Fatal(err)
	}
	if inode() != first {
		t.Error("a file that held the content already was replaced")
	}
	if err := replaceFile(path, "nameserver 10.0.0.2\n"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "nameserver 10.0.0.2\n" || inode() == first {
		t.Errorf("new content: %q (inode kept: %v)", b, inode() == first)
	}
	// A symlink to a file with the very content is replaced by a regular file.
	stub := filepath.Join(dir, "stub")
	if err := os.WriteFile(stub, []byte("nameserver 10.0.0.3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(stub, path); err != nil {
		t.Fatal(err)
	}
	if err := replaceFile(path, "nameserver 10.0.0.3\n"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(path); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("the symlink was kept: %v %v", fi.Mode(), err)
	}
}
