package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The CLI talks to the daemon over its API and links none of the daemon's side: not the
// store (and its SQLite), the catalog, the VM service, the daemon itself, nor the registry
// client. Linking them once made `banger` 60% bigger; this keeps it from creeping back.
func TestCLIDoesNotLinkTheDaemon(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to list the dependencies with")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const mod = "github.com/banger-dev/banger/internal/"
	forbidden := map[string]bool{
		mod + "store": true, mod + "catalog": true, mod + "vmservice": true,
		mod + "daemon": true, mod + "oci": true, mod + "vmnet": true, mod + "vmssh": true,
		mod + "dnsserver": true,
	}
	forbiddenPrefixes := []string{"github.com/google/go-containerregistry/", "modernc.org/sqlite"}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed only %q; want banger's dependencies", deps)
	}
	for _, p := range deps {
		bad := forbidden[p]
		for _, pre := range forbiddenPrefixes {
			bad = bad || strings.HasPrefix(p, pre)
		}
		if bad {
			t.Errorf("banger links %s, which is the daemon's (see `go list -deps ./cmd/banger` and docs/architecture.md)", p)
		}
	}
}
