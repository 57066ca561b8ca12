package oci

import (
	"os"
	"testing"

	"github.com/banger-dev/banger/internal/userns"
)

// TestMain runs userns's hidden entry point when a rootless test re-executes this binary
// inside a user namespace.
func TestMain(m *testing.M) {
	userns.Init()
	os.Exit(m.Run())
}
