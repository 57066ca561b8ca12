package guestagent

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/agent"
)

// fakeSystem records what a renewal asks of the kernel instead of doing it, so that the test
// machine's clock, RNG, host name and network stay as they are.
type fakeSystem struct {
	root  string
	mu    sync.Mutex
	calls []string
	fail  string // the call that fails
}

func (f *fakeSystem) call(c string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
	if strings.HasPrefix(c, f.fail+" ") {
		return errors.New("refused by the test")
	}
	return nil
}

func (f *fakeSystem) SetClock(t time.Time) error {
	return f.call("clock " + t.UTC().Format(time.RFC3339Nano))
}
func (f *fakeSystem) AddEntropy(b []byte) error     { return f.call(fmt.Sprintf("entropy %x", b)) }
func (f *fakeSystem) SetHostname(name string) error { return f.call("hostname " + name) }
func (f *fakeSystem) RenewLink(n agent.ParsedNetwork) error {
	return f.call(fmt.Sprintf("link %s->%s %s via %s", n.OldMAC, n.MAC, n.Address, n.Gateway))
}

// ReloadSSH records the host key sshd would read at that moment.
func (f *fakeSystem) ReloadSSH() error {
	b, _ := os.ReadFile(filepath.Join(f.root, "etc/ssh/ssh_host_ed25519_key"))
	return f.call("reload-ssh " + string(b))
}

// connectRenew serves a Server whose system is fake and whose root is a temporary directory.
func connectRenew(t *testing.T) (*agent.Client, *fakeSystem, string) {
	t.Helper()
	root := t.TempDir()
	sys := &fakeSystem{root: root}
	host, guest := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{Version: "test", Log: log.New(io.Discard, "", 0), Root: root, Sys: sys}
	done := make(chan struct{})
	go func() { defer close(done); _ = s.ServeConn(ctx, guest) }()
	c, err := agent.Connect(ctx, host)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { c.Close(); cancel(); <-done })
	return c, sys, root
}

func testRenewal() agent.Renewal {
	return agent.Renewal{
		Clock:     time.Date(2027, 1, 2, 3, 4, 5, 6, time.UTC),
		Entropy:   bytes.Repeat([]byte{0xab}, agent.MinEntropy),
		Hostname:  "clone-1",
		MachineID: "0123456789abcdef0123456789abcdef",
		Network: &agent.NetworkIdentity{OldMAC: "02:00:00:00:00:01", MAC: "02:00:00:00:00:02",
			Address: "172.16.0.6/24", Gateway: "172.16.0.1", DNS: []string{"172.16.0.1", "9.9.9.9"}},
		HostKeys: []agent.File{{Path: "/etc/ssh/ssh_host_ed25519_key", Mode: 0o600, Data: []byte("new key")}},
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A renewal applies every field in the order of the contract: clock, entropy, then host name
// and machine id, network and host keys (sshd reloaded once they are written) side by side.
func TestRenewAppliesEveryFieldInOrder(t *testing.T) {
	c, sys, root := connectRenew(t)
	report, err := c.Renew(context.Background(), testRenewal())
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	// The account of the renewal goes to the host, part by part.
	for _, part := range []string{"clock ", "entropy ", "name ", "network ", "host keys "} {
		if !strings.Contains(report, part) {
			t.Errorf("renewal report %q does not say how long %q took", report, part)
		}
	}
	want := []string{
		"clock 2027-01-02T03:04:05.000000006Z",
		"entropy " + strings.Repeat("ab", agent.MinEntropy),
		"hostname clone-1",
		"link 02:00:00:00:00:01->02:00:00:00:00:02 172.16.0.6/24 via 172.16.0.1",
		"reload-ssh new key",
	}
	if len(sys.calls) > 2 {
		slices.Sort(sys.calls[2:]) // the parts after the entropy run at once
	}
	if !reflect.DeepEqual(sys.calls, want) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(sys.calls, "\n"), strings.Join(want, "\n"))
	}
	if got := readFile(t, filepath.Join(root, "etc/hostname")); got != "clone-1\n" {
		t.Errorf("/etc/hostname = %q", got)
	}
	id := filepath.Join(root, "etc/machine-id")
	if got := readFile(t, id); got != "0123456789abcdef0123456789abcdef\n" {
		t.Errorf("/etc/machine-id = %q", got)
	}
	if fi, _ := os.Stat(id); fi.Mode().Perm() != 0o444 {
		t.Errorf("/etc/machine-id mode %v, want 0444", fi.Mode())
	}
	if got := readFile(t, filepath.Join(root, "etc/hosts")); !strings.Contains(got, "172.16.0.6\tclone-1.vm clone-1\n") {
		t.Errorf("/etc/hosts:\n%s", got)
	}
	if got := readFile(t, filepath.Join(root, "etc/resolv.conf")); !strings.Contains(got, "nameserver 172.16.0.1\nnameserver 9.9.9.9\nsearch vm\n") {
		t.Errorf("/etc/resolv.conf:\n%s", got)
	}
	key := filepath.Join(root, "etc/ssh/ssh_host_ed25519_key")
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("host key: %v %v, want mode 0600", fi, err)
	}
	if m, _ := filepath.Glob(filepath.Join(root, "etc/*.banger-tmp")); len(m) > 0 {
		t.Errorf("temporary files left: %v", m)
	}
}

