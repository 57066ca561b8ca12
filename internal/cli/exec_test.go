package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/wire"
)

// fakeExecDaemon serves the exec route on a unix socket the way bangerd does (upgrade, then
// wire frames) and answers every session with the frames send writes. It returns a client
// for it and a channel that receives each exec request.
func fakeExecDaemon(t *testing.T, send func(w *wire.Writer)) (*client.Client, <-chan api.ExecRequest) {
	t.Helper()
	dir, err := os.MkdirTemp("", "banger-cli-test") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	reqs := make(chan api.ExecRequest, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/exec") || r.Header.Get("Upgrade") != api.ExecUpgrade {
			http.Error(w, "unexpected request "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		var req api.ExecRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		reqs <- req
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+api.ExecUpgrade+"\r\n\r\n")
		send(wire.NewWriter(conn))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return client.New(sock), reqs
}

// notFound is what the guest agent answers for a command that does not exist.
func notFound(w *wire.Writer) {
	_ = w.Write(wire.Stdout, []byte("out\n"))
	_ = w.Write(wire.Stderr, []byte("err\n"))
	_ = w.WriteJSON(wire.Exit, wire.ExitMsg{Code: 127, Error: "no-such-cmd: command not found"})
}

// TestExecPipes runs a command with stdio that are not terminals: no pty is asked for, the
// command's stdout and stderr arrive byte for byte on banger's, its status is returned, and
// a command that could not run is reported on stderr after its output.
func TestExecPipes(t *testing.T) {
	cl, reqs := fakeExecDaemon(t, notFound)
	var stdout, stderr bytes.Buffer
	a := &app{stdin: strings.NewReader("input"), stdout: &stdout, stderr: &stderr}

	code, err := a.exec(cl, "vm1", []string{"no-such-cmd", "a b"}, "")
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	if code != 127 {
		t.Errorf("exec returned %d, want the command's 127", code)
	}
	if got, want := stdout.String(), "out\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if got, want := stderr.String(), "err\nbanger: no-such-cmd: command not found\n"; got != want {
		t.Errorf("stderr = %q, want %q", got, want)
	}
	req := <-reqs
	if req.TTY || req.Rows != 0 || req.Cols != 0 {
		t.Errorf("request TTY=%v %dx%d, want no terminal for pipes", req.TTY, req.Rows, req.Cols)
	}
	if len(req.Argv) != 2 || req.Argv[0] != "no-such-cmd" || req.Argv[1] != "a b" {
		t.Errorf("request argv = %q, want [no-such-cmd \"a b\"] exactly", req.Argv)
	}
}

// openPTY opens a pseudo-terminal of rows×cols and returns its master side and the terminal;
// the test is skipped where there is none. The master is non-blocking, so that reading it
// can be stopped by closing it.
func openPTY(t *testing.T, rows, cols uint16) (master, tty *os.File) {
	t.Helper()
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	master = os.NewFile(uintptr(mfd), "/dev/ptmx")
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	if err != nil {
		t.Skipf("pty number: %v", err)
	}
	sfd, err := unix.Open(fmt.Sprintf("/dev/pts/%d", n), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("open pty: %v", err)
	}
	tty = os.NewFile(uintptr(sfd), fmt.Sprintf("/dev/pts/%d", n))
	t.Cleanup(func() { tty.Close() })
	if err := unix.IoctlSetWinsize(sfd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatalf("set pty size: %v", err)
	}
	return master, tty
}

// screen collects what is written to a terminal, read from its master side.
type screen struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced whenever bytes arrive
}

func watch(master *os.File) *screen {
	s := &screen{changed: make(chan struct{})}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := master.Read(b)
			s.mu.Lock()
			s.buf.Write(b[:n])
			close(s.changed)
			s.changed = make(chan struct{})
			s.mu.Unlock()
			if err != nil {
				return // the master was closed
			}
		}
	}()
	return s
}

// waitUntil waits until what the terminal received satisfies ok and returns all it received,
// woken by each write to the terminal. It gives up (returning false) after ten seconds: a
// guard against hanging when the output never comes, not a timing check.
func (s *screen) waitUntil(ok func(got string) bool) (string, bool) {
	guard := time.NewTimer(10 * time.Second)
	defer guard.Stop()
	for {
		s.mu.Lock()
		got, changed := s.buf.String(), s.changed
		s.mu.Unlock()
		if ok(got) {
			return got, true
		}
		select {
		case <-changed:
		case <-guard.C:
			return got, false
		}
	}
}

// waitFor waits until the terminal received want (see waitUntil).
func (s *screen) waitFor(want string) (string, bool) {
	return s.waitUntil(func(got string) bool { return strings.Contains(got, want) })
}

