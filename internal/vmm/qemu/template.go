package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/vmm"
)

// Snapshots of machines whose RAM is not shared.
//
// A machine restored from a snapshot maps its RAM privately from the snapshot's memory file
// (copy-on-write), so QEMU cannot leave that RAM out of a migration stream: x-ignore-shared
// skips only shared RAM. Saved as it is, the snapshot would carry all the guest's RAM in its
// stream, and each machine restored from it would load a private copy of all of it (8 clones
// of a warm-started VM used 4.3 times the memory of 8 cold-booted VMs).
//
// So Snapshot migrates such a machine into a template: a second QEMU with the same devices,
// started paused with -incoming, whose RAM is the snapshot's memory file mapped shared. The
// stream goes over a socket, never to disk. The template's vCPUs never run. When it has loaded
// the stream, it saves itself with x-ignore-shared into the snapshot's state file, and is
// killed: its RAM, written page by page into the memory file, stays there. Zero pages the
// stream carries only as a flag are never written, so the file is sparse where the guest's RAM
// is zero, as a copy of a cold-booted machine's memfd is. The snapshot has the same shape as
// one of a cold-booted machine: restored machines map its memory file privately and share the
// pages none of them wrote.
//
// The template has nothing of its own outside the process: its QMP monitor is one end of a
// socket pair, its agent port a listening socket without a name, its disks null block devices
// (the guest never runs in it, and a template must not take the source's disk locks), its NIC a
// tap that QEMU creates in a network namespace of the template's own, which goes with the
// process — or, for a daemon that is not root and cannot make namespaces, a scratch tap from
// the driver's ScratchTap (banger's root helper makes it; nothing is admitted on it, and it is
// removed after the snapshot, or at the next daemon start after a crash). It is killed when the daemon dies (parent-death signal), and its only file is the
// memory file in the snapshot's directory, which a failed Snapshot removes and a daemon
// restart finds in the snapshot store's staging area.

// templateWait bounds how long a template takes to answer on its QMP socket.
const templateWait = 15 * time.Second

// template is a QEMU process that receives a machine's migration stream.
type template struct {
	qmp    *qmpSession
	agent  *os.File // the listening socket of the template's agent port
	done   chan struct{}
	mu     sync.Mutex
	stderr []byte // the first templateLog bytes QEMU wrote to stderr
	pid    int
	proc   *os.Process
}

// templateLog bounds what a template's stderr keeps for error messages.
const templateLog = 4 << 10

// Write collects QEMU's stderr, up to templateLog bytes.
func (t *template) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if room := templateLog - len(t.stderr); room > 0 {
		t.stderr = append(t.stderr, b[:min(room, len(b))]...)
	}
	return len(b), nil
}

func (t *template) log() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.stderr))
}

// kill ends the template and waits until it is gone.
func (t *template) kill() error {
	if t.qmp != nil {
		t.qmp.Close()
	}
	if t.agent != nil {
		t.agent.Close()
	}
	// By its os.Process (a pidfd), never by the bare pid: a template that has exited and been
	// reaped has a pid the host may have given to another process already.
	if t.proc != nil {
		_ = t.proc.Kill()
	}
	select {
	case <-t.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("template QEMU (pid %d) still runs 10s after SIGKILL", t.pid)
	}
}

// reshapable says whether a machine of shape sh can be saved through a template: its record
// has what the template's devices need (machines started by an older banger lack it).
func (sh shape) reshapable() bool { return len(sh.DiskReadOnly) == sh.Disks }

