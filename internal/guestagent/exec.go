package guestagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/wire"
)

// drainGrace is how long output is still collected after the command exits, for background
// children that keep its stdout open; after that the session ends anyway.
const drainGrace = 250 * time.Millisecond

// defaultPath is the PATH commands get unless the request sets one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// commandEnv builds a login-like environment for root, then the image's own environment
// (agent.ImageEnvFile), then the request's entries on top.
func commandEnv(req agent.ExecRequest) []string {
	return buildEnv(req, readImageEnv(agent.ImageEnvFile))
}

// readImageEnv reads KEY=VALUE lines; a missing file is an empty environment.
func readImageEnv(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var env []string
	for _, line := range strings.Split(string(b), "\n") {
		if k, _, ok := strings.Cut(line, "="); ok && k != "" {
			env = append(env, line)
		}
	}
	return env
}

func buildEnv(req agent.ExecRequest, imageEnv []string) []string {
	env := map[string]string{
		"PATH":    defaultPath,
		"HOME":    "/root",
		"USER":    "root",
		"LOGNAME": "root",
		"SHELL":   "/bin/sh",
		"LANG":    "C.UTF-8",
	}
	if _, err := os.Stat("/bin/bash"); err == nil {
		env["SHELL"] = "/bin/bash"
	}
	if req.TTY {
		env["TERM"] = "xterm-256color"
	}
	order := []string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TERM"}
	for _, kv := range slices.Concat(imageEnv, req.Env) {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		if _, seen := env[k]; !seen {
			order = append(order, k)
		}
		env[k] = kv[len(k)+1:]
	}
	out := make([]string, 0, len(env))
	for _, k := range order {
		if v, ok := env[k]; ok {
			out = append(out, k+"="+v)
			delete(env, k)
		}
	}
	return out
}

// lookPath resolves argv0 against the command's own PATH, the way a shell would, and maps
// failures to the shell's exit codes (127 not found, 126 not executable). Relative names
// (./bin/tool, bin/tool) and relative PATH entries resolve against dir, the command's working
// directory, as they do for `sh -c` run there.
func lookPath(argv0 string, env []string, dir string) (string, int, error) {
	if strings.Contains(argv0, "/") {
		p := argv0
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		st, err := os.Stat(p)
		if err != nil {
			return "", 127, fmt.Errorf("%s: %w", argv0, err)
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return "", 126, fmt.Errorf("%s: permission denied", argv0)
		}
		return p, 0, nil
	}
	path := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	denied := ""
	for _, d := range filepath.SplitList(path) {
		if !filepath.IsAbs(d) {
			d = filepath.Join(dir, d) // "" and "." are the working directory
		}
		p := filepath.Join(d, argv0)
		st, err := os.Stat(p)
		if err != nil || st.IsDir() {
			continue
		}
		if st.Mode()&0o111 == 0 {
			denied = p
			continue
		}
		return p, 0, nil
	}
	if denied != "" {
		return "", 126, fmt.Errorf("%s: permission denied", denied)
	}
	return "", 127, fmt.Errorf("%s: command not found", argv0)
}

// inputDone, when set (by tests), is called once a command's input loop has seen its caller go
// away, with the command's pid (its process group) and whether the group was sent SIGHUP.
var inputDone atomic.Pointer[func(pid int, hungUp bool)]

// runExec runs one command for the stream's lifetime and always ends with an Exit frame.
func runExec(lg *log.Logger, r *wire.Reader, w *wire.Writer, req agent.ExecRequest) {
	exit := execute(lg, r, w, req)
	if err := w.WriteJSON(wire.Exit, exit); err != nil {
		lg.Printf("exec %q: send exit status: %v", req.Argv[0], err)
	}
}

