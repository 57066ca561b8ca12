package daemon

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/wire"
)

// Every field of an exec request reaches the guest agent: the daemon passes the request on as
// it is, so a field added to it cannot be dropped on the way.
func TestExecPassesEveryRequestFieldToTheGuest(t *testing.T) {
	h := newHarness(t, false)
	if _, _, err := h.create(t, api.CreateVMRequest{Name: "dev"}); err != nil {
		t.Fatalf("create: %v", err)
	}
	dir := t.TempDir()
	req := api.ExecRequest{
		Argv: []string{"sh", "-c", `test -t 0 && test -t 1 && echo "tty $(stty size)"; echo "dir $(pwd)"; echo "env $BANGER_TEST_VALUE"`},
		Env:  []string{"BANGER_TEST_VALUE=passed"},
		Dir:  dir,
		TTY:  true, Rows: 33, Cols: 101,
	}
	var out bytes.Buffer
	exit, err := h.c.Exec(context.Background(), "dev", req, wire.CallerIO{Stdout: &out, Stderr: io.Discard})
	if err != nil || exit.Code != 0 {
		t.Fatalf("exec = %+v, %v (output %q)", exit, err, out.String())
	}
	got := strings.ReplaceAll(out.String(), "\r\n", "\n") // a terminal's line endings
	for _, want := range []string{"tty 33 101\n", "dir " + dir + "\n", "env passed\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("output %q lacks %q", got, want)
		}
	}
}
