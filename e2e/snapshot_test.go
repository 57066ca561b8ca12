package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Snapshots end to end (issue 16): warm starts restore new VMs from the boot snapshot of their
// combination and each comes up as a machine of its own; vm fork carries running processes
// into live clones that then diverge; a rebuilt image's boot snapshot is dropped; and a daemon
// killed in the middle of any snapshot step leaves nothing behind.
//
// Each test boots its VMs with a memory size no other test uses, so that the first create of
// its combination (image version, kernel, agent, VMM, size) is the one that boots cold and
// saves the boot snapshot, whatever ran before it.

// snapInfo is one entry of `banger snapshot list --json`.
type snapInfo struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	From      string `json:"from"`
	Image     string `json:"image"`
	MemoryMiB int    `json:"memory_mib"`
}

func snapshotList(t *testing.T) []snapInfo {
	t.Helper()
	r := mustBanger(t, "snapshot", "list", "--json")
	var l []snapInfo
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
		t.Fatalf("snapshot list --json: %v: %q", err, r.stdout)
	}
	return l
}

// snapshotNames is the sorted names of the snapshots.
func snapshotNames(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, s := range snapshotList(t) {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	return names
}

// bootSnapshotOf returns the boot snapshot taken of the VM named vm, if there is one.
func bootSnapshotOf(t *testing.T, vm string) (snapInfo, bool) {
	t.Helper()
	for _, s := range snapshotList(t) {
		if s.Kind == "boot" && s.From == vm {
			return s, true
		}
	}
	return snapInfo{}, false
}

// bootSnapshotMade returns the boot snapshot that the create of the VM named vm saved (a
// create that boots cold saves it before it returns) and removes it when the test ends.
func bootSnapshotMade(t *testing.T, vm string) snapInfo {
	t.Helper()
	s, ok := bootSnapshotOf(t, vm)
	if !ok {
		t.Fatalf("no boot snapshot of %s listed after its create returned:\n%s", vm, mustBanger(t, "snapshot", "list").stdout)
	}
	t.Cleanup(func() { _, _ = banger(nil, "snapshot", "rm", s.Name) })
	return s
}

// waitUntil is waitFor with a deadline of the caller's choosing.
func waitUntil(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startKind says how a create or run brought its VM up, from the progress it printed on
// stderr: "warm" when it restored the VM from a boot snapshot, "cold" when it booted it, ""
// when it said neither.
func startKind(stderr string) string {
	switch {
	case strings.Contains(stderr, "banger: restoring snapshot boot-"):
		return "warm"
	case strings.Contains(stderr, "banger: booting; waiting for the guest agent"):
		return "cold"
	}
	return ""
}

// savedBootSnapshot says whether a create's progress says it saved its guest as a boot
// snapshot.
func savedBootSnapshot(stderr string) bool {
	return strings.Contains(stderr, "banger: saving the booted guest as a boot snapshot")
}

// readyName is the name of the VM a run made, from its "vm NAME ready in" line.
func readyName(stderr string) string {
	if m := regexp.MustCompile(`vm ([a-z0-9-]+) ready in`).FindStringSubmatch(stderr); m != nil {
		return m[1]
	}
	return ""
}

// identityScript prints, one key=value a line, what makes a guest a machine of its own: its
// name, address and MAC, its ssh host key, its machine id, bytes of its kernel's randomness,
// whether its udev has device events left to handle, and its clock (last, so that it is read
// as late as possible).
const identityScript = `set -- $(ip -o -4 addr show scope global | awk '{sub(/\/.*/, "", $4); print $2, $4; exit}')
echo "hostname=$(hostname)"
echo "ip=$2"
echo "mac=$(cat /sys/class/net/$1/address)"
k=/etc/ssh/ssh_host_ed25519_key.pub
[ -e "$k" ] || k=$(ls /etc/ssh/ssh_host_*_key.pub | head -n1)
echo "hostkey=$(sha256sum < "$k" | cut -d' ' -f1)"
echo "machineid=$(cat /etc/machine-id)"
echo "random=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
if udevadm settle --timeout=0 2>/dev/null; then echo udev=settled; else echo udev=busy; fi
echo "clock=$(date +%s.%N)"
`

// identity is what identityScript printed in one VM, with the host's clock read just before
// and just after.
type identity struct {
	vm                 string
	fields             map[string]string // hostname, ip, mac, hostkey, machineid, random
	clock              float64           // the guest's clock, seconds since the epoch
	hostBefore, hostAt time.Time
}

// identityFields are the fields that must differ between any two machines.
var identityFields = []string{"hostname", "ip", "mac", "hostkey", "machineid", "random"}

func parseIdentity(t *testing.T, vm, out string, before, after time.Time) identity {
	t.Helper()
	id := identity{vm: vm, fields: map[string]string{}, hostBefore: before, hostAt: after}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		id.fields[k] = v
	}
	for _, f := range identityFields {
		if id.fields[f] == "" {
			t.Errorf("%s: no %s in the guest's answer:\n%s", vm, f, out)
		}
	}
	// sha256 of nothing: the host key file was missing.
	if id.fields["hostkey"] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Errorf("%s: no ssh host key in /etc/ssh", vm)
	}
	c, err := strconv.ParseFloat(id.fields["clock"], 64)
	if err != nil {
		t.Errorf("%s: clock %q: %v", vm, id.fields["clock"], err)
	}
	id.clock = c
	return id
}