// templateArgs is the command line of a template for a machine of shape sh: the machine's own
// (args), with the RAM in the file memPath mapped shared, null disks, the tap on file
// descriptor tapFD (< 0: one named in the template's own network namespace), the agent port
// and the QMP monitor on file descriptors agentFD and qmpFD, no kernel (the RAM comes from the stream), and the vCPUs stopped (-S) so
// that they stay stopped once the stream is loaded.
func templateArgs(sh shape, memPath string, agentFD, qmpFD, tapFD int) []string {
	cfg := vmm.Config{ID: "template", Name: "template", VCPU: sh.VCPU, MemoryMiB: sh.MemoryMiB, Accel: sh.Accel,
		Kernel: "none", ShareMemory: true}
	for _, ro := range sh.DiskReadOnly {
		cfg.Disks = append(cfg.Disks, vmm.Disk{Path: "none", ReadOnly: ro})
	}
	if sh.NIC {
		cfg.NIC = &vmm.NIC{Tap: "template", MAC: "02:00:00:00:00:01"}
	}
	in := (&Driver{}).args(cfg, []string{"-chardev", "null,id=console"})
	var out []string
	for i := 0; i < len(in); i++ {
		flag, value := in[i], ""
		if i+1 < len(in) {
			value = in[i+1]
		}
		switch {
		case flag == "-kernel" || flag == "-append" || flag == "-initrd":
			i++
			continue
		case flag == "-object" && strings.HasPrefix(value, "memory-backend-"):
			value = "memory-backend-file,id=" + ramID + ",size=" + strconv.Itoa(sh.MemoryMiB) + "M,mem-path=" + optValue(memPath) + ",share=on"
		case flag == "-drive":
			id, _, _ := strings.Cut(value, ",")
			value = id + ",driver=null-co,if=none"
			if strings.Contains(in[i+1], ",readonly=on") {
				value += ",readonly=on"
			}
		case flag == "-netdev" && tapFD >= 0:
			value = "tap,id=net0,fd=" + strconv.Itoa(tapFD)
		case flag == "-netdev":
			value = "tap,id=net0,ifname=template,script=no,downscript=no"
		case flag == "-chardev" && strings.HasPrefix(value, "socket,id=agent,"):
			value = "socket,id=agent,fd=" + strconv.Itoa(agentFD) + ",server=on,wait=off"
		case flag == "-qmp":
			out = append(out, "-chardev", "socket,id=qmp,fd="+strconv.Itoa(qmpFD), "-mon", "chardev=qmp,mode=control")
			i++
			continue
		default:
			out = append(out, flag)
			continue
		}
		out = append(out, flag, value)
		i++
	}
	return append(out, "-S", "-incoming", "defer")
}

// startTemplate starts a template for a machine of shape sh, running the QEMU binary open as
// exe, whose RAM is the new file memPath (which it creates), and connects to its monitor. The template dies with the calling
// process: it is started with a parent-death signal from a thread kept for it until it exits.
//
// Its NIC (when sh has one) is tap, an open tap queue, when tap is not nil; else a tap QEMU
// makes in a network namespace of the template's own (root only).
func startTemplate(ctx context.Context, exe *os.File, sh shape, memPath string, tap *os.File) (_ *template, err error) {
	// The memory file is made here, so that a file that is there already is never written.
	mf, err := os.OpenFile(memPath, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("guest RAM: %w", err)
	}
	mf.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("template monitor: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "qmp"), os.NewFile(uintptr(fds[1]), "template qmp")
	defer theirs.Close()
	agent, err := listenUnnamed()
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("template agent port: %w", err)
	}
	t := &template{agent: agent, done: make(chan struct{})}
	defer func() {
		if err != nil {
			if t.pid != 0 {
				_ = t.kill()
			} else {
				agent.Close()
			}
		}
	}()
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		return nil, fmt.Errorf("template monitor: %w", err)
	}

	// Executed by its descriptor in the child (fd 5), not looked up by a name.
	const bin = "/proc/self/fd/5"
	tapFD := -1
	if sh.NIC && tap != nil {
		tapFD = 6
	}
	cmd := &exec.Cmd{Path: bin, Args: append([]string{"qemu-system-x86_64"}, templateArgs(sh, memPath, 4, 3, tapFD)...)}
	cmd.ExtraFiles = []*os.File{theirs, agent, exe}
	if tapFD >= 0 {
		cmd.ExtraFiles = append(cmd.ExtraFiles, tap)
	}
	cmd.Stdout, cmd.Stderr = t, t
	cmd.Dir = filepath.Dir(memPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if sh.NIC && tapFD < 0 {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNET
	}
	started := make(chan error, 1)
	go func() {
		// A parent-death signal is sent when the thread that forked the child ends: this
		// thread stays, locked to this goroutine, until the template is gone.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(t.done)
	}()
	if err := <-started; err != nil {
		conn.Close()
		return nil, fmt.Errorf("start template QEMU %s: %w", exe.Name(), err)
	}
	t.pid, t.proc = cmd.Process.Pid, cmd.Process
	qctx, cancel := context.WithTimeout(ctx, templateWait)
	defer cancel()
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		// The greeting never comes if QEMU exits or hangs: end the wait for it.
		select {
		case <-t.done:
		case <-qctx.Done():
		case <-stop:
			return
		}
		_ = conn.SetDeadline(time.Now())
	}()
	s, err := startQMP(qctx, conn.(*net.UnixConn))
	close(stop)
	<-stopped
	if err != nil {
		select {
		case <-t.done:
			return nil, fmt.Errorf("template QEMU exited: %s", t.log())
		default:
		}
		return nil, fmt.Errorf("template QEMU: %w", err)
	}
	t.qmp = s
	// startQMP set the deadline from qctx; the session lasts as long as ctx.
	if dl, ok := ctx.Deadline(); ok {
		_ = s.conn.SetDeadline(dl)
	} else {
		_ = s.conn.SetDeadline(time.Time{})
	}
	return t, nil
}