func execute(lg *log.Logger, r *wire.Reader, w *wire.Writer, req agent.ExecRequest) wire.ExitMsg {
	env := commandEnv(req)
	dir := req.Dir
	if dir == "" {
		dir = "/root"
		if _, err := os.Stat(dir); err != nil {
			dir = "/"
		}
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return wire.ExitMsg{Code: 1, Error: fmt.Sprintf("working directory %s does not exist in the guest", dir)}
	}
	path, code, err := lookPath(req.Argv[0], env, dir)
	if err != nil {
		return wire.ExitMsg{Code: code, Error: err.Error()}
	}

	cmd := exec.Command(path, req.Argv[1:]...)
	cmd.Args[0] = req.Argv[0]
	cmd.Env = env
	cmd.Dir = dir

	var (
		stdin   io.WriteCloser
		outputs []io.ReadCloser
		tty     *os.File
	)
	if req.TTY {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		size := &pty.Winsize{Rows: req.Rows, Cols: req.Cols}
		if size.Rows == 0 || size.Cols == 0 {
			size = &pty.Winsize{Rows: 24, Cols: 80}
		}
		tty, err = pty.StartWithAttrs(cmd, size, cmd.SysProcAttr)
		if err != nil {
			return startFailure(req.Argv[0], err)
		}
		stdin = tty
		outputs = []io.ReadCloser{tty}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		inR, inW, err := os.Pipe()
		if err != nil {
			return wire.ExitMsg{Code: 1, Error: fmt.Sprintf("create pipe: %v", err)}
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			inR.Close()
			inW.Close()
			return wire.ExitMsg{Code: 1, Error: fmt.Sprintf("create pipe: %v", err)}
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			inR.Close()
			inW.Close()
			outR.Close()
			outW.Close()
			return wire.ExitMsg{Code: 1, Error: fmt.Sprintf("create pipe: %v", err)}
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
		err = cmd.Start()
		inR.Close()
		outW.Close()
		errW.Close()
		if err != nil {
			inW.Close()
			outR.Close()
			errR.Close()
			return startFailure(req.Argv[0], err)
		}
		stdin = inW
		outputs = []io.ReadCloser{outR, errR}
	}
	pid := cmd.Process.Pid

	// Output pumps.
	var pumps sync.WaitGroup
	for i, out := range outputs {
		t := wire.Stdout
		if i == 1 {
			t = wire.Stderr
		}
		pumps.Add(1)
		go func(out io.Reader, t wire.Type) {
			defer pumps.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := out.Read(buf)
				if n > 0 {
					if w.Write(t, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}(out, t)
	}

	// Input from the caller: stdin, signals, resizes. When the caller goes away, the command
	// gets SIGHUP, as it would when a terminal closes.
	var stdinOnce sync.Once
	closeStdin := func() { stdinOnce.Do(func() { stdin.Close() }) }
	// exited is set once the command has exited: from then on its process group may hold
	// background processes it started on purpose, which a hangup must not reach.
	var exited atomic.Bool
	go func() {
		for {
			t, p, err := r.Next()
			if err != nil {
				hungUp := !exited.Load()
				if hungUp {
					_ = syscall.Kill(-pid, syscall.SIGHUP)
				}
				if !req.TTY {
					closeStdin()
				}
				if f := inputDone.Load(); f != nil {
					(*f)(pid, hungUp)
				}
				return
			}
			switch t {
			case wire.Stdin:
				if _, err := stdin.Write(p); err != nil && !req.TTY {
					closeStdin()
				}
			case wire.StdinEOF:
				if req.TTY {
					_, _ = stdin.Write([]byte{4}) // ^D: end of input at the line discipline
				} else {
					closeStdin()
				}
			case wire.Signal:
				var m wire.SignalMsg
				if json.Unmarshal(p, &m) == nil && m.Signal > 0 && m.Signal < 65 {
					_ = syscall.Kill(-pid, syscall.Signal(m.Signal))
				}
			case wire.Resize:
				var m wire.ResizeMsg
				if tty != nil && json.Unmarshal(p, &m) == nil {
					_ = pty.Setsize(tty, &pty.Winsize{Rows: m.Rows, Cols: m.Cols})
				}
			}
		}
	}()

	waitErr := cmd.Wait()
	exited.Store(true)
	drained := make(chan struct{})
	go func() { pumps.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainGrace):
		lg.Printf("exec %q: output still open after exit (background process?); ending session", req.Argv[0])
	}
	for _, out := range outputs {
		out.Close()
	}
	if !req.TTY {
		closeStdin()
	}
	<-drained
	return exitStatus(cmd.ProcessState, waitErr)
}

func startFailure(argv0 string, err error) wire.ExitMsg {
	code := 126
	if errors.Is(err, fs.ErrNotExist) {
		code = 127
	}
	return wire.ExitMsg{Code: code, Error: fmt.Sprintf("start %s: %v", argv0, err)}
}

func exitStatus(ps *os.ProcessState, waitErr error) wire.ExitMsg {
	if ps == nil {
		return wire.ExitMsg{Code: 1, Error: fmt.Sprintf("wait: %v", waitErr)}
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		sig := int(ws.Signal())
		return wire.ExitMsg{Code: 128 + sig, Signal: sig}
	}
	return wire.ExitMsg{Code: ps.ExitCode()}
}