// identityOf asks a running VM who it is.
func identityOf(t *testing.T, vm string) identity {
	t.Helper()
	before := time.Now()
	r := mustBanger(t, "vm", "exec", vm, "--", "sh", "-c", identityScript)
	return parseIdentity(t, vm, r.stdout, before, time.Now())
}

// checkClock checks that the guest's clock read the host's time, within a second, at some
// moment between the host's readings around the command.
func (id identity) checkClock(t *testing.T) {
	t.Helper()
	lo := float64(id.hostBefore.UnixNano())/1e9 - 1
	hi := float64(id.hostAt.UnixNano())/1e9 + 1
	if id.clock < lo || id.clock > hi {
		t.Errorf("%s: guest clock %.3f is %+.3fs from the host's window [%.3f, %.3f] (the command took %s; the guest's clocksource is %s); want within 1s",
			id.vm, id.clock, skew(id.clock, lo+1, hi-1), lo+1, hi-1, id.hostAt.Sub(id.hostBefore).Round(time.Millisecond), id.fields["clocksource"])
	}
}

func skew(v, lo, hi float64) float64 {
	switch {
	case v < lo:
		return v - lo
	case v > hi:
		return v - hi
	}
	return 0
}

// allDiffer checks that no two of the machines share any identity field.
func allDiffer(t *testing.T, ids []identity) {
	t.Helper()
	for _, f := range identityFields {
		seen := map[string]string{}
		for _, id := range ids {
			v := id.fields[f]
			if other, dup := seen[v]; dup && v != "" {
				t.Errorf("%s and %s have the same %s %q; each must be a machine of its own", other, id.vm, f, v)
			}
			seen[v] = id.vm
		}
	}
}

