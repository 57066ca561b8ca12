package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/term"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/termtext"
	"github.com/banger-dev/banger/internal/wire"
)

// exec runs argv in a VM with this process's stdio and returns the command's exit status.
//
// When both stdin and stdout are terminals the command gets a pseudo-terminal and the local
// terminal goes raw, so Ctrl-C reaches the command as a keystroke. Otherwise stdin, stdout and
// stderr are plain pipes (`… -- cat < file`, `… -- cmd > out` keep their bytes exact). Either
// way SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to banger are forwarded to the command, and the
// terminal is restored once the command has ended.
func (a *app) exec(cl *client.Client, ref string, argv []string, dir string) (int, error) {
	req := api.ExecRequest{Argv: argv, Dir: dir}
	cio := wire.CallerIO{Stdin: a.stdin, Stdout: a.stdout, Stderr: a.stderr}

	stdinTTY, stdoutTTY := isTerminal(a.stdin), isTerminal(a.stdout)
	// restore puts the local terminal back in the mode it had; it must run before banger
	// prints anything of its own, or a raw terminal (no \n → \r\n) staircases the line.
	restore := func() {}
	sigs := make(chan os.Signal, 4)
	forward := make(chan int, 4)
	if stdinTTY && stdoutTTY {
		in := a.stdin.(*os.File)
		req.TTY = true
		if w, h, err := term.GetSize(int(in.Fd())); err == nil {
			req.Cols, req.Rows = uint16(w), uint16(h)
		}
		if t := os.Getenv("TERM"); t != "" {
			req.Env = append(req.Env, "TERM="+t)
		}
		if old, err := term.MakeRaw(int(in.Fd())); err == nil {
			var once sync.Once
			restore = func() { once.Do(func() { _ = term.Restore(int(in.Fd()), old) }) }
			defer restore()
		}
		resizes := make(chan wire.ResizeMsg, 1)
		cio.Resizes = resizes
		signal.Notify(sigs, syscall.SIGWINCH)
		go func() {
			for s := range sigs {
				if s != syscall.SIGWINCH {
					forward <- int(s.(syscall.Signal))
					continue
				}
				if w, h, err := term.GetSize(int(in.Fd())); err == nil {
					select {
					case resizes <- wire.ResizeMsg{Rows: uint16(h), Cols: uint16(w)}:
					default:
					}
				}
			}
		}()
	} else {
		go func() {
			for s := range sigs {
				forward <- int(s.(syscall.Signal))
			}
		}()
	}
	// Signals sent to banger (kill, a closing terminal) go to the command; on a terminal,
	// Ctrl-C is a keystroke that reaches it through the pty instead.
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	cio.Signals = forward
	if lang := os.Getenv("LANG"); lang != "" {
		req.Env = append(req.Env, "LANG="+lang)
	}
	defer signal.Stop(sigs)

	exit, err := cl.Exec(context.Background(), ref, req, cio)
	restore()
	if err != nil {
		return ExitError, err
	}
	if req.TTY && exit.Signal == int(syscall.SIGINT) {
		// The terminal echoed ^C and the command died of it: end that line, as a shell does,
		// so that what comes next does not start after the ^C.
		fmt.Fprintln(a.stdout)
	}
	if exit.Error != "" {
		fmt.Fprintf(a.stderr, "banger: %s\n", termtext.CleanLine(exit.Error))
	}
	return exit.Code, nil
}
