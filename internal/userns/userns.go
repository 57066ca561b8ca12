// Package userns runs programs, and registered pieces of banger's own code, inside a user
// namespace, so that an ordinary user can make file trees with any ownership — what image
// builds, OCI flattening and kernel module disks need — without root.
//
// # The mapping
//
// Inside, id 0 is the caller (its uid and its primary gid) and ids 1..N are the caller's
// subordinate ids from /etc/subuid and /etc/subgid (the first range of at least MinIDs ids).
// Whatever the caller's own code creates on the host is owned by root inside, every path the
// caller can reach stays reachable (root inside is the caller outside), and root inside holds
// every capability over the namespace: it can chown to 1..N, make setuid files, set file
// capabilities and mount proc and tmpfs in its own mount namespace. A tool run inside sees
// exactly the ids an image records: mkfs.ext4 -d run inside writes uid 0 for the caller's
// files and uid k for subordinate id Start+k-1.
//
// The maps are written by newuidmap and newgidmap (Debian package uidmap), the setuid helpers
// that check /etc/subuid and /etc/subgid: an unprivileged process can map no id but its own.
//
// # How a process gets in
//
// Go cannot unshare a user namespace from a running, multithreaded process, so the namespace
// is made by clone(2) when the child starts (exec.Cmd with Cloneflags CLONE_NEWUSER,
// CLONE_NEWNS and CLONE_NEWPID). Its maps can only be written from outside, after it exists,
// so the child must wait for them before running anything. The child is the current binary
// again (/proc/self/exe), under a hidden entry point (Init):
//
//  1. the parent starts the child, runs newuidmap and newgidmap on its pid, and then writes
//     "go" to a pipe the child holds as fd 3 (or closes it without, on failure);
//  2. the child (stage "wait") reads the pipe; on "go" it is uid 0 in the namespace but has no
//     capabilities, which it lost when it was exec'd as an unmapped user; it execs itself again;
//  3. the child (stage "init"), exec'd as uid 0, holds every capability in the namespace. It is
//     PID 1 of its own PID namespace, asks for SIGKILL if the parent dies, and either runs a
//     registered Go function itself or starts the external program, forwards termination
//     signals to it and exits with its status. When it exits, the kernel kills every process
//     left in the namespace: nothing a build starts outlives it.
//
// Every binary that uses this package calls Init first thing in main (tests: in TestMain).
//
// # What root inside may do
//
// Root inside is the caller on the host: whatever runs there (package maintainer scripts, in
// mmdebstrap's chroot) can reach what the caller can, plus the subordinate ids' files. That is
// less than a root build gives them (real root), and more than mmdebstrap's own mapping, which
// leaves the caller unmapped; it is what lets the tree live in the caller's state directory
// and every step share one mapping.
package userns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Mapping says how a namespace maps ids: inside 0 is UID (GID), inside 1..SubUID.Count is
// SubUID (likewise for groups). A zero SubUID or SubGID maps the caller alone.
type Mapping struct {
	UID, GID       uint32
	SubUID, SubGID Range
}

// HasSubordinate reports whether the mapping maps subordinate ids besides the caller.
func (m Mapping) HasSubordinate() bool { return m.SubUID.Count > 0 && m.SubGID.Count > 0 }

func (m Mapping) String() string {
	return fmt.Sprintf("uid 0→%d 1..→%v, gid 0→%d 1..→%v", m.UID, m.SubUID, m.GID, m.SubGID)
}

