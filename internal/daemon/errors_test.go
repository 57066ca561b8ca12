package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/failure"
)

// An error's kind survives the trip to the client: the daemon answers with the code (and
// status) of the kind, and errors.Is finds the same kind in what the client returns.
func TestErrorKindsSurviveTheAPI(t *testing.T) {
	enospc := &fs.PathError{Op: "write", Path: "/var/lib/banger/images/x/rootfs.ext4", Err: syscall.ENOSPC}
	cases := map[string]struct {
		err    error
		kind   error // nil: no kind
		code   string
		status int
	}{
		"invalid":   {failure.New(failure.Invalid, "bad name"), failure.Invalid, "invalid", http.StatusBadRequest},
		"missing":   {fmt.Errorf("vm %q: %w", "x", failure.NotFound), failure.NotFound, "not_found", http.StatusNotFound},
		"taken":     {failure.New(failure.Conflict, "taken"), failure.Conflict, "conflict", http.StatusConflict},
		"full":      {failure.Wrap(failure.Invalid, fmt.Errorf("import: %w", enospc)), failure.IO, "io", http.StatusInternalServerError},
		"cancelled": {failure.Wrap(failure.Invalid, fmt.Errorf("import: %w", context.Canceled)), context.Canceled, "canceled", statusClientClosedRequest},
		"slow":      {fmt.Errorf("pull: %w", context.DeadlineExceeded), context.DeadlineExceeded, "timeout", http.StatusGatewayTimeout},
		"plain":     {errors.New("something broke"), nil, "failed", http.StatusUnprocessableEntity},
	}
	dir, err := os.MkdirTemp("", "bd") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "d.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	statuses := make(chan int, 1)
	mux := http.NewServeMux()
	mux.HandleFunc(string(api.RouteGetVM), func(w http.ResponseWriter, r *http.Request) {
		e := apiError(cases[r.PathValue("ref")].err)
		statuses <- statusOf(e)
		writeError(w, e)
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	c := client.New(socket)

	kinds := []error{failure.Invalid, failure.NotFound, failure.Conflict, failure.IO, context.Canceled, context.DeadlineExceeded}
	for name, tc := range cases {
		_, err := c.GetVM(context.Background(), name)
		if status := <-statuses; status != tc.status {
			t.Errorf("%s: status %d, want %d", name, status, tc.status)
		}
		if e := apiErr(t, err); e.Code != tc.code || e.Message != tc.err.Error() {
			t.Errorf("%s: client got %+v, want code %q and message %q", name, e, tc.code, tc.err.Error())
		}
		for _, k := range kinds {
			if errors.Is(err, k) != (k == tc.kind) {
				t.Errorf("%s: errors.Is(%v, %v) = %v at the client", name, err, k, errors.Is(err, k))
			}
		}
	}
}

// An import whose bundle cannot be read (EIO: /proc/self/mem at offset 0 is never mapped)
// fails at the client as IO, not as an invalid request.
func TestImportThatCannotReadIsNotInvalid(t *testing.T) {
	h := newHarness(t, false)
	_, err := h.c.ImportImage(context.Background(), api.ImageImportRequest{Path: "/proc/self/mem"}, nil)
	if e := apiErr(t, err); e.Code != "io" || !errors.Is(err, failure.IO) || errors.Is(err, failure.Invalid) {
		t.Errorf("import of an unreadable bundle = %+v, want code io", e)
	}
}
