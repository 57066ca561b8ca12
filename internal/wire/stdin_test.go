package wire

import (
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
)

// After Call returns nothing reads the caller's stdin any more: the bytes that come next
// belong to whoever reads it then (the shell, a prompt), not to a finished session.
//
// Before the test writes, it waits until the goroutines package wire started are all blocked
// (or gone): a reader left behind is then in its read, and certain to take the bytes.
func TestCallLeavesStdinAloneAfterItReturns(t *testing.T) {
	if got := callThenRead(t); got != "next" {
		t.Fatalf("read %q from stdin after the call, want \"next\": the finished call took it", got)
	}
}

// waitWireParked returns once no goroutine started by package wire's code (not its tests) is
// running or runnable.
func waitWireParked() {
	for {
		buf := make([]byte, 1<<20)
		dump := string(buf[:runtime.Stack(buf, true)])
		busy := false
		for _, g := range strings.Split(dump, "\n\n") {
			header, _, _ := strings.Cut(g, "\n")
			_, site, _ := strings.Cut(g, "created by github.com/banger-dev/banger/internal/wire.")
			if site != "" && !strings.Contains(site, "_test.go:") &&
				(strings.Contains(header, "[running]") || strings.Contains(header, "[runnable]")) {
				busy = true
			}
		}
		if !busy {
			return
		}
		runtime.Gosched()
	}
}

// callThenRead runs a Call whose command reads one chunk of stdin and exits, then writes
// "next" to the stdin pipe, closes it and returns what the test reads from it.
func callThenRead(t *testing.T) string {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	caller, cmd := net.Pipe()
	defer caller.Close()
	defer cmd.Close()

	go func() {
		r, w := NewReader(cmd), NewWriter(cmd)
		if typ, p, err := r.Next(); err != nil || typ != Stdin || string(p) != "during" {
			t.Errorf("command got %q %q %v, want Stdin \"during\"", typ, p, err)
		}
		_ = w.WriteJSON(Exit, ExitMsg{})
		_, _ = io.Copy(io.Discard, cmd) // whatever else comes
	}()
	if _, err := pw.Write([]byte("during")); err != nil {
		t.Fatal(err)
	}
	if _, err := Call(caller, CallerIO{Stdin: pr, Stdout: io.Discard, Stderr: io.Discard}); err != nil {
		t.Fatal(err)
	}
	waitWireParked()
	if _, err := pw.Write([]byte("next")); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	b, err := io.ReadAll(pr)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A file as stdin is read to its end and the end is passed on, as any reader's.
func TestCallSendsAFileThenItsEnd(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stdin")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("from a file"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	caller, cmd := net.Pipe()
	defer caller.Close()
	got := make(chan string, 1)
	go func() {
		r, w := NewReader(cmd), NewWriter(cmd)
		var in []byte
		for {
			typ, p, err := r.Next()
			if err != nil || (typ != Stdin && typ != StdinEOF) {
				got <- fmt.Sprintf("frame %q %v", typ, err)
				break
			}
			if typ == StdinEOF {
				got <- string(in)
				break
			}
			in = append(in, p...)
		}
		_ = w.WriteJSON(Exit, ExitMsg{})
	}()
	if _, err := Call(caller, CallerIO{Stdin: f, Stdout: io.Discard, Stderr: io.Discard}); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "from a file" {
		t.Errorf("command got %q, want the file's bytes then StdinEOF", s)
	}
}