// A clock that agrees with the renewal's (at most clockSlack behind, clockTransit ahead) is left
// alone (setting it wakes the guest's clock-change watchers for nothing); one further off is set.
func TestRenewSetsOnlyAClockThatDisagrees(t *testing.T) {
	c, sys, _ := connectRenew(t)
	if _, err := c.Renew(context.Background(), agent.Renewal{Clock: time.Now()}); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if len(sys.calls) != 0 {
		t.Errorf("a clock in step was set: calls %q", sys.calls)
	}
	for _, off := range []time.Duration{-time.Second, time.Second} {
		sys.calls = nil
		if _, err := c.Renew(context.Background(), agent.Renewal{Clock: time.Now().Add(off)}); err != nil {
			t.Fatalf("Renew: %v", err)
		}
		if len(sys.calls) != 1 || !strings.HasPrefix(sys.calls[0], "clock ") {
			t.Errorf("a clock %s off: calls %q, want it set", off, sys.calls)
		}
	}
	host := time.Unix(100, 0)
	for d, agrees := range map[time.Duration]bool{
		-clockSlack + time.Millisecond: true, -clockSlack: false, // the guest behind
		clockTransit - time.Millisecond: true, clockTransit: false, // ahead: the request's way
		0: true, -time.Second: false, time.Second: false,
	} {
		if got := clockAgrees(host.Add(d), host); got != agrees {
			t.Errorf("clockAgrees with the guest %s from the host = %v; want %v", d, got, agrees)
		}
	}
}

// A VM resumed as itself gets the clock and entropy only: nothing else changes.
func TestRenewOnlyWhatIsSet(t *testing.T) {
	c, sys, root := connectRenew(t)
	r := agent.Renewal{Clock: time.Unix(1, 0), Entropy: make([]byte, agent.MaxEntropy)}
	if _, err := c.Renew(context.Background(), r); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if len(sys.calls) != 2 || !strings.HasPrefix(sys.calls[0], "clock ") || !strings.HasPrefix(sys.calls[1], "entropy ") {
		t.Errorf("calls: %q", sys.calls)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("files written: %v", entries)
	}
	// A machine id alone is written, into an /etc made for it.
	if _, err := c.Renew(context.Background(), agent.Renewal{MachineID: "00000000000000000000000000000001"}); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if got := readFile(t, filepath.Join(root, "etc/machine-id")); got != "00000000000000000000000000000001\n" {
		t.Errorf("/etc/machine-id = %q", got)
	}
	// Without resolvers, resolv.conf stays as it is; hosts follows the new address.
	r = testRenewal()
	r.Network.DNS = nil
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/resolv.conf"), []byte("nameserver 10.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Renew(context.Background(), r); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if got := readFile(t, filepath.Join(root, "etc/resolv.conf")); got != "nameserver 10.0.0.1\n" {
		t.Errorf("resolv.conf rewritten without resolvers: %q", got)
	}
}

// An invalid field refuses the whole renewal before anything is applied, even the fields
// before it.
func TestRenewRefusesAnInvalidRenewalWhole(t *testing.T) {
	for name, spoil := range map[string]func(r *agent.Renewal){
		"entropy":   func(r *agent.Renewal) { r.Entropy = r.Entropy[:agent.MinEntropy-1] },
		"hostname":  func(r *agent.Renewal) { r.Hostname = "evil;rm -rf" },
		"machineid": func(r *agent.Renewal) { r.MachineID = "../../etc/shadow" },
		"gateway":   func(r *agent.Renewal) { r.Network.Gateway = "10.0.0.1" },
		"mac":       func(r *agent.Renewal) { r.Network.MAC = "ff:ff:ff:ff:ff:ff" },
		"host key": func(r *agent.Renewal) {
			r.HostKeys = append(r.HostKeys, agent.File{Path: "/root/.ssh/authorized_keys", Mode: 0o600, Data: []byte("x")})
		},
	} {
		t.Run(name, func(t *testing.T) {
			c, sys, root := connectRenew(t)
			r := testRenewal()
			spoil(&r)
			if _, err := c.Renew(context.Background(), r); err == nil || !strings.Contains(err.Error(), "renewal: ") {
				t.Fatalf("Renew = %v, want a refusal", err)
			}
			if len(sys.calls) > 0 {
				t.Errorf("applied before refusing: %q", sys.calls)
			}
			if entries, _ := os.ReadDir(root); len(entries) != 0 {
				t.Errorf("files written before refusing: %v", entries)
			}
		})
	}
	c, _, _ := connectRenew(t)
	if _, err := c.Renew(context.Background(), agent.Renewal{}); err != nil {
		t.Errorf("an empty renewal: %v", err)
	}
}

