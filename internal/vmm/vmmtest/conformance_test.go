package vmmtest

import (
	"path/filepath"
	"testing"

	"github.com/banger-dev/banger/internal/vmm"
)

// TestConformance holds the fake driver to the contracts of the real ones, so that the tests
// of the layers above, which run on it, rely on nothing the real drivers do not do.
func TestConformance(t *testing.T) {
	Conformance(t, func(t *testing.T) Harness {
		d := &Driver{}
		t.Cleanup(d.KillAll)
		return Harness{
			Driver: d,
			Config: func(t *testing.T) vmm.Config {
				return vmm.Config{ID: "conf", Name: "conf", Dir: t.TempDir(), RuntimeDir: t.TempDir(), VCPU: 1, MemoryMiB: 64}
			},
			// The agent socket cannot be made: Start fails after the process was spawned.
			FailingConfig: func(t *testing.T) vmm.Config {
				return vmm.Config{ID: "conf", Name: "conf", Dir: t.TempDir(), RuntimeDir: filepath.Join(t.TempDir(), "missing")}
			},
			Running:   func(t *testing.T, m vmm.Machine) bool { return m.(*Machine).Running() },
			NICByFile: true,
		}
	})
}
