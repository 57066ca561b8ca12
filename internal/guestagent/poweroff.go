package guestagent

import (
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// PoweroffSystem shuts the guest down: through init when it is systemd (SIGRTMIN+4 starts
// poweroff.target without needing D-Bus) or the agent's own init (RunInit, which ends every
// process and makes the file systems read-only first), or directly otherwise.
func PoweroffSystem() error {
	if os.Getpid() == 1 {
		unix.Sync()
		return unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
	if b, err := os.ReadFile("/proc/1/comm"); err == nil {
		switch strings.TrimSpace(string(b)) {
		case "systemd", "banger-agent":
			return syscall.Kill(1, sigRTPoweroff)
		}
	}
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}
