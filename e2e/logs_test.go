package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestGuestFloodingItsConsoleCannotFillTheHost: a guest writes three times the console cap to
// its serial console. The console log and its rotated part stay within the cap each, vm logs
// still ends with the guest's latest output, and after a daemon restart the new daemon takes
// the console over again.
func TestGuestFloodingItsConsoleCannotFillTheHost(t *testing.T) {
	ensureWarm(t)
	const capBytes = 64 << 10
	writeConfig(t, "console_log_size = \"64K\"\n")
	mustBanger(t, "vm", "create", "--name", "flood", "--memory", "768M")
	dir := show(t, "flood").Dir
	console := filepath.Join(dir, "console.log")

	// 3 x 64 KiB of 64-byte lines, then a marker, written to the kernel's console (ttyS0).
	guest(t, "flood", "sh", "-c",
		`yes 'flooding the console with a line of sixty-four bytes, over and' | head -c 196608 > /dev/ttyS0; echo FLOOD-END > /dev/ttyS0`)
	waitFor(t, func() bool {
		return strings.Contains(mustBanger(t, "vm", "logs", "flood").stdout, "FLOOD-END")
	}, "the flood's last line in vm logs")
	for _, p := range []string{console, console + ".1"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: %v (a flood of 3x the cap must have rotated the log)", p, err)
		}
		if st.Size() > capBytes {
			t.Errorf("%s is %d bytes, over the %d-byte cap", p, st.Size(), capBytes)
		}
	}
	if matches, _ := filepath.Glob(console + "*"); len(matches) != 2 {
		t.Errorf("console log files: %v, want console.log and console.log.1", matches)
	}

	// A new daemon (the old one killed) reads the running guest's console again.
	pid := daemonPID(t)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	guest(t, "flood", "sh", "-c", "echo AFTER-RESTART > /dev/ttyS0")
	waitFor(t, func() bool {
		return strings.Contains(mustBanger(t, "vm", "logs", "flood").stdout, "AFTER-RESTART")
	}, "console output after a daemon restart in vm logs")

	// systemd's messages are in the journal, not on the console: --journal shows them.
	if j := mustBanger(t, "vm", "logs", "--journal", "flood").stdout; !strings.Contains(j, "systemd") {
		t.Errorf("vm logs --journal shows no systemd messages:\n%.2000s", j)
	}

	mustBanger(t, "vm", "delete", "-f", "flood")
	assertNothingLeft(t)
}
