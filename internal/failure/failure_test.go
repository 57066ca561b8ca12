package failure

import (
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