// resolveName resolves NAME.vm in the harness's namespace through banger's DNS server.
func resolveName(t *testing.T, name string) string {
	t.Helper()
	etc := filepath.Join("/etc/netns", h.netns)
	conf := filepath.Join(etc, "resolv.conf")
	if _, err := os.Stat(conf); err != nil {
		if err := os.MkdirAll(etc, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(conf, []byte("nameserver 172.16.0.1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(etc) })
	}
	out, err := inNetns(t, "getent", "hosts", name+".vm")
	if err != nil || len(strings.Fields(out)) == 0 {
		t.Errorf("getent hosts %s.vm in the namespace: %v: %s", name, err, out)
		return ""
	}
	return strings.Fields(out)[0]
}

// checkReachable checks that the VM answers `vm ssh` (which pins its host key) with its own
// name, and that its name resolves to the address it has.
func checkReachable(t *testing.T, id identity) {
	t.Helper()
	r := outside(t, nil, filepath.Join(h.bin, "banger"), "vm", "ssh", id.vm, "--", "hostname")
	if r.code != 0 || strings.TrimSpace(r.stdout) != id.vm {
		t.Errorf("vm ssh %s -- hostname: exit %d, stdout %q, stderr %q; want its name", id.vm, r.code, r.stdout, r.stderr)
	}
	if ip := resolveName(t, id.vm); ip != id.fields["ip"] {
		t.Errorf("%s.vm resolves to %q; the guest has %q", id.vm, ip, id.fields["ip"])
	}
}

// TestWarmRunIsAnotherMachine boots a VM of a new combination cold, which saves the boot
// snapshot, then restores two VMs and a run from that snapshot: none of the four shares a
// name, address, MAC, ssh host key, machine id or kernel randomness with another, every clock
// is the host's, and each answers ssh and its name.
func TestWarmRunIsAnotherMachine(t *testing.T) {
	ensureWarm(t)
	const mem = "832M"
	deleteVMs(t, "warm-src", "warm-a", "warm-b")
	r := mustBanger(t, "vm", "create", "--name", "warm-src", "--memory", mem)
	t.Logf("cold create took %s", r.took.Round(time.Millisecond))
	if k := startKind(r.stderr); k != "cold" || !savedBootSnapshot(r.stderr) {
		t.Errorf("the first create of a combination started %q; want it to boot cold and save a boot snapshot, and say so:\n%s", k, r.stderr)
	}
	boot := bootSnapshotMade(t, "warm-src")
	if boot.MemoryMiB != 832 {
		t.Errorf("boot snapshot %+v; want it of the VM's size (832 MiB)", boot)
	}

	// --cold boots even though the boot snapshot exists, and saves none.
	r = mustBanger(t, "vm", "run", "--rm", "--cold", "--memory", mem, "--", "true")
	if k := startKind(r.stderr); k != "cold" || savedBootSnapshot(r.stderr) {
		t.Errorf("vm run --cold started %q; want it to boot cold and save nothing:\n%s", k, r.stderr)
	}

	for _, name := range []string{"warm-a", "warm-b"} {
		r := mustBanger(t, "vm", "create", "--name", name, "--memory", mem)
		t.Logf("warm create of %s took %s", name, r.took.Round(time.Millisecond))
		if k := startKind(r.stderr); k != "warm" {
			t.Errorf("create of %s with a boot snapshot of its combination started %q; want it restored:\n%s", name, k, r.stderr)
		}
	}
	// The run while the three others run: no address or name of theirs is free to be reused.
	before := time.Now()
	r = mustBanger(t, "vm", "run", "--rm", "--memory", mem, "--", "sh", "-c", identityScript)
	after := time.Now()
	t.Logf("warm run took %s", r.took.Round(time.Millisecond))
	if k := startKind(r.stderr); k != "warm" {
		t.Errorf("vm run started %q; want it restored from the boot snapshot:\n%s", k, r.stderr)
	}
	runName := readyName(r.stderr)
	if runName == "" {
		t.Errorf("vm run did not name its VM (\"vm NAME ready in\"):\n%s", r.stderr)
		runName = "the-run"
	}
	ids := []identity{parseIdentity(t, runName, r.stdout, before, after)}
	for _, name := range []string{"warm-src", "warm-a", "warm-b"} {
		ids = append(ids, identityOf(t, name))
	}
	for _, id := range ids {
		if id.fields["hostname"] != id.vm {
			t.Errorf("hostname of %s is %q", id.vm, id.fields["hostname"])
		}
		// A boot snapshot is saved once udev has handled the boot's device events: a guest
		// restored from it does not load the boot's modules again.
		if id.fields["udev"] != "settled" {
			t.Errorf("%s: udev still has device events to handle when the VM is ready (udev=%s); the boot snapshot was saved before udev settled", id.vm, id.fields["udev"])
		}
		id.checkClock(t)
		t.Logf("%s: %v", id.vm, id.fields)
	}
	allDiffer(t, ids)
	for _, id := range ids[1:] {
		checkReachable(t, id)
	}

	mustBanger(t, "vm", "delete", "-f", "warm-src", "warm-a", "warm-b")
	assertNothingLeft(t)
}

// counterScript counts, five times a second, into /root/counter (replaced whole, so a reader
// never sees half a number).
const counterScript = `i=0; while :; do i=$((i+1)); echo $i > /root/counter.new && mv /root/counter.new /root/counter; sleep 0.2; done`

// counter reads the count of the counterScript running in vm; -1 before it first wrote it.
func counter(t *testing.T, vm string) int {
	t.Helper()
	r, err := banger(nil, "vm", "exec", vm, "--", "cat", "/root/counter")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(r.stdout))
	if r.code != 0 || err != nil {
		return -1
	}
	return n
}

// TestForkCarriesRunningProcesses forks a VM with a process counting in it into three live
// clones: in each the same process goes on counting from where the parent was, the parent's
// files are there, and each is a machine of its own whose writes nobody else sees.
func TestForkCarriesRunningProcesses(t *testing.T) {
	ensureWarm(t)
	const mem = "800M"
	deleteVMs(t, "fork-src")
	mustBanger(t, "vm", "create", "--name", "fork-src", "--memory", mem)
	bootSnapshotMade(t, "fork-src") // removed at the end
	r, err := bangerStdin(strings.NewReader(counterScript+"\n"), nil, "vm", "exec", "fork-src", "--", "sh", "-c",
		"cat > /usr/local/bin/counter-loop && echo made-before-the-fork > /root/before-fork && sync && "+
			"{ setsid nohup sh /usr/local/bin/counter-loop </dev/null >/dev/null 2>&1 & }")
	if err != nil || r.code != 0 {
		t.Fatalf("start the counter: %v %+v", err, r)
	}
	waitFor(t, func() bool { return counter(t, "fork-src") >= 10 }, "the parent's counter to reach 10")
	pid := guest(t, "fork-src", "pgrep", "-f", "counter-loop")
	atFork := counter(t, "fork-src")

	start := time.Now()
	r = mustBanger(t, "vm", "fork", "fork-src", "-n", "3")
	t.Logf("vm fork -n 3 took %s; stderr:\n%s", time.Since(start).Round(time.Millisecond), r.stderr)
	clones := strings.Fields(r.stdout)
	deleteVMs(t, clones...)
	if len(clones) != 3 {
		t.Fatalf("vm fork -n 3 printed %q; want 3 names, one a line", r.stdout)
	}
	if vm := show(t, "fork-src"); vm.State != "running" {
		t.Errorf("the parent after the fork: %+v; want it running on", vm)
	}
	parentAfter := counter(t, "fork-src")
	waitFor(t, func() bool { return counter(t, "fork-src") > parentAfter }, "the parent's counter to go on after the fork")

	for _, c := range clones {
		if r, _ := banger(nil, "vm", "exec", c, "--", "pgrep", "-f", "counter-loop"); strings.TrimSpace(r.stdout) != pid {
			got := strings.TrimSpace(r.stdout)
			t.Errorf("%s: counter-loop pids %q; want the parent's process (pid %s) running on", c, got, pid)
		}
		first := counter(t, c)
		if first < atFork {
			t.Errorf("%s: counter at %d; the parent was at %d before the fork: the process did not go on from there", c, first, atFork)
		}
		waitFor(t, func() bool { return counter(t, c) > first }, c+"'s counter to go on counting")
		if got := guest(t, c, "cat", "/root/before-fork"); got != "made-before-the-fork" {
			t.Errorf("%s: /root/before-fork = %q", c, got)
		}
	}
	ids := []identity{identityOf(t, "fork-src")}
	for _, c := range clones {
		ids = append(ids, identityOf(t, c))
	}
	for _, id := range ids {
		if id.fields["hostname"] != id.vm {
			t.Errorf("hostname of %s is %q", id.vm, id.fields["hostname"])
		}
		// A boot snapshot is saved once udev has handled the boot's device events: a guest
		// restored from it does not load the boot's modules again.
		if id.fields["udev"] != "settled" {
			t.Errorf("%s: udev still has device events to handle when the VM is ready (udev=%s); the boot snapshot was saved before udev settled", id.vm, id.fields["udev"])
		}
		id.checkClock(t)
		checkReachable(t, id)
	}
	allDiffer(t, ids)

	// From the fork on, they diverge: what one writes, no other sees.
	guest(t, clones[0], "sh", "-c", "echo only-in-"+clones[0]+" > /root/diverged && sync")
	guest(t, "fork-src", "sh", "-c", "echo only-in-the-parent > /root/parent-after-fork && sync")
	for _, vm := range append([]string{"fork-src"}, clones...) {
		got := guest(t, vm, "sh", "-c", "cat /root/diverged /root/parent-after-fork 2>/dev/null; true")
		want := map[string]string{"fork-src": "only-in-the-parent", clones[0]: "only-in-" + clones[0]}[vm]
		if got != want {
			t.Errorf("%s sees %q; want %q", vm, got, want)
		}
	}
	if got := snapshotList(t); len(userSnapshots(got)) != 0 {
		t.Errorf("vm fork left snapshots behind: %+v", userSnapshots(got))
	}
	assertNoStaging(t)

	mustBanger(t, append([]string{"vm", "delete", "-f", "fork-src"}, clones...)...)
	assertNothingLeft(t)
}

func userSnapshots(l []snapInfo) []snapInfo {
	var out []snapInfo
	for _, s := range l {
		if s.Kind != "boot" {
			out = append(out, s)
		}
	}
	return out
}

// assertNoStaging checks that no snapshot is half made or half removed.
func assertNoStaging(t *testing.T) {
	t.Helper()
	for _, p := range []string{".stage-*", ".trash-*"} {
		if m, _ := filepath.Glob(filepath.Join(stateDir(), "snapshots", p)); len(m) != 0 {
			t.Errorf("snapshot directories left behind: %v", m)
		}
	}
}

// TestRebuildInvalidatesBootSnapshot makes a new version of an image that has a boot snapshot:
// the snapshot goes, and the next VM of the image boots the new version cold. The image is a
// copy of the golden image's rootfs adopted with `image register` (a rebuild of the golden
// image itself takes minutes, and the other tests expect it to have one version), changed
// with debugfs between the two versions.
func TestRebuildInvalidatesBootSnapshot(t *testing.T) {
	ensureWarm(t)
	const img, mem = "e2e-snapimg", "864M"
	rootfs := filepath.Join(userDir(t), "rootfs.ext4")
	if out, err := exec.Command("cp", "--sparse=always", imagePath(), rootfs).CombinedOutput(); err != nil {
		t.Fatalf("copy the golden rootfs: %v: %s", err, out)
	}
	mark := func(version string) {
		t.Helper()
		f := filepath.Join(t.TempDir(), "marker")
		writeFile(t, f, version+"\n", 0o644)
		_ = exec.Command("debugfs", "-w", "-R", "rm /etc/e2e-version", rootfs).Run() // absent the first time
		if out, err := exec.Command("debugfs", "-w", "-R", "write "+f+" /etc/e2e-version", rootfs).CombinedOutput(); err != nil || !strings.Contains(string(out), "Allocated inode") {
			t.Fatalf("debugfs write /etc/e2e-version: %v: %s", err, out)
		}
		giveToUser(t, rootfs)
	}
	t.Cleanup(func() { _, _ = banger(nil, "image", "delete", img) })
	mark("v1")
	mustBanger(t, "image", "register", "--name", img, "--rootfs", rootfs, "--kernel", "debian-6.1")
	v1 := imageShow(t, img).Version

	deleteVMs(t, "rebuild-a")
	r := mustBanger(t, "vm", "create", "--name", "rebuild-a", "--image", img, "--memory", mem)
	if k := startKind(r.stderr); k != "cold" || !savedBootSnapshot(r.stderr) {
		t.Errorf("first VM of the image started %q; want cold, saving a boot snapshot:\n%s", k, r.stderr)
	}
	boot := bootSnapshotMade(t, "rebuild-a")
	if !strings.HasPrefix(boot.Image, img+"@") {
		t.Errorf("boot snapshot %+v; want it of %s", boot, img)
	}
	mustBanger(t, "vm", "delete", "-f", "rebuild-a")

	mark("v2")
	mustBanger(t, "image", "register", "--name", img, "--rootfs", rootfs, "--kernel", "debian-6.1")
	if v2 := imageShow(t, img).Version; v2 == v1 {
		t.Fatalf("the second register kept version %s; want a new version", v1)
	}
	for _, s := range snapshotList(t) {
		if s.Name == boot.Name {
			t.Errorf("boot snapshot %s of the old version %s@%s is still listed after the image got a new version", s.Name, img, v1)
		}
	}
	r = mustBanger(t, "vm", "run", "--rm", "--image", img, "--memory", mem, "--", "cat", "/etc/e2e-version")
	if strings.TrimSpace(r.stdout) != "v2" {
		t.Errorf("the run after the rebuild read %q; want the new version's v2", r.stdout)
	}
	if k := startKind(r.stderr); k != "cold" || !savedBootSnapshot(r.stderr) {
		t.Errorf("the first run of the new version started %q; want cold, saving a boot snapshot:\n%s", k, r.stderr)
	}

	var v2Boot []string
	for _, s := range snapshotList(t) {
		if s.Kind == "boot" && strings.HasPrefix(s.Image, img+"@") {
			v2Boot = append(v2Boot, s.Name)
		}
	}
	if len(v2Boot) != 1 {
		t.Errorf("boot snapshots of %s after the first run of its new version: %v; want the one that run saved", img, v2Boot)
	}

	// Deleting the image drops its boot snapshots too.
	mustBanger(t, "image", "delete", img)
	for _, s := range snapshotList(t) {
		if strings.HasPrefix(s.Image, img+"@") {
			t.Errorf("snapshot %+v of the deleted image %s is still listed", s, img)
		}
	}
	assertNothingLeft(t)
}

// pauseAndKill runs `banger args...` with the daemon told to hang before step, waits until it
// hangs there, and kills the daemon with SIGKILL. It fails the test if the command ends
// without the daemon reaching step.
func pauseAndKill(t *testing.T, step string, args ...string) {
	t.Helper()
	marker := filepath.Join(stateDir(), "test-paused-at")
	_ = os.Remove(marker)
	cmd := bangerCommand(args...)
	cmd.Env = append(cmd.Env, "BANGER_PAUSE_AT="+step)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	defer func() { _ = cmd.Process.Kill(); <-done }()
	deadline := time.After(4 * time.Minute)
	for {
		if b, err := os.ReadFile(marker); err == nil && string(b) == step {
			break
		}
		select {
		case <-done:
			t.Fatalf("banger %s ended (exit %d) without the daemon reaching step %q:\n%s", strings.Join(args, " "), cmd.ProcessState.ExitCode(), step, buf.String())
		case <-deadline:
			t.Fatalf("banger %s: the daemon did not reach step %q in 4 minutes", strings.Join(args, " "), step)
		case <-time.After(100 * time.Millisecond):
		}
	}
	pid := daemonPID(t)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	_ = os.Remove(marker)
}

// bangerWithin runs the CLI like banger, killed after d: a guest left paused must fail the
// test, not hang it.
func bangerWithin(t *testing.T, d time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := asUser(exec.CommandContext(ctx, filepath.Join(h.bin, "banger"), args...))
	cmd.Env = h.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	_ = cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), code: cmd.ProcessState.ExitCode()}
	if ctx.Err() != nil {
		r.stderr += fmt.Sprintf("\n(killed after %s)", d)
	}
	return r
}

