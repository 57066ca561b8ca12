package cli

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

// What a hostile guest set its process name to in the report: retitle the window, ring the
// bell, clear the screen.
const hostile = "\x1b]0;owned\a\x1b[2J"

// noEscapes fails when out holds a byte a terminal acts on (beyond newlines and tabs).
func noEscapes(t *testing.T, what, out string) {
	t.Helper()
	for _, c := range []byte(out) {
		if (c < 0x20 && c != '\n' && c != '\t') || c == 0x7f {
			t.Fatalf("%s printed control byte %#x raw: %q", what, c, out)
		}
	}
	if !strings.Contains(out, `\x1b]0;owned`) {
		t.Fatalf("%s hid the guest's text instead of escaping it: %q", what, out)
	}
}

func TestGuestStringsAreEscapedOnTheTerminal(t *testing.T) {
	var out, errOut bytes.Buffer
	a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}

	if err := a.printPorts([]api.Port{{Proto: "tcp", Addr: "0.0.0.0", Port: 80, PID: 7, Process: hostile}}); err != nil {
		t.Fatal(err)
	}
	noEscapes(t, "vm ports", out.String())

	out.Reset()
	if err := a.printVM(api.VM{Name: "dev", State: "error", LastError: "guest console ends with: " + hostile}); err != nil {
		t.Fatal(err)
	}
	noEscapes(t, "vm show", out.String())

	errOut.Reset()
	a.exitCode(fmt.Errorf("agent: provision: %s", hostile))
	noEscapes(t, "an error", errOut.String())

	errOut.Reset()
	r := newRenderer(&errOut)
	r.Event(api.Event{Type: api.EventNotice, Message: hostile})
	noEscapes(t, "a notice", errOut.String())
}

// A guest command's status outside 0-255 would wrap in exit(2): 256 would report success.
func TestGuestExitStatusIsClamped(t *testing.T) {
	a := &app{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	for status, want := range map[int]int{0: 0, 1: 1, 255: 255, 256: 255, 512: 255, -1: 255, 1 << 40: 255} {
		if got := a.exitCode(exitStatus(status)); got != want {
			t.Errorf("guest status %d: banger exits %d, want %d", status, got, want)
		}
	}
	if got := a.exitCode(errors.New("plain failure")); got != ExitError {
		t.Errorf("plain error exits %d", got)
	}
}