// ForCaller returns the mapping for the calling process's user. The error says what is
// missing, with the fix: newuidmap or newgidmap not installed, or no subordinate ids (then it
// wraps ErrNoSubordinate and the returned mapping, valid, maps the caller alone).
func ForCaller() (Mapping, error) {
	m := Mapping{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	for _, tool := range []string{"newuidmap", "newgidmap"} {
		if _, err := lookTool(tool); err != nil {
			return m, fmt.Errorf("%s not found: working as an ordinary user needs it; install it (apt-get install uidmap)", tool)
		}
	}
	name := UserName(m.UID)
	uids, uerr := ReadSubIDFile(SubUIDFile)
	gids, gerr := ReadSubIDFile(SubGIDFile)
	if err := errors.Join(uerr, gerr); err != nil {
		return m, err
	}
	var errs []error
	for _, f := range []struct {
		path    string
		entries []Entry
		dst     *Range
	}{{SubUIDFile, uids, &m.SubUID}, {SubGIDFile, gids, &m.SubGID}} {
		r, err := pickRange(Owned(f.entries, name, m.UID), f.path, name)
		if err != nil {
			errs = append(errs, err)
		}
		*f.dst = r
	}
	if len(errs) > 0 {
		m.SubUID, m.SubGID = Range{}, Range{}
		return m, fmt.Errorf("%w; give the user a range (as root): %s", errors.Join(errs...), FixCommand(name, FreeRange(uids, gids)))
	}
	return m, nil
}

// UserName returns the name of the user with the uid, or the uid as a number.
func UserName(uid uint32) string {
	name := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(name); err == nil {
		return u.Username
	}
	return name
}

// FixCommand is the command that gives user the subordinate ids free (from FreeRange).
func FixCommand(user string, free Range) string {
	if free.Count == 0 {
		free = Range{Start: 100000, Count: MinIDs}
	}
	return fmt.Sprintf("usermod --add-subuids %[1]s --add-subgids %[1]s %[2]s", free, user)
}

// Owned returns the ranges of entries that belong to the user called name or with the
// numeric id, in order.
func Owned(entries []Entry, name string, id uint32) []Range {
	idText := strconv.FormatUint(uint64(id), 10)
	var found []Range
	for _, e := range entries {
		if e.Owner == name || e.Owner == idText {
			found = append(found, e.Range)
		}
	}
	return found
}

// ReadSubIDFile reads a subordinate id file (an absent one has no entries).
func ReadSubIDFile(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	entries, err := ParseSubIDFile(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return entries, nil
}

// Stage markers: os.Args[0] of a process started by Cmd.
const (
	argWait = "banger-userns-wait"
	argInit = "banger-userns-init"
)

// Modes of the init stage.
const (
	modeExec = "exec"
	modeFunc = "func"
)

// goAhead is what the parent writes on the pipe once the maps are written.
const goAhead = "go\n"

// Func is a piece of banger's code that runs inside a namespace: it gets the arguments given
// to Mapping.Func and the process's stdin, stdout and stderr. Its error is printed on stderr
// and makes the process exit 1.
type Func func(args []string) error

var (
	funcsMu sync.Mutex
	funcs   = map[string]Func{}
)

// Register makes fn runnable inside a namespace under name. Packages register their
// functions from init, so that the binary re-executed by Cmd knows them before Init runs.
func Register(name string, fn Func) {
	funcsMu.Lock()
	defer funcsMu.Unlock()
	if _, dup := funcs[name]; dup {
		panic("userns: " + name + " registered twice")
	}
	funcs[name] = fn
}

// Init runs the hidden entry point when the process was started by a Cmd, and never returns
// then; otherwise it returns at once. Call it first thing in main, and in TestMain of tests
// that use this package.
func Init() {
	if len(os.Args) < 3 {
		return
	}
	switch os.Args[0] {
	case argWait:
		os.Exit(waitStage())
	case argInit:
		os.Exit(initStage(os.Args[1], os.Args[2], os.Args[3:]))
	}
}

// waitStage waits for the maps, then execs the init stage (which gains the capabilities).
func waitStage() int {
	pipe := os.NewFile(3, "userns-go-ahead")
	buf := make([]byte, len(goAhead))
	n, _ := io.ReadFull(pipe, buf)
	pipe.Close()
	if string(buf[:n]) != goAhead {
		fmt.Fprintln(os.Stderr, "banger: user namespace: the parent did not map ids (see its error)")
		return 125
	}
	if os.Getuid() != 0 {
		fmt.Fprintf(os.Stderr, "banger: user namespace: uid is %d after mapping, want 0\n", os.Getuid())
		return 125
	}
	args := append([]string{argInit}, os.Args[1:]...)
	err := syscall.Exec("/proc/self/exe", args, os.Environ())
	fmt.Fprintf(os.Stderr, "banger: user namespace: exec %s: %v\n", "/proc/self/exe", err)
	return 125
}

// initStage runs as PID 1 of the namespace, with every capability in it.
func initStage(mode, target string, args []string) int {
	// The parent that matters is the daemon (the wait stage exec'd in place): if it dies, so
	// does this process, and with it every process of the PID namespace.
	_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0, 0, 0)
	switch mode {
	case modeFunc:
		funcsMu.Lock()
		fn := funcs[target]
		funcsMu.Unlock()
		if fn == nil {
			fmt.Fprintf(os.Stderr, "banger: user namespace: no function %q in this binary\n", target)
			return 125
		}
		if err := fn(args); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	case modeExec:
		return runChild(target, args)
	}
	fmt.Fprintf(os.Stderr, "banger: user namespace: unknown mode %q\n", mode)
	return 125
}

// runChild runs an external program as init's child, forwarding termination signals (PID 1
// gets only the signals it handles), and returns the exit status to exit with.
func runChild(name string, args []string) int {
	cmd := exec.Command(name, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	sigs := make(chan os.Signal, 4)
	notifyTermination(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "banger: user namespace: %v\n", err)
		return 127
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	if err == nil {
		return 0
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return exitErr.ExitCode()
	}
	fmt.Fprintf(os.Stderr, "banger: user namespace: %v\n", err)
	return 125
}

// Cmd is a command that runs inside a new user namespace (with its own mount and PID
// namespaces) mapped by a Mapping. Set up the embedded exec.Cmd (Stdin, Stdout, Stderr, Env,
// Dir, SysProcAttr.Setpgid, …) as usual, but do not replace SysProcAttr, Path or Args; Start
// puts its pipe first in ExtraFiles (fd 3), so extra files come at fd 4 on.
type Cmd struct {
	*exec.Cmd
	m Mapping
}

// Command returns a Cmd that runs the program name (looked up in the PATH of its environment,
// inside) with args.
func (m Mapping) Command(name string, args ...string) *Cmd {
	return m.cmd(context.Background(), modeExec, name, args)
}

// CommandContext is Command with a context: when ctx ends, the namespace's init is killed
// (SIGKILL), and the kernel kills every process in it.
func (m Mapping) CommandContext(ctx context.Context, name string, args ...string) *Cmd {
	return m.cmd(ctx, modeExec, name, args)
}

// Func returns a Cmd that runs the function registered as name with args (see Register).
func (m Mapping) Func(ctx context.Context, name string, args ...string) *Cmd {
	return m.cmd(ctx, modeFunc, name, args)
}

func (m Mapping) cmd(ctx context.Context, mode, target string, args []string) *Cmd {
	c := exec.CommandContext(ctx, "/proc/self/exe")
	c.Args = append([]string{argWait, mode, target}, args...)
	c.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		Pdeathsig:  syscall.SIGKILL,
	}
	return &Cmd{Cmd: c, m: m}
}

// mapTimeout bounds newuidmap and newgidmap.
const mapTimeout = 30 * time.Second

// Start starts the command, maps its ids and lets it run. When mapping fails, the child is
// killed and reaped, and the error says why.
func (c *Cmd) Start() error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("user namespace: %w", err)
	}
	c.ExtraFiles = append([]*os.File{r}, c.ExtraFiles...)
	err = c.Cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("user namespace: start %s: %w (are unprivileged user namespaces disabled? see `banger doctor`)", c.what(), err)
		}
		return fmt.Errorf("user namespace: start %s: %w", c.what(), err)
	}
	if err := c.m.write(c.Process.Pid); err != nil {
		w.Close() // the child sees no go-ahead and exits
		_ = c.Process.Kill()
		_ = c.Cmd.Wait()
		return err
	}
	_, err = io.WriteString(w, goAhead)
	w.Close()
	if err != nil {
		_ = c.Process.Kill()
		_ = c.Cmd.Wait()
		return fmt.Errorf("user namespace: start %s: %w", c.what(), err)
	}
	return nil
}

