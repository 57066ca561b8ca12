package image

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/banger-dev/banger/internal/ext4"
	"github.com/banger-dev/banger/internal/userns"
)

const (
	// tailLines is how many lines of a failed tool's output an error message quotes, and
	// maxTailLine how much of each (the log has them whole).
	tailLines   = 10
	maxTailLine = 300
	// drainGrace bounds the wait for output after the tool exited, in case something that
	// escaped its process group still holds the pipe.
	drainGrace = 5 * time.Second
)

// termGrace is how long a cancelled tool gets to clean up (mmdebstrap unmounts /proc, /sys and
// /dev inside the tree) after SIGTERM before its whole process group is killed. A variable for
// tests.
var termGrace = 10 * time.Second

// toolPath is the search path given to tools (debootstrap needs chroot, mount, … from sbin
// even when the daemon runs with a user's PATH).
const toolPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// toolError is a tool that ran and failed.
type toolError struct {
	Tool   string
	Status string   // "exit 1", "signal: killed"
	Tail   []string // the last lines of its output
}

func (e *toolError) Error() string {
	msg := fmt.Sprintf("%s failed (%s)", e.Tool, e.Status)
	if len(e.Tail) > 0 {
		msg += ": last output:\n    " + strings.Join(e.Tail, "\n    ")
	}
	return msg
}

// tool runs external programs for one build. Every line they print goes to log; onLine (may be
// nil) sees each line too.
type tool struct {
	log    io.Writer
	env    []string
	onLine func(line string)
	// ns, when set, is the user namespace programs run in (an unprivileged build).
	ns *userns.Mapping
	mu sync.Mutex // serializes writes to log
}

// run runs name with args in its own process group and waits for it. When ctx ends, the whole
// group gets SIGTERM and, termGrace later, SIGKILL; after the tool exits any process left in
// its group is killed too, so no child (apt, dpkg, a maintainer script) outlives a build.
func (t *tool) run(ctx context.Context, name string, args ...string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("run %s: %w", name, err)
	}
	cmd := exec.Command(name, args...)
	start := cmd.Start
	if t.ns != nil {
		// Inside a user namespace, the tool runs as the child of the namespace's init,
		// which dies with the daemon (SIGKILL, taking every process of the namespace along).
		uc := t.ns.Command(name, args...)
		cmd, start = uc.Cmd, uc.Start
		cmd.SysProcAttr.Setpgid = true
	} else {
		// Pdeathsig: if the daemon dies, the tool gets SIGTERM rather than running on
		// unsupervised. It fires when the thread that started the child exits, hence the
		// locked thread.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	}
	cmd.Env = t.env
	cmd.Stdout = pw // an *os.File: the child writes to it directly, Wait never waits on copies
	cmd.Stderr = pw
	t.logf("$ %s %s\n", name, strings.Join(args, " "))
	if err := start(); err != nil {
		pr.Close()
		pw.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	pw.Close()
	pgid := cmd.Process.Pid
	started := time.Now()

	tail := make([]string, 0, tailLines)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		br := bufio.NewReader(pr)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				line = strings.TrimRight(line, "\r\n")
				t.logf("%s\n", line)
				if len(tail) == tailLines {
					tail = append(tail[:0], tail[1:]...)
				}
				tail = append(tail, shorten(line, maxTailLine))
				if t.onLine != nil {
					t.onLine(line)
				}
			}
			if err != nil {
				return
			}
		}
	}()

	waitDone := make(chan error, 1)
	go func() { waitDone <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-waitDone:
	case <-ctx.Done():
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case werr = <-waitDone:
		case <-time.After(termGrace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			werr = <-waitDone
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // stragglers; ESRCH when there are none
	select {
	case <-readDone:
	case <-time.After(drainGrace):
		pr.Close() // unblocks the reader
		<-readDone
	}
	pr.Close()
	base := filepath.Base(name)
	t.logf("%s: %v after %.2fs\n", base, cmd.ProcessState, time.Since(started).Seconds())

	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s cancelled: %w", base, err)
	}
	if werr != nil {
		var exitErr *exec.ExitError
		status := werr.Error()
		if errors.As(werr, &exitErr) {
			if code := exitErr.ExitCode(); code >= 0 {
				status = fmt.Sprintf("exit %d", code)
			} else {
				status = exitErr.String()
			}
		}
		return &toolError{Tool: base, Status: status, Tail: tail}
	}
	return nil
}

func (t *tool) logf(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.log, format, args...)
}

// toolEnv is the environment for tools: the daemon's, with a sane PATH, a C.UTF-8 locale (stable
// messages) and TMPDIR in the work dir.
func toolEnv(tmpDir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		key, _, _ := strings.Cut(kv, "=")
		switch key {
		case "PATH", "TMPDIR", "LANG", "LANGUAGE", "LC_ALL":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "PATH="+toolPath, "TMPDIR="+tmpDir, "LC_ALL=C.UTF-8")
}

// lookTool finds a program in PATH or, failing that, in the sbin directories a daemon's PATH
// may lack.
func lookTool(name string) (string, error) { return ext4.LookTool(name) }

// toolVersion returns the first line a program prints for its version flag.
func toolVersion(ctx context.Context, path string, flag string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, path, flag).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if line == "" {
		return "unknown"
	}
	return strings.TrimSpace(line)
}

// shorten cuts s to at most n bytes (on a rune boundary), marking the cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + " …"
}
