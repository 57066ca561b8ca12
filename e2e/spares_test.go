package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// sparesMade counts the spare VMs the daemons of this run have made (bangerd.log).
func sparesMade() int {
	b, _ := os.ReadFile(filepath.Join(stateDir(), "bangerd.log"))
	return strings.Count(string(b), `msg="made a spare VM"`)
}

// waitSpare waits until the daemon has made a spare after made of them.
func waitSpare(t *testing.T, made int) {
	t.Helper()
	waitUntil(t, 3*time.Minute, func() bool { return sparesMade() > made }, "a spare VM")
}

// fillPool makes the daemon make a spare of the combination of VMs with memory mem (a warm
// create of it, deleted at once) and waits until it has.
func fillPool(t *testing.T, mem string) {
	t.Helper()
	made := sparesMade()
	mustBanger(t, "vm", "create", "--name", "sp-trigger", "--memory", mem)
	mustBanger(t, "vm", "delete", "-f", "sp-trigger")
	waitSpare(t, made)
}

// listedVMs returns the names of the VMs vm list shows, sorted.
func listedVMs(t *testing.T) []string {
	t.Helper()
	var vms []vmInfo
	if err := json.Unmarshal([]byte(mustBanger(t, "vm", "list", "--json").stdout), &vms); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, vm := range vms {
		names = append(names, vm.Name)
	}
	slices.Sort(names)
	return names
}

// harnessVMMs counts the QEMU processes of this harness.
func harnessVMMs() int {
	out, _ := exec.Command("pgrep", "-f", "qemu-system-x86_64.*"+regexp.QuoteMeta(stateDir())).Output()
	return len(strings.Fields(string(out)))
}

// TestSpares turns warm_spares on: a combination used warm gets a spare, which the next create
// of it takes — a VM of its own under its user's name (host name, address, DNS name, ssh host
// key pinned, machine id) — while only the user's VMs are ever listed. Killed with SIGKILL in
// the middle of a claim, the daemon leaves nothing behind; a daemon stop ends the spares.
func TestSpares(t *testing.T) {
	ensureWarm(t)
	writeConfig(t, "warm_spares = 1\n")
	mustBanger(t, "daemon", "stop") // the next daemon reads the config afresh: no spares of before
	const mem = "864M"              // a combination of this test's own
	deleteVMs(t, "sp-cold", "sp-warm", "sp-mine", "sp-trigger")

	mustBanger(t, "vm", "create", "--name", "sp-cold", "--memory", mem)
	bootSnapshotMade(t, "sp-cold")
	if n := harnessVMMs(); n != 1 {
		t.Errorf("%d QEMU processes after the first (cold) VM of a combination; want 1: no spare for a combination used once", n)
	}
	made := sparesMade()
	r := mustBanger(t, "vm", "create", "--name", "sp-warm", "--memory", mem)
	if startKind(r.stderr) != "warm" {
		t.Fatalf("the second create was not a warm start:\n%s", r.stderr)
	}
	waitSpare(t, made)
	if got := listedVMs(t); !slices.Equal(got, []string{"sp-cold", "sp-warm"}) {
		t.Errorf("vm list shows %v; want only the user's VMs sp-cold and sp-warm", got)
	}
	if n := harnessVMMs(); n != 3 {
		t.Errorf("%d QEMU processes; want 3 (two VMs and the spare)", n)
	}
	var snaps []struct {
		Kind   string `json:"kind"`
		From   string `json:"from"`
		Spares int    `json:"spares"`
	}
	if err := json.Unmarshal([]byte(mustBanger(t, "snapshot", "list", "--json").stdout), &snaps); err != nil {
		t.Fatal(err)
	}
	for _, s := range snaps {
		if s.Kind == "boot" && s.From == "sp-cold" && s.Spares != 1 {
			t.Errorf("snapshot list says the boot snapshot of sp-cold has %d spares; want 1", s.Spares)
		}
	}

	// The next create takes the spare.
	made = sparesMade()
	r = mustBanger(t, "vm", "create", "--name", "sp-mine", "--memory", mem)
	if !strings.Contains(r.stderr, "taking a spare") {
		t.Errorf("the create did not take the spare:\n%s", r.stderr)
	}
	mine := show(t, "sp-mine")
	if got := guest(t, "sp-mine", "hostname"); got != "sp-mine" {
		t.Errorf("the spare taken is called %q inside; want sp-mine", got)
	}
	if got := guest(t, "sp-mine", "sh", "-c", "ip -4 -o addr show scope global | awk '{print $4}'"); got != mine.IP+"/24" {
		t.Errorf("sp-mine's address is %q; want %s/24", got, mine.IP)
	}
	if got := guest(t, "sp-warm", "getent", "hosts", "sp-mine.vm"); !strings.HasPrefix(got, mine.IP+" ") {
		t.Errorf("sp-mine.vm resolves to %q in another guest; want %s", got, mine.IP)
	}
	if a, b := guest(t, "sp-mine", "cat", "/etc/machine-id"), guest(t, "sp-warm", "cat", "/etc/machine-id"); a == b {
		t.Errorf("the taken spare has sp-warm's machine id %s", a)
	}
	if got := guest(t, "sp-mine", "grep", "-c", "sp-mine", "/etc/hosts"); got != "1" {
		t.Errorf("/etc/hosts of sp-mine names it %s times; want once", got)
	}
	if s := mustBanger(t, "vm", "ssh", "sp-mine", "--", "hostname"); strings.TrimSpace(s.stdout) != "sp-mine" {
		t.Errorf("ssh to the taken spare (its host key pinned under sp-mine): %+v", s)
	}
	waitSpare(t, made) // a new one behind it

	// SIGKILL in the middle of a claim leaves nothing: the next daemon deletes the spare or
	// the half-taken VM. Each round first makes the pool fill again (a warm create).
	for _, step := range []string{"claim", "renew", "files", "ready"} {
		t.Run("killed/"+step, func(t *testing.T) {
			if harnessVMMs() == 3 { // no spare yet (the last round's daemon deleted it)
				fillPool(t, mem)
			}
			pauseAndKill(t, step, "vm", "create", "--name", "mid-claim-"+step, "--memory", mem)
			if got := listedVMs(t); !slices.Equal(got, []string{"sp-cold", "sp-mine", "sp-warm"}) {
				t.Errorf("vm list shows %v after the kill; want sp-cold sp-mine sp-warm", got)
			}
			if n := harnessVMMs(); n != 3 {
				t.Errorf("%d QEMU processes after the kill at %s; want the 3 listed VMs' only", n, step)
			}
			for _, d := range vmsDirs() {
				if entries, _ := os.ReadDir(d); len(entries) != 3 {
					t.Errorf("%d VM directories in %s after the kill at %s: %v; want 3", len(entries), d, step, entries)
				}
			}
		})
	}

	// A daemon stop ends the spares (the VMs run on).
	fillPool(t, mem)
	mustBanger(t, "daemon", "stop")
	if n := harnessVMMs(); n != 3 {
		t.Errorf("%d QEMU processes after the daemon stopped; want the 3 VMs' only", n)
	}
	mustBanger(t, "vm", "delete", "-f", "sp-cold", "sp-warm", "sp-mine")
	assertNothingLeft(t)
}
