package guestagent

import (
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// sigPoweroff is SIGRTMIN+4 as systemd counts it (glibc's SIGRTMIN is 34).
const sigPoweroff = syscall.Signal(38)

// PoweroffSystem shuts the guest down: through systemd when it is PID 1 (SIGRTMIN+4 starts
// poweroff.target without needing D-Bus), or directly when the agent itself is PID 1.
func PoweroffSystem() error {
	if os.Getpid() == 1 {
		unix.Sync()
		return unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
	if b, err := os.ReadFile("/proc/1/comm"); err == nil && strings.TrimSpace(string(b)) == "systemd" {
		return syscall.Kill(1, sigPoweroff)
	}
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}
