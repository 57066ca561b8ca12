package ext4

import (
	"context"
	"errors"
	"testing"
)

func TestRunQuotesAFailedProgram(t *testing.T) {
	err := Run(context.Background(), "/bin/sh", "-c", "echo broken >&2; exit 3")
	var te *ToolError
	if !errors.As(err, &te) || te.Code != 3 || te.Output != "broken" {
		t.Fatalf("Run error = %#v, want a ToolError with exit 3 and its output", err)
	}
	if got, want := err.Error(), "sh failed (exit 3): broken"; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
	if err := Run(context.Background(), "/bin/sh", "-c", "exit 1"); err == nil || err.Error() != "sh failed (exit 1)" {
		t.Errorf("silent failure: error = %v, want %q", err, "sh failed (exit 1)")
	}
	if err := Run(context.Background(), "/bin/true"); err != nil {
		t.Errorf("Run(true) = %v", err)
	}
}