// listenUnnamed returns a listening unix socket bound to no name (autobind: an abstract
// address the kernel picks, gone with the socket).
func listenUnnamed() (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	// An empty name asks the kernel to pick an abstract one.
	if err := unix.Bind(fd, &unix.SockaddrUnix{}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Listen(fd, 1); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "template agent"), nil
}

// saveThroughTemplate saves the machine (stopped; its QMP session src) into dir through a
// template: see the comment at the top of this file. It writes the state file and the memory
// file; the caller removes them if it fails.
func (m *machine) saveThroughTemplate(ctx context.Context, src *qmpSession, dir string, sh shape) (err error) {
	// The template runs the machine's own binary, even if QEMU was upgraded since: its
	// devices and RAM blocks are the machine's. It is opened, then the machine's process is
	// checked to be the one recorded, so that a pid reused meanwhile never has its binary run.
	exe, err := os.Open("/proc/" + strconv.Itoa(m.rec.PID) + "/exe")
	if err != nil {
		return fmt.Errorf("the machine's QEMU binary: %w", err)
	}
	defer exe.Close()
	if st, err := vmm.StartTime(m.rec.PID); err != nil || st != m.rec.StartTime {
		return fmt.Errorf("the machine's QEMU (pid %d) is gone", m.rec.PID)
	}
	var tap *os.File
	if sh.NIC && m.scratchTap != nil {
		var release func()
		if tap, release, err = m.scratchTap(); err != nil {
			return fmt.Errorf("a tap for the template: %w", err)
		}
		defer release()
		defer tap.Close()
	}
	t, err := startTemplate(ctx, exe, sh, filepath.Join(dir, memoryFile), tap)
	if err != nil {
		return err
	}
	defer func() {
		if kerr := t.kill(); kerr != nil {
			err = errors.Join(err, kerr)
		}
	}()
	// The template's agent port is connected if the machine's is, so that the clones' guests
	// are told what the machine's was (a port whose host end goes away is an event to them).
	if connected, err := agentConnected(src); err != nil {
		return err
	} else if connected {
		c, err := dialListener(t.agent)
		if err != nil {
			return fmt.Errorf("template agent port: %w", err)
		}
		defer c.Close()
	}

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("migration socket: %w", err)
	}
	out, in := os.NewFile(uintptr(fds[0]), "migration out"), os.NewFile(uintptr(fds[1]), "migration in")
	err = t.qmp.runWithFile("getfd", map[string]string{"fdname": "incoming"}, nil, in)
	in.Close()
	if err != nil {
		out.Close()
		return fmt.Errorf("template QEMU: %w", err)
	}
	if err := t.qmp.run("migrate-incoming", map[string]string{"uri": "fd:incoming"}, nil); err != nil {
		out.Close()
		return fmt.Errorf("template QEMU: %w", err)
	}
	// The default bandwidth cap (32 MiB/s) throttles all but the last round of a migration,
	// meant for a live one; this one goes to a local socket with the vCPUs stopped.
	if err := src.run("migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}, nil); err != nil {
		out.Close()
		return err
	}
	noShared := map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": false}}}
	if err := src.run("migrate-set-capabilities", noShared, nil); err != nil {
		out.Close()
		return err
	}
	err = src.runWithFile("getfd", map[string]string{"fdname": "snapshot"}, nil, out)
	out.Close()
	if err != nil {
		return err
	}
	if err := src.run("migrate", map[string]string{"uri": "fd:snapshot"}, nil); err != nil {
		return err
	}
	if err := waitMigration(ctx, src); err != nil {
		return fmt.Errorf("migrating into the template: %w%s", err, t.exited())
	}
	if err := t.waitLoaded(ctx); err != nil {
		return err
	}

	ignore := map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}}}
	if err := t.qmp.run("migrate-set-capabilities", ignore, nil); err != nil {
		return fmt.Errorf("template QEMU: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, stateFile), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = t.qmp.runWithFile("getfd", map[string]string{"fdname": "snapshot"}, nil, f)
	f.Close()
	if err != nil {
		return fmt.Errorf("template QEMU: %w", err)
	}
	if err := t.qmp.run("migrate", map[string]string{"uri": "fd:snapshot"}, nil); err != nil {
		return fmt.Errorf("template QEMU: %w", err)
	}
	if err := waitMigration(ctx, t.qmp); err != nil {
		return fmt.Errorf("template QEMU: save: %w%s", err, t.exited())
	}
	return nil
}

// waitLoaded waits until the template has loaded the incoming stream, and checks that its vCPUs
// stayed stopped.
func (t *template) waitLoaded(ctx context.Context) error {
	for {
		st, err := t.qmp.status()
		if err != nil {
			return fmt.Errorf("template QEMU: %w%s", err, t.exited())
		}
		switch st {
		case "inmigrate":
		case "running":
			return errors.New("template QEMU: its vCPUs run after loading the stream; they must stay stopped")
		case "paused", "prelaunch", "postmigrate":
			return nil
		default:
			return fmt.Errorf("template QEMU: it is %q after loading the stream%s", st, t.exited())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("template QEMU: loading the stream did not finish: %w", ctx.Err())
		case <-t.done:
			return fmt.Errorf("template QEMU exited while loading the stream: %s", t.log())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// exited is ": template QEMU exited: <its stderr>" once the template is gone, "" otherwise.
func (t *template) exited() string {
	select {
	case <-t.done:
		return "; template QEMU exited: " + t.log()
	case <-time.After(100 * time.Millisecond):
		return ""
	}
}

// agentConnected asks QEMU whether a client is connected to the machine's agent socket.
func agentConnected(s *qmpSession) (bool, error) {
	var chardevs []struct {
		Label    string `json:"label"`
		Filename string `json:"filename"`
	}
	if err := s.run("query-chardev", nil, &chardevs); err != nil {
		return false, err
	}
	for _, c := range chardevs {
		if c.Label == "agent" {
			return !strings.HasPrefix(c.Filename, "disconnected:"), nil
		}
	}
	return false, nil
}

// dialListener connects to the listening unix socket l (by its address).
func dialListener(l *os.File) (*os.File, error) {
	sa, err := unix.Getsockname(int(l.Fd()))
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "template agent client"), nil
}