// A part that fails makes the renewal fail with an error that names it; the parts beside it
// stay applied, and one that fails before the others (the clock) stops the renewal there.
func TestRenewReportsTheFailedPart(t *testing.T) {
	c, sys, root := connectRenew(t)
	sys.fail = "link"
	_, err := c.Renew(context.Background(), testRenewal())
	if err == nil || !strings.Contains(err.Error(), "network identity") || !strings.Contains(err.Error(), "refused by the test") {
		t.Fatalf("Renew = %v, want the network part's error", err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/machine-id")); err != nil {
		t.Errorf("the machine id beside the failure was not kept: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/hosts")); err == nil {
		t.Error("/etc/hosts written after the network failed")
	}
	c, sys, root = connectRenew(t)
	sys.fail = "clock"
	if _, err := c.Renew(context.Background(), testRenewal()); err == nil || !strings.Contains(err.Error(), "set the clock") {
		t.Fatalf("Renew = %v, want the clock's error", err)
	}
	if len(sys.calls) != 1 {
		t.Errorf("calls after the clock failed: %q", sys.calls)
	}
	for _, p := range []string{"etc/hostname", "etc/machine-id", "etc/ssh"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			t.Errorf("%s written after the clock failed", p)
		}
	}
}

// systemd mounts /run/machine-id over a read-only /etc's machine-id: a rename onto a mount
// point fails, so the file is written in place. A D-Bus machine id of its own follows.
func TestWriteMachineIDKeepsLinksAndDBus(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"etc", "var/lib/dbus"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dbus/machine-id"), []byte("old\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	const id = "fedcba9876543210fedcba9876543210"
	if err := writeMachineID(root, id); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"etc/machine-id", "var/lib/dbus/machine-id"} {
		if got := readFile(t, filepath.Join(root, p)); got != id+"\n" {
			t.Errorf("%s = %q", p, got)
		}
	}
}

func TestRandPoolInfo(t *testing.T) {
	b := []byte{1, 2, 3, 4, 5}
	info := randPoolInfo(b)
	raw := make([]byte, 0, 4*len(info))
	for _, w := range info {
		raw = binary.NativeEndian.AppendUint32(raw, w)
	}
	if info[0] != 40 || info[1] != 5 || !bytes.Equal(raw[8:13], b) {
		t.Errorf("rand_pool_info = %v (%x), want 40 bits, 5 bytes, then the bytes", info, raw)
	}
}

// Only an sshd whose parent is init listens; the ones serving connections are left alone.
func TestListeningSshd(t *testing.T) {
	proc := t.TempDir()
	for pid, stat := range map[string]string{
		"100": "100 (sshd) S 1 100 100 0 -1",
		"200": "200 (sshd) S 100 200 200 0 -1",   // serving a connection
		"300": "300 (not sshd) S 1 300 300 0 -1", // a name with a space
		"400": "400 (sshd)) S 1 400 400 0 -1",    // a name with a parenthesis
		"abc": "garbage",
	} {
		if err := os.MkdirAll(filepath.Join(proc, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, pid, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := listeningSshd(proc); !reflect.DeepEqual(got, []int{100}) {
		t.Errorf("listening sshd = %v, want [100]", got)
	}

	// The pid file is taken when it names a listening sshd; one that names something else
	// (a connection's sshd, another process, garbage, nothing) falls back to the scan. The
	// scan is told apart by a second listening sshd only it finds.
	if err := os.MkdirAll(filepath.Join(proc, "500"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proc, "500", "stat"), []byte("500 (sshd) S 1 500 500 0 -1"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	for pidFile, want := range map[string][]int{
		"500\n":      {500},
		"100":        {100},
		"200\n":      {100, 500}, // serving a connection
		"300\n":      {100, 500}, // not sshd
		"1\n":        {100, 500},
		"garbage":    {100, 500},
		"":           {100, 500},
		"(no file)":  {100, 500},
		"9999999999": {100, 500},
	} {
		p := filepath.Join(root, "run/sshd.pid")
		os.Remove(p)
		if pidFile != "(no file)" {
			if err := os.WriteFile(p, []byte(pidFile), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got := sshDaemons(root, proc)
		slices.Sort(got)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("pid file %q: sshd %v, want %v", pidFile, got, want)
		}
	}
}
