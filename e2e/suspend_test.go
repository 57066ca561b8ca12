package e2e

import (
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSuspendSurvivesADaemonRestart suspends a VM with a process counting in it, kills the
// daemon, and resumes the VM under the next daemon: the same boot goes on, the process still
// counts, and the guest's clock is the host's.
func TestSuspendSurvivesADaemonRestart(t *testing.T) {
	ensureWarm(t)
	mustBanger(t, "vm", "create", "--name", "sleeper", "--memory", "768M")
	boot := guest(t, "sleeper", "cat", "/proc/sys/kernel/random/boot_id")
	guest(t, "sleeper", "sh", "-c",
		`setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /root/counter; sleep 1; done' </dev/null >/dev/null 2>&1 &`)
	// counter is the guest's count, -1 before the counting process first wrote it.
	counter := func() int {
		t.Helper()
		r, err := banger(nil, "vm", "exec", "sleeper", "--", "cat", "/root/counter")
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(r.stdout))
		if r.code != 0 || err != nil {
			return -1
		}
		return n
	}
	waitFor(t, func() bool { return counter() >= 2 }, "the guest's counter to count")
	vmDir := show(t, "sleeper").Dir

	start := time.Now()
	r := mustBanger(t, "vm", "suspend", "sleeper")
	t.Logf("vm suspend took %s: %s%s", time.Since(start).Round(time.Millisecond), r.stdout, r.stderr)
	if vm := show(t, "sleeper"); vm.State != "suspended" || vm.PID != 0 {
		t.Fatalf("after suspend: %+v", vm)
	}
	if list := mustBanger(t, "vm", "list").stdout; !regexp.MustCompile(`(?m)^.*sleeper.*suspended`).MatchString(list) {
		t.Errorf("vm list does not show the VM suspended:\n%s", list)
	}
	if out, _ := exec.Command("pgrep", "-f", "qemu-system-x86_64.*"+regexp.QuoteMeta(vmDir)).Output(); strings.TrimSpace(string(out)) != "" {
		t.Errorf("a QEMU still runs for the suspended VM: pids %s", out)
	}
	if r, _ := banger(nil, "vm", "exec", "sleeper", "--", "true"); r.code == 0 {
		t.Error("exec in a suspended VM succeeded")
	}

	pid := daemonPID(t)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	// The next command starts a new daemon, which keeps the VM suspended.
	if vm := show(t, "sleeper"); vm.State != "suspended" {
		t.Fatalf("after a daemon restart: %+v", vm)
	}
	if daemonPID(t) == pid {
		t.Fatal("the daemon was not restarted")
	}

	start = time.Now()
	r, err := banger(nil, "vm", "resume", "sleeper")
	if err != nil {
		t.Fatal(err)
	}
	if r.code != 0 {
		vmmLog, _ := banger(nil, "vm", "logs", "sleeper", "--vmm")
		console, _ := banger(nil, "vm", "logs", "sleeper")
		t.Fatalf("vm resume: exit %d\nstderr: %s\nVMM log:\n%s\nconsole (end):\n%s", r.code, r.stderr, vmmLog.stdout, tail([]byte(console.stdout), 2000))
	}
	t.Logf("vm resume took %s: %s%s", time.Since(start).Round(time.Millisecond), r.stdout, r.stderr)
	if vm := show(t, "sleeper"); vm.State != "running" {
		t.Fatalf("after resume: %+v", vm)
	}
	if got := guest(t, "sleeper", "cat", "/proc/sys/kernel/random/boot_id"); got != boot {
		t.Errorf("boot id after resume %q, want the same boot %q", got, boot)
	}
	c1 := counter()
	waitFor(t, func() bool { return counter() >= c1+2 }, "the counter to go on after the resume")

	hostNow := time.Now().Unix()
	guestNow, err := strconv.ParseInt(guest(t, "sleeper", "date", "+%s"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	skew := guestNow - hostNow
	t.Logf("guest clock after resume: %+ds from the host's", skew)
	switch {
	case strings.Contains(r.stderr, "unknown operation"):
		// An agent that predates renew cannot be told the time; the resume says so.
		t.Logf("the guest agent does not know renew yet: the clock is not checked (%s)", r.stderr)
	case skew < -5 || skew > 5:
		t.Errorf("guest clock is %+ds from the host's after resume, want within 5s", skew)
	}

	mustBanger(t, "vm", "delete", "-f", "sleeper")
	assertNothingLeft(t)
}