// assertOnlyLeft checks that the VMs named running are the only VMs and that they run: one
// record, VM directory, QEMU and tap each; and that no snapshot is half made.
func assertOnlyLeft(t *testing.T, running ...string) {
	t.Helper()
	r := mustBanger(t, "vm", "list", "--json")
	var vms []vmInfo
	if err := json.Unmarshal([]byte(r.stdout), &vms); err != nil {
		t.Fatalf("vm list --json: %v: %q", err, r.stdout)
	}
	want := map[string]bool{}
	for _, n := range running {
		want[n] = true
	}
	pids := map[string]bool{}
	for _, vm := range vms {
		switch {
		case !want[vm.Name]:
			t.Errorf("VM left behind: %+v", vm)
		case vm.State != "running":
			t.Errorf("VM %s is %s (%s); want it running on", vm.Name, vm.State, vm.LastError)
		default:
			pids[strconv.Itoa(vm.PID)] = true
		}
	}
	if len(vms) != len(running) {
		t.Errorf("%d VMs listed; want %d (%v)", len(vms), len(running), running)
	}
	for _, d := range vmsDirs() {
		if entries, _ := os.ReadDir(d); len(entries) != len(running) {
			t.Errorf("%d VM directories in %s: %v; want %d", len(entries), d, entries, len(running))
		}
	}
	out, _ := exec.Command("pgrep", "-f", "qemu-system-x86_64.*"+regexp.QuoteMeta(stateDir())).Output()
	for _, p := range strings.Fields(string(out)) {
		if !pids[p] {
			t.Errorf("QEMU pid %s is no listed VM's", p)
		}
	}
	if links, _ := inNetns(t, "ip", "-o", "link", "show"); len(regexp.MustCompile(`(?m)^\d+: bg[0-9a-f]{12}[:@]`).FindAllString(links, -1)) != len(running) {
		t.Errorf("taps in the namespace:\n%s\nwant %d (one for each running VM)", links, len(running))
	}
	assertNoStaging(t)
}

