package failure

import (
	"context"
	"errors"
	"fmt"
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