// Run starts the command and waits for it. The calling goroutine keeps its thread meanwhile:
// the child's parent-death signal fires when the thread that started it exits, and Go lets a
// thread exit when a goroutine that locked it ends (the caller of Start must see to that).
func (c *Cmd) Run() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := c.Start(); err != nil {
		return err
	}
	return c.Wait()
}

// Output runs the command and returns its stdout. On failure the error quotes the end of its
// stderr.
func (c *Cmd) Output() ([]byte, error) {
	var out bytes.Buffer
	errOut := &tailBuffer{max: 4000}
	c.Stdout, c.Stderr = &out, errOut
	err := c.Run()
	if err != nil {
		if msg := strings.TrimSpace(errOut.String()); msg != "" {
			return out.Bytes(), fmt.Errorf("%s: %w: %s", c.what(), err, msg)
		}
		return out.Bytes(), fmt.Errorf("%s: %w", c.what(), err)
	}
	return out.Bytes(), nil
}

func (c *Cmd) what() string {
	if len(c.Args) > 2 {
		return c.Args[2]
	}
	return "command"
}

// write writes the namespace's maps with newuidmap and newgidmap.
func (m Mapping) write(pid int) error {
	for _, t := range []struct {
		tool string
		id   uint32
		sub  Range
	}{{"newuidmap", m.UID, m.SubUID}, {"newgidmap", m.GID, m.SubGID}} {
		path, err := lookTool(t.tool)
		if err != nil {
			return fmt.Errorf("user namespace: %s not found; install it (apt-get install uidmap)", t.tool)
		}
		args := []string{strconv.Itoa(pid), "0", strconv.FormatUint(uint64(t.id), 10), "1"}
		if t.sub.Count > 0 {
			args = append(args, "1", strconv.FormatUint(uint64(t.sub.Start), 10), strconv.FormatUint(uint64(t.sub.Count), 10))
		}
		ctx, cancel := context.WithTimeout(context.Background(), mapTimeout)
		out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("user namespace: %s %s: %w: %s; check the user's ranges in %s and %s (banger doctor)",
				t.tool, strings.Join(args, " "), err, strings.TrimSpace(string(out)), SubUIDFile, SubGIDFile)
		}
	}
	return nil
}

// sbinPath holds the directories new[ug]idmap live in, which a daemon's PATH may lack.
var sbinPath = []string{"/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin", "/usr/local/sbin"}

func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range sbinPath {
		p := dir + "/" + name
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// LookTool finds newuidmap or newgidmap (or another program) in PATH or the usual bin
// directories.
func LookTool(name string) (string, error) { return lookTool(name) }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }

// notifyTermination relays the signals that ask a program to stop.
func notifyTermination(c chan<- os.Signal) {
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
}

// ForTrees returns the namespace in which to make file trees of any ownership (image trees):
// nil for root, who needs none, and otherwise the caller's mapping, which must include
// subordinate ids; the error says what is missing and how to fix it.
func ForTrees() (*Mapping, error) {
	if os.Geteuid() == 0 {
		return nil, nil
	}
	m, err := ForCaller()
	if err != nil {
		return nil, fmt.Errorf("without root, banger makes image trees in a user namespace: %w", err)
	}
	return &m, nil
}