// assertStillRunning checks that the VM named vm runs on in the same boot and answers.
func assertStillRunning(t *testing.T, vm, bootID string) {
	t.Helper()
	r := bangerWithin(t, time.Minute, "vm", "exec", vm, "--", "cat", "/proc/sys/kernel/random/boot_id")
	if r.code != 0 || strings.TrimSpace(r.stdout) != bootID {
		t.Errorf("%s after the daemon was killed: exit %d, boot id %q, stderr %s; want it running on in boot %s", vm, r.code, r.stdout, r.stderr, bootID)
	}
}

// TestDaemonKilledMidSnapshot kills the daemon with SIGKILL while vm snapshot, vm fork, a warm
// create and a boot snapshot hang before each of their steps in turn; the next daemon must
// leave nothing behind (no half-made VM, QEMU, tap or snapshot) and the VM they were taken
// of must run on.
func TestDaemonKilledMidSnapshot(t *testing.T) {
	ensureWarm(t)
	const mem, coldMem = "896M", "928M"
	deleteVMs(t, "snap-parent")
	mustBanger(t, "vm", "create", "--name", "snap-parent", "--memory", mem)
	bootSnapshotMade(t, "snap-parent")
	bootID := guest(t, "snap-parent", "cat", "/proc/sys/kernel/random/boot_id")
	snaps := snapshotNames(t)

	check := func(t *testing.T, extra ...string) {
		t.Helper()
		assertStillRunning(t, "snap-parent", bootID)
		assertOnlyLeft(t, append([]string{"snap-parent"}, extra...)...)
		if got := snapshotNames(t); strings.Join(got, " ") != strings.Join(snaps, " ") {
			t.Errorf("snapshots %v; want those from before (%v)", got, snaps)
		}
	}

	for _, step := range []string{"capture", "publish"} {
		t.Run("snapshot/"+step, func(t *testing.T) {
			pauseAndKill(t, step, "vm", "snapshot", "snap-parent", "--name", "mid-"+step)
			check(t)
		})
	}
	for _, step := range []string{"capture", "record", "dirs", "clone", "network", "restore", "agent", "renew", "files", "ready"} {
		t.Run("fork/"+step, func(t *testing.T) {
			pauseAndKill(t, step, "vm", "fork", "snap-parent", "--name", "mid-fork-"+step)
			check(t)
		})
	}
	for _, step := range []string{"record", "dirs", "clone", "network", "restore", "agent", "renew", "files", "ready"} {
		t.Run("warm/"+step, func(t *testing.T) {
			pauseAndKill(t, step, "vm", "create", "--name", "mid-warm-"+step, "--memory", mem)
			check(t)
		})
	}
	// The boot snapshot of a new combination is saved in the middle of the create that boots
	// cold: killed there, that create is undone like any other, and no boot snapshot is left.
	for _, step := range []string{"settle", "capture", "publish"} {
		t.Run("boot/"+step, func(t *testing.T) {
			pauseAndKill(t, step, "vm", "create", "--name", "mid-boot-"+step, "--memory", coldMem)
			check(t)
		})
	}
	mustBanger(t, "vm", "delete", "-f", "snap-parent")
	assertNothingLeft(t)
}
