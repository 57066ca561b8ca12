package failure

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"
)

func TestKinds(t *testing.T) {
	err := New(NotFound, "vm %q is gone", "dev")
	if err.Error() != `vm "dev" is gone` {
		t.Errorf("message = %q", err.Error())
	}
	wrapped := fmt.Errorf("delete: %w", err)
	if !errors.Is(wrapped, NotFound) || errors.Is(wrapped, Invalid) || !Classified(wrapped) {
		t.Errorf("kind lost or wrong through wrapping: %v", wrapped)
	}
	if Wrap(Invalid, nil) != nil {
		t.Error("Wrap(nil) must stay nil")
	}
	if w := Wrap(Conflict, errors.New("taken")); !errors.Is(w, Conflict) || w.Error() != "taken" {
		t.Errorf("Wrap = %v", w)
	}
	if Classified(errors.New("plain")) {
		t.Error("a plain error has no kind")
	}
}

// A kind is added to an error, not put in its place: what the error wraps is still found.
func TestWrapKeepsTheChain(t *testing.T) {
	cause := fmt.Errorf("import: %w", context.Canceled)
	err := Wrap(Invalid, cause)
	if !errors.Is(err, Invalid) || !errors.Is(err, context.Canceled) || err.Error() != cause.Error() {
		t.Errorf("Wrap(Invalid, %v) = %v: Is(Invalid) %v, Is(Canceled) %v", cause, err, errors.Is(err, Invalid), errors.Is(err, context.Canceled))
	}
}

// What caused a failure decides its kind over what it was classified as on the way up: a
// cancelled or timed-out request, or a host that cannot write, is never the request's fault.
func TestOf(t *testing.T) {
	enospc := &fs.PathError{Op: "write", Path: "/var/lib/banger/images/x/rootfs.ext4", Err: syscall.ENOSPC}
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"nil", nil, nil},
		{"plain", errors.New("plain"), nil},
		{"not found, wrapped as a sentinel", fmt.Errorf("vm %q: %w", "dev", NotFound), NotFound},
		{"conflict", New(Conflict, "taken"), Conflict},
		{"cancelled though called invalid", Wrap(Invalid, fmt.Errorf("import: %w", context.Canceled)), context.Canceled},
		{"deadline", fmt.Errorf("pull: %w", context.DeadlineExceeded), context.DeadlineExceeded},
		{"disk full", fmt.Errorf("import: %w", enospc), IO},
		{"disk full though called invalid", Wrap(Invalid, fmt.Errorf("import: %w", enospc)), IO},
		{"EIO", &fs.PathError{Op: "read", Path: "/x", Err: syscall.EIO}, IO},
		{"read-only", &fs.PathError{Op: "open", Path: "/x", Err: syscall.EROFS}, IO},
		{"IO given", New(IO, "disk is failing"), IO},
		{"missing file is not the host's failure", &fs.PathError{Op: "open", Path: "/x", Err: syscall.ENOENT}, nil},
	} {
		if got := Of(tc.err); got != tc.want {
			t.Errorf("%s: Of(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// Default classifies what has no kind and leaves a kind found in err alone.
func TestDefault(t *testing.T) {
	if Default(Invalid, nil) != nil {
		t.Error("Default(nil) must stay nil")
	}
	bad := errors.New("not a bundle")
	if err := Default(Invalid, bad); !errors.Is(err, Invalid) || !errors.Is(err, bad) || err.Error() != bad.Error() {
		t.Errorf("Default(Invalid, %v) = %v, want it Invalid", bad, err)
	}
	for _, cause := range []error{
		fmt.Errorf("import: %w", context.Canceled),
		fmt.Errorf("import: %w", &fs.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}),
		New(NotFound, "no such kernel"),
	} {
		if err := Default(Invalid, cause); err != cause || errors.Is(err, Invalid) {
			t.Errorf("Default(Invalid, %v) = %v, want it unchanged", cause, err)
		}
	}
}