// TestExecTerminal runs a command with stdin and stdout on a terminal: the command gets a pty
// of the terminal's size and $TERM, the terminal is in its old mode again afterwards, and it
// is back in that mode before banger prints its own line; in raw mode that line would not
// return to column 0 (seen on a real terminal as a staircase).
func TestExecTerminal(t *testing.T) {
	t.Setenv("TERM", "xterm-test")
	master, tty := openPTY(t, 30, 100)
	before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	cl, reqs := fakeExecDaemon(t, func(w *wire.Writer) {
		_ = w.Write(wire.Stdout, []byte("hi\r\n")) // a guest pty sends CRLF itself
		_ = w.WriteJSON(wire.Exit, wire.ExitMsg{Code: 127, Error: "no-such-cmd: command not found"})
	})
	scr := watch(master)
	a := &app{stdin: tty, stdout: tty, stderr: tty}

	code, err := a.exec(cl, "vm1", []string{"no-such-cmd"}, "")
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	if code != 127 {
		t.Errorf("exec returned %d, want 127", code)
	}
	req := <-reqs
	if !req.TTY || req.Rows != 30 || req.Cols != 100 {
		t.Errorf("request TTY=%v rows=%d cols=%d, want a pty of 30 rows and 100 columns", req.TTY, req.Rows, req.Cols)
	}
	if !containsString(req.Env, "TERM=xterm-test") {
		t.Errorf("request env = %q, want TERM=xterm-test passed on", req.Env)
	}
	after, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if after.Iflag != before.Iflag || after.Oflag != before.Oflag || after.Lflag != before.Lflag || after.Cflag != before.Cflag {
		t.Errorf("terminal left changed: flags i=%#x o=%#x l=%#x c=%#x, were i=%#x o=%#x l=%#x c=%#x",
			after.Iflag, after.Oflag, after.Lflag, after.Cflag, before.Iflag, before.Oflag, before.Lflag, before.Cflag)
	}

	// Restored (ONLCR on), the terminal turns banger's "\n" into "\r\n"; raw, it would not.
	if got, ok := scr.waitFor("hi\r\nbanger: no-such-cmd: command not found\r\n"); !ok {
		t.Errorf("terminal showed %q, want the command's output, then banger's line ending in \\r\\n (terminal restored first)", got)
	}
	// The stdin pump still waits for a keystroke; give it one so that it ends.
	_, _ = master.Write([]byte("\n"))
}

// TestExecInterruptEndsTheLine checks that a command killed by Ctrl-C on a terminal leaves the
// cursor at the start of a new line (the guest's terminal echoed "^C"), and that with pipes
// nothing is added to the command's output.
func TestExecInterruptEndsTheLine(t *testing.T) {
	interrupted := func(w *wire.Writer) {
		_ = w.Write(wire.Stdout, []byte("working^C"))
		_ = w.WriteJSON(wire.Exit, wire.ExitMsg{Code: 130, Signal: 2})
	}
	t.Run("terminal", func(t *testing.T) {
		master, tty := openPTY(t, 24, 80)
		scr := watch(master)
		cl, _ := fakeExecDaemon(t, interrupted)
		a := &app{stdin: tty, stdout: tty, stderr: tty}
		code, err := a.exec(cl, "vm1", []string{"sleep", "60"}, "")
		if err != nil || code != 130 {
			t.Fatalf("exec = %d, %v; want 130, nil", code, err)
		}
		if got, ok := scr.waitFor("working^C\r\n"); !ok {
			t.Errorf("terminal showed %q, want \"working^C\" and a new line", got)
		}
		_, _ = master.Write([]byte("\n")) // end the stdin pump
	})
	t.Run("pipes", func(t *testing.T) {
		cl, _ := fakeExecDaemon(t, interrupted)
		var stdout, stderr bytes.Buffer
		a := &app{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}
		code, err := a.exec(cl, "vm1", []string{"sleep", "60"}, "")
		if err != nil || code != 130 {
			t.Fatalf("exec = %d, %v; want 130, nil", code, err)
		}
		if stdout.String() != "working^C" || stderr.String() != "" {
			t.Errorf("stdout %q, stderr %q; want the command's bytes exactly (\"working^C\") and nothing on stderr", stdout.String(), stderr.String())
		}
	})
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestRendererOnATerminal checks what newRenderer decides for a real terminal: a live line,
// cut to the terminal's width, coloured unless NO_COLOR is set or TERM is dumb.
func TestRendererOnATerminal(t *testing.T) {
	tests := []struct {
		name, noColor, term string
		wantColor           bool
	}{
		{"colour by default", "", "xterm-256color", true},
		{"NO_COLOR=1 turns colour off", "1", "xterm-256color", false},
		{"TERM=dumb turns colour off", "", "dumb", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NO_COLOR", tt.noColor)
			t.Setenv("TERM", tt.term)
			master, tty := openPTY(t, 24, 40)
			scr := watch(master)
			r := newRenderer(tty)
			if !r.live || r.color != tt.wantColor {
				t.Errorf("live=%v color=%v, want live=true color=%v", r.live, r.color, tt.wantColor)
			}
			if w := r.width(); w != 40 {
				t.Errorf("width() = %d, want the terminal's 40 columns", w)
			}
			r.Event(progressEv("vm.boot", "booting; waiting for the guest agent", 0, 0))
			// The event draws the live line; wait for the ticker to redraw it.
			if got, ok := scr.waitUntil(func(got string) bool { return strings.Count(got, "\r\x1b[K") >= 2 }); !ok {
				t.Fatalf("the ticker never redrew the live line: %q", got)
			}
			r.Finish("ready")
			got, ok := scr.waitFor("banger: ready\r\n")
			if !ok {
				t.Fatalf("the terminal never showed \"banger: ready\": %q", got)
			}
			if hasColor := strings.Contains(got, "\x1b[36m"); hasColor != tt.wantColor {
				t.Errorf("output %q: colour escapes present = %v, want %v", got, hasColor, tt.wantColor)
			}
			if strings.Count(got, "\r\x1b[K") < 3 {
				t.Errorf("output %q: want the live line drawn, redrawn by the ticker and erased", got)
			}
			if !strings.HasSuffix(got, "\r\x1b[Kbanger: ready\r\n") {
				t.Errorf("output %q: want it to end by erasing the live line and printing \"banger: ready\"", got)
			}
			for _, draw := range strings.Split(got, "\r\x1b[K") {
				if l := len([]rune(visible(draw))); l >= 40 && !strings.HasPrefix(draw, "banger: ready") {
					t.Errorf("a redraw of %d columns on a 40-column terminal: %q", l, draw)
				}
			}
		})
	}
}
