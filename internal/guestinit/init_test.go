package guestinit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	p, err := ParseCmdline("console=ttyS0 banger.lower=vda banger.upper=vdb banger.debug quiet")
	if err != nil {
		t.Fatal(err)
	}
	if p.Lower != "vda" || p.Upper != "vdb" || !p.Debug {
		t.Errorf("got %+v, want lower vda, upper vdb, debug on", p)
	}
}

func TestParseCmdlineRejects(t *testing.T) {
	tests := []struct{ name, cmdline, want string }{
		{"no lower", "banger.upper=vdb", "no banger.lower"},
		{"no upper", "banger.lower=vda", "no banger.upper"},
		{"path instead of a name", "banger.lower=/dev/vda banger.upper=vdb", "want a device name"},
		{"traversal", "banger.lower=vda banger.upper=../sda", "want a device name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCmdline(tc.cmdline)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
}

func TestLoadModulesWithoutListIsNothingToDo(t *testing.T) {
	n, err := LoadModules(t.TempDir())
	if n != 0 || err != nil {
		t.Errorf("LoadModules = %d, %v; want 0, nil for a kernel with everything built in", n, err)
	}
}

func TestLoadModulesNamesTheMissingModule(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ModuleList), []byte("# comment\n\nkernel/missing.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadModules(dir)
	if err == nil || !strings.Contains(err.Error(), "missing.ko") {
		t.Errorf("err = %v, want it to name missing.ko", err)
	}
}

// The initramfs copies itself to agent.GuestBinary, in the run directory it creates and moves
// into the guest: the host's idea of where the agent is must stay inside it.
func TestAgentPathIsInTheRunDirectory(t *testing.T) {
	if filepath.Dir(agentPath) != bangerRun {
		t.Fatalf("the agent is installed at %s, outside %s, which the initramfs creates", agentPath, bangerRun)
	}
}
