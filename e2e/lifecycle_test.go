package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// mustBanger runs the CLI and fails the test unless it exits 0.
func mustBanger(t *testing.T, args ...string) result {
	t.Helper()
	r, err := banger(nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	if r.code != 0 {
		t.Fatalf("banger %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

type vmInfo struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	PID        int    `json:"pid"`
	VCPU       int    `json:"vcpu"`
	MemoryMiB  int    `json:"memory_mib"`
	DiskBytes  int64  `json:"disk_bytes"`
	LastError  string `json:"last_error"`
	Dir        string `json:"dir"`
	IP         string `json:"ip"`
	AutoRemove bool   `json:"auto_remove"`
}

func show(t *testing.T, name string) vmInfo {
	t.Helper()
	r := mustBanger(t, "vm", "show", name, "--json")
	var vm vmInfo
	if err := json.Unmarshal([]byte(r.stdout), &vm); err != nil {
		t.Fatalf("vm show --json: %v: %q", err, r.stdout)
	}
	return vm
}

// guest runs a command in a VM and returns its trimmed stdout.
func guest(t *testing.T, name string, argv ...string) string {
	t.Helper()
	r := mustBanger(t, append([]string{"vm", "exec", name, "--"}, argv...)...)
	return strings.TrimSpace(r.stdout)
}

func daemonPID(t *testing.T) int {
	t.Helper()
	r := mustBanger(t, "daemon", "status")
	m := regexp.MustCompile(`pid (\d+)`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("daemon status: %q", r.stdout)
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		// A zombie still answers kill 0 until its parent reaps it; it is gone for our purposes
		// once it is a zombie with no thread left (a zombie leader's threads may still be
		// closing its files, such as a daemon's listening socket).
		p := "/proc/" + strconv.Itoa(pid)
		if b, err := os.ReadFile(p + "/stat"); err == nil && strings.Contains(string(b), ") Z ") {
			if tasks, _ := os.ReadDir(p + "/task"); len(tasks) <= 1 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("pid %d still running", pid)
}

func TestLifecycle(t *testing.T) {
	ensureWarm(t)
	r := mustBanger(t, "vm", "create", "--name", "life", "--vcpu", "1", "--memory", "1G")
	if strings.TrimSpace(r.stdout) != "life" || !strings.Contains(r.stderr, "spec: vcpu=1 (flag") {
		t.Fatalf("vm create: stdout %q (want the name), stderr:\n%s", r.stdout, r.stderr)
	}
	boot1 := guest(t, "life", "cat", "/proc/sys/kernel/random/boot_id")
	guest(t, "life", "sh", "-c", "echo kept > /root/persist && sync")

	mustBanger(t, "vm", "stop", "life")
	if vm := show(t, "life"); vm.State != "stopped" || vm.PID != 0 {
		t.Fatalf("after stop: %+v", vm)
	}
	// Stopping a stopped VM does nothing and says so; so does starting a running one.
	if r := mustBanger(t, "vm", "stop", "life"); !strings.Contains(r.stdout+r.stderr, "life is already stopped") || strings.Contains(r.stderr, "stopping:") {
		t.Errorf("stop of a stopped VM: stdout %q stderr %q", r.stdout, r.stderr)
	}
	if r, _ := banger(nil, "vm", "stop", "nosuchvm"); r.code == 0 || strings.Contains(r.stderr, "stopping:") {
		t.Errorf("stop of a VM that does not exist: exit %d stderr %q; want the error alone", r.code, r.stderr)
	}
	mustBanger(t, "vm", "start", "life")
	if r := mustBanger(t, "vm", "start", "life"); !strings.Contains(r.stdout+r.stderr, "life is already running") || strings.Contains(r.stdout+r.stderr, "ready in") {
		t.Errorf("start of a running VM: stdout %q stderr %q", r.stdout, r.stderr)
	}
	if got := guest(t, "life", "cat", "/root/persist"); got != "kept" {
		t.Errorf("after stop/start /root/persist = %q, want the VM disk kept", got)
	}
	boot2 := guest(t, "life", "cat", "/proc/sys/kernel/random/boot_id")
	mustBanger(t, "vm", "restart", "life")
	boot3 := guest(t, "life", "cat", "/proc/sys/kernel/random/boot_id")
	if boot1 == boot2 || boot2 == boot3 {
		t.Errorf("boot ids %s, %s, %s: start and restart must boot afresh", boot1, boot2, boot3)
	}

	// set refuses a running VM, then changes a stopped one.
	r, _ = banger(nil, "vm", "set", "life", "--vcpu", "2")
	if r.code != 1 || !strings.Contains(r.stderr, "stop it first") {
		t.Errorf("set on a running VM: exit %d, stderr %s", r.code, r.stderr)
	}
	mustBanger(t, "vm", "stop", "life")
	r, _ = banger(nil, "vm", "set", "life", "--disk-size", "1G")
	if r.code != 1 || !strings.Contains(r.stderr, "never shrinks") {
		t.Errorf("shrinking the disk: exit %d, stderr %s", r.code, r.stderr)
	}
	mustBanger(t, "vm", "set", "life", "--vcpu", "2", "--memory", "768M", "--disk-size", "10G")
	mustBanger(t, "vm", "start", "life")
	if got := guest(t, "life", "nproc"); got != "2" {
		t.Errorf("nproc after set --vcpu 2 = %q", got)
	}
	memKB, _ := strconv.Atoi(guest(t, "life", "sh", "-c", "awk '/MemTotal/{print $2}' /proc/meminfo"))
	if memKB < 600*1024 || memKB > 768*1024 {
		t.Errorf("MemTotal after set --memory 768M = %d kB", memKB)
	}
	sizeKB, _ := strconv.Atoi(guest(t, "life", "sh", "-c", "df -k --output=size /run/banger/disk | tail -1"))
	if sizeKB < 9*1024*1024 {
		t.Errorf("VM disk filesystem after set --disk-size 10G = %d kB, want about 10 GiB", sizeKB)
	}
	if got := guest(t, "life", "cat", "/root/persist"); got != "kept" {
		t.Errorf("after growing the disk /root/persist = %q", got)
	}

	logs := mustBanger(t, "vm", "logs", "life")
	if !strings.Contains(logs.stdout, "banger-agent: init") {
		t.Errorf("vm logs lacks the guest console (agent init lines):\n%.2000s", logs.stdout)
	}
	if vm := show(t, "life"); vm.VCPU != 2 || vm.MemoryMiB != 768 || vm.DiskBytes != 10<<30 {
		t.Errorf("vm show after set: %+v", vm)
	}

	// A running VM is not deleted without -f (or a yes on a terminal; stdin is none here).
	if r, _ := banger(nil, "vm", "delete", "life"); r.code != 1 || !strings.Contains(r.stderr, "vm delete -f life") {
		t.Errorf("delete of a running VM without -f: exit %d stderr %q; want a refusal naming -f", r.code, r.stderr)
	}
	if vm := show(t, "life"); vm.State != "running" {
		t.Errorf("after a refused delete: %+v", vm)
	}

	// kill ends in stopped, not error.
	mustBanger(t, "vm", "kill", "life")
	if vm := show(t, "life"); vm.State != "stopped" || vm.LastError != "" {
		t.Errorf("after kill: %+v", vm)
	}
	mustBanger(t, "vm", "delete", "-f", "life")
	assertNothingLeft(t)
}

func TestManyRefsRunInOrderAndFailuresDoNotStopTheRest(t *testing.T) {
	ensureWarm(t)
	mustBanger(t, "vm", "create", "--name", "ref-a", "--no-start")
	mustBanger(t, "vm", "create", "--name", "ref-b", "--no-start")
	r, _ := banger(nil, "vm", "delete", "ref-b", "nope", "ref-a")
	if r.code != 1 || r.stdout != "deleted ref-b\ndeleted ref-a\n" || !strings.Contains(r.stderr, "banger: nope: no VM named \"nope\"") {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	assertNothingLeft(t)
}

func TestConcurrentCreates(t *testing.T) {
	ensureWarm(t)
	var wg sync.WaitGroup
	results := make([]result, 2)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i], _ = banger(nil, "vm", "create", "--name", "conc-"+strconv.Itoa(i), "--memory", "768M")
		}(i)
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Errorf("create %d: exit %d\n%s", i, r.code, r.stderr)
		}
	}
	for i := range results {
		name := "conc-" + strconv.Itoa(i)
		if got := guest(t, name, "hostname"); got != name {
			t.Errorf("hostname in %s = %q", name, got)
		}
	}
	mustBanger(t, "vm", "delete", "-f", "conc-0", "conc-1")
	assertNothingLeft(t)
}

func TestPrune(t *testing.T) {
	ensureWarm(t)
	mustBanger(t, "vm", "create", "--name", "prune-created", "--no-start")
	mustBanger(t, "vm", "create", "--name", "prune-running", "--memory", "768M")
	r, _ := banger(nil, "vm", "prune")
	if r.code != 2 || !strings.Contains(r.stderr, "add -f") {
		t.Errorf("prune without -f and without a terminal: exit %d, stderr %s", r.code, r.stderr)
	}
	r = mustBanger(t, "vm", "prune", "-f")
	if r.stdout != "deleted prune-created\n" {
		t.Errorf("prune -f printed %q, want only the VM that does not run", r.stdout)
	}
	if vm := show(t, "prune-running"); vm.State != "running" {
		t.Errorf("prune touched a running VM: %+v", vm)
	}
	mustBanger(t, "vm", "delete", "-f", "prune-running")
	assertNothingLeft(t)
}

// TestDaemonCrashKeepsVMs kills the daemon with SIGKILL, then SIGTERM, while a VM runs: the VM
// keeps running and the next command's daemon adopts it.
func TestDaemonCrashKeepsVMs(t *testing.T) {
	ensureWarm(t)
	mustBanger(t, "vm", "create", "--name", "survivor", "--memory", "768M")
	boot := guest(t, "survivor", "cat", "/proc/sys/kernel/random/boot_id")
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		pid := daemonPID(t)
		vmm := show(t, "survivor").PID
		if err := syscall.Kill(pid, sig); err != nil {
			t.Fatal(err)
		}
		waitGone(t, pid)
		if syscall.Kill(vmm, 0) != nil {
			t.Fatalf("the VMM (pid %d) died with the daemon (%s)", vmm, sig)
		}
		// The next command starts a new daemon, which adopts the VM.
		if got := guest(t, "survivor", "cat", "/proc/sys/kernel/random/boot_id"); got != boot {
			t.Errorf("after daemon %s: boot id %q, want the same boot %q", sig, got, boot)
		}
		if vm := show(t, "survivor"); vm.State != "running" || vm.PID != vmm {
			t.Errorf("after daemon %s: %+v", sig, vm)
		}
	}
	mustBanger(t, "vm", "delete", "-f", "survivor")
	assertNothingLeft(t)
}

// TestVMMCrashIsNoticed kills a VM's QEMU: the VM is marked stopped and its runtime files are
// released, both while the daemon runs and when the daemon was down at the time.
func TestVMMCrashIsNoticed(t *testing.T) {
	ensureWarm(t)
	mustBanger(t, "vm", "create", "--name", "victim", "--memory", "768M")

	vmm := show(t, "victim").PID
	_ = syscall.Kill(vmm, syscall.SIGKILL)
	waitFor(t, func() bool { return show(t, "victim").State == "stopped" }, "victim marked stopped")
	if vm := show(t, "victim"); !strings.Contains(vm.LastError, "VMM exited") {
		t.Errorf("last error %q, want the reason", vm.LastError)
	}

	mustBanger(t, "vm", "start", "victim")
	vmm = show(t, "victim").PID
	pid := daemonPID(t)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	waitGone(t, pid)
	_ = syscall.Kill(vmm, syscall.SIGKILL)
	waitGone(t, vmm)
	if vm := show(t, "victim"); vm.State != "stopped" || !strings.Contains(vm.LastError, "while the daemon was not running") {
		t.Errorf("after reconcile: %+v", vm)
	}
	entries, _ := os.ReadDir(filepath.Join(h.runtime, "bangerd.vms"))
	if len(entries) != 0 {
		t.Errorf("runtime files of the dead VM left: %v", entries)
	}
	mustBanger(t, "vm", "delete", "-f", "victim")
	assertNothingLeft(t)
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDaemonKilledMidCreate kills the daemon with SIGKILL while a create hangs before each
// step in turn; the next daemon must leave nothing behind: no process, disk, socket or row.
func TestDaemonKilledMidCreate(t *testing.T) {
	ensureWarm(t)
	marker := filepath.Join(stateDir(), "test-paused-at")
	for _, step := range []string{"record", "dirs", "disk", "vmm", "agent", "ready"} {
		t.Run(step, func(t *testing.T) {
			_ = os.Remove(marker)
			cmd := bangerCommand("vm", "create", "--cold", "--name", "mid-"+step, "--memory", "768M")
			cmd.Env = append(cmd.Env, "BANGER_PAUSE_AT="+step)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			waitFor(t, func() bool {
				b, err := os.ReadFile(marker)
				return err == nil && string(b) == step
			}, "the create to pause before "+step)
			pid := daemonPID(t)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			waitGone(t, pid)
			_ = os.Remove(marker)
			// The next command starts a daemon that reconciles.
			assertNothingLeft(t)
		})
	}
}

// TestRunKeepsAVMThatNeverBecameReachable: with a boot timeout no guest can meet, `vm run --rm`
// fails, but keeps the VM (stopped, not ephemeral) and says how to read its console.
func TestRunKeepsAVMThatNeverBecameReachable(t *testing.T) {
	ensureWarm(t)
	writeConfig(t, "boot_timeout = \"1s\"\n")
	// Cold: a warm start's restored guest answers well within a second.
	r, err := banger(nil, "vm", "run", "--rm", "--cold", "--name", "unreachable", "--", "true")
	if err != nil || r.code == 0 {
		t.Fatalf("vm run with a 1s boot timeout: %v %+v", err, r)
	}
	if !strings.Contains(r.stderr, "never became reachable") || !strings.Contains(r.stderr, "banger vm logs unreachable") {
		t.Errorf("stderr does not say the VM is kept and how to read its logs:\n%s", r.stderr)
	}
	restoreConfig(t)()
	vm := show(t, "unreachable")
	if vm.State != "stopped" || vm.AutoRemove || !strings.Contains(vm.LastError, "boot_timeout") {
		t.Errorf("kept VM: %+v; want stopped, not ephemeral, with the boot timeout as its last error", vm)
	}
	if logs := mustBanger(t, "vm", "logs", "unreachable"); logs.stdout == "" {
		t.Error("vm logs shows nothing for the kept VM")
	}
	// The VM is whole: with a normal timeout it boots.
	mustBanger(t, "vm", "start", "unreachable")
	if got := guest(t, "unreachable", "echo", "up"); got != "up" {
		t.Errorf("after start: %q", got)
	}
	mustBanger(t, "vm", "delete", "-f", "unreachable")
	assertNothingLeft(t)
}
