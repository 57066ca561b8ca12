package guestagent

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Signals an init receives, and what they ask for. Both conventions are honoured: systemd's
// (SIGRTMIN+3/4/5, SIGINT from Ctrl-Alt-Del) and the one of busybox's and sysvinit's halt,
// poweroff and reboot commands (SIGUSR1, SIGUSR2, SIGTERM).
var (
	sigHalt       = syscall.Signal(37) // SIGRTMIN+3 as systemd counts it (glibc's SIGRTMIN is 34)
	sigRTPoweroff = syscall.Signal(38) // SIGRTMIN+4: systemd's poweroff, also sent by PoweroffSystem
	sigReboot     = syscall.Signal(39) // SIGRTMIN+5
)

// Shutdown actions of the init.
const (
	actionNone     = ""
	actionPoweroff = "poweroff"
	actionReboot   = "reboot"
)

// initAction maps a signal received by PID 1 to what it must do.
func initAction(sig os.Signal) string {
	switch sig {
	case syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPWR, sigHalt, sigRTPoweroff:
		return actionPoweroff // a VM that halts might as well power off: nothing can resume it
	case syscall.SIGTERM, syscall.SIGINT, sigReboot:
		return actionReboot
	}
	return actionNone
}

// stopGrace is how long processes get between SIGTERM and SIGKILL at shutdown.
const stopGrace = 5 * time.Second

// RunInit is the agent as PID 1 of an image without systemd (the initramfs switched root into
// self with "init"). It finishes the system setup systemd would do (devpts, /dev/shm, cgroup2,
// the hostname, loopback), starts "self serve" as its child and restarts it when it exits,
// reaps every orphan the guest's commands leave, and shuts the guest down when asked by
// signal: it ends all processes (SIGTERM, then SIGKILL after stopGrace), makes the file
// systems read-only and powers off or reboots. It returns only when setup fails.
func RunInit(self string, logf func(string, ...any)) error {
	setUpSystem(logf)
	// Ctrl-Alt-Del (the VMM's reset key) becomes SIGINT to init instead of an instant reboot.
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)

	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2,
		syscall.SIGPWR, sigHalt, sigRTPoweroff, sigReboot)

	sup := &supervisor{self: self, logf: logf}
	sup.start()
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			if sup.reap() {
				time.AfterFunc(200*time.Millisecond, sup.start)
			}
			continue
		}
		if action := initAction(sig); action != actionNone {
			logf("init: %v: %s", sig, action)
			shutdown(sup, action, logf)
		}
	}
	return errors.New("init: signal channel closed")
}

// supervisor keeps "banger-agent serve" running.
type supervisor struct {
	self string
	logf func(string, ...any)

	mu       sync.Mutex
	pid      int
	stopping bool
}

func (s *supervisor) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping || s.pid != 0 {
		return
	}
	cmd := exec.Command(s.self, "serve")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		s.logf("init: start agent: %v", err)
		return
	}
	// The child is reaped by reap (wait4 on every pid), never by cmd.Wait.
	s.pid = cmd.Process.Pid
	_ = cmd.Process.Release()
}

// reap collects every exited child and reports whether the agent server was among them.
func (s *supervisor) reap() (agentExited bool) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return agentExited
		}
		s.mu.Lock()
		if pid == s.pid {
			s.pid = 0
			agentExited = !s.stopping
			s.logf("init: agent server exited (%s); restarting it", describeWait(ws))
		}
		s.mu.Unlock()
	}
}

func describeWait(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("exit %d", ws.ExitStatus())
}

// shutdown ends every process, makes the file systems read-only and powers off or reboots.
func shutdown(sup *supervisor, action string, logf func(string, ...any)) {
	sup.mu.Lock()
	sup.stopping = true
	sup.mu.Unlock()
	_ = unix.Kill(-1, unix.SIGTERM) // every process but init
	deadline := time.Now().Add(stopGrace)
	for time.Now().Before(deadline) {
		sup.reap()
		if !hasChildren() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = unix.Kill(-1, unix.SIGKILL)
	for i := 0; i < 40 && hasChildren(); i++ {
		sup.reap()
		time.Sleep(25 * time.Millisecond)
	}
	unix.Sync()
	// The overlay root first (it holds the VM disk's upper layer), then the disk itself and
	// whatever else is mounted, deepest first; read-only mounts need nothing.
	for _, m := range remountOrder() {
		_ = unix.Mount("", m, "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
	}
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if action == actionReboot {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	logf("init: %s", action)
	if err := unix.Reboot(cmd); err != nil {
		logf("init: %s: %v", action, err)
	}
	os.Exit(1) // the kernel panics on init's exit, which the VMM also ends on (panic=-1)
}

// hasChildren reports whether init still has a child process (running or not yet reaped).
func hasChildren() bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return !errors.Is(err, unix.ECHILD)
}

// remountOrder lists the writable mount points to make read-only at shutdown: / first, then the
// others deepest first.
func remountOrder() []string {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return []string{"/"}
	}
	out := []string{"/"}
	var rest []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[1] == "/" || !strings.Contains(","+f[3]+",", ",rw,") {
			continue
		}
		switch f[2] {
		case "proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "cgroup2", "mqueue":
			continue
		}
		rest = append(rest, f[1])
	}
	for i := len(rest) - 1; i >= 0; i-- { // /proc/self/mounts lists parents before children
		out = append(out, rest[i])
	}
	return out
}

// setUpSystem does what systemd would: pseudo-terminals, shared memory, the cgroup hierarchy,
// the /dev/fd links, /tmp, the hostname from the kernel command line and the loopback
// interface. Failures are logged, not fatal: exec works without most of them.
func setUpSystem(logf func(string, ...any)) {
	for _, m := range []struct {
		src, dst, fstype string
		flags            uintptr
		data             string
		mode             os.FileMode
	}{
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666", 0o755},
		{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
		{"mqueue", "/dev/mqueue", "mqueue", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o755},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o755},
	} {
		if err := os.MkdirAll(m.dst, m.mode); err != nil {
			logf("init: mkdir %s: %v", m.dst, err)
			continue
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			logf("init: mount %s on %s: %v", m.fstype, m.dst, err)
		}
	}
	for name, target := range map[string]string{"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2", "/dev/ptmx": "pts/ptmx"} {
		if name == "/dev/ptmx" {
			if _, err := os.Stat(name); err == nil {
				continue // devtmpfs made the node; it finds /dev/pts by itself
			}
		}
		_ = os.Symlink(target, name)
	}
	if fi, err := os.Stat("/tmp"); err != nil {
		if err := os.Mkdir("/tmp", 0o1777); err == nil {
			_ = os.Chmod("/tmp", 0o1777)
		}
	} else if !fi.IsDir() {
		logf("init: /tmp is not a directory")
	}
	if b, err := os.ReadFile("/proc/cmdline"); err == nil {
		if name := cmdlineValue(string(b), "systemd.hostname"); name != "" {
			if err := unix.Sethostname([]byte(name)); err != nil {
				logf("init: set hostname %s: %v", name, err)
			}
		}
	}
	if err := loopbackUp(); err != nil {
		logf("init: loopback: %v", err)
	}
}

// cmdlineValue returns the value of key=value on a kernel command line.
func cmdlineValue(cmdline, key string) string {
	for _, f := range strings.Fields(cmdline) {
		if k, v, ok := strings.Cut(f, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// loopbackUp brings lo up, as systemd does before anything else.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}
