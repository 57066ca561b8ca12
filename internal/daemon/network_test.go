package daemon

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/hostnet"
	"github.com/banger-dev/banger/internal/vmnet"
)

// A daemon running as root does the host side of guest networking itself; one that is not
// root goes through the root helper on the configured socket, and without a way to reach it
// says that it needs it.
func TestOpenHostByPrivilege(t *testing.T) {
	hc := hostnet.Config{Bridge: "bgdt0", CIDR: netip.MustParsePrefix("172.31.3.0/29"), StateDir: t.TempDir()}
	const socket = "/run/banger-test/helper.sock"
	var asked []string
	helper := func(c hostnet.Config, s string) (vmnet.Host, error) {
		asked = append(asked, s)
		if c.Bridge != hc.Bridge || c.CIDR != hc.CIDR {
			t.Errorf("the helper was asked for %+v, want %+v", c, hc)
		}
		return hostnet.Open(c) // stands for the helper's client: any Host will do
	}

	h, err := openHost(hc, socket, 0, helper)
	if err != nil {
		t.Fatalf("as root: %v", err)
	}
	h.Close()
	if _, ok := h.(*hostnet.Net); !ok || len(asked) != 0 {
		t.Errorf("as root: Host %T, helper asked %q; want *hostnet.Net in-process and the helper not asked", h, asked)
	}

	h, err = openHost(hc, socket, 1000, helper)
	if err != nil {
		t.Fatalf("as uid 1000 with a helper: %v", err)
	}
	h.Close()
	if len(asked) != 1 || asked[0] != socket {
		t.Errorf("as uid 1000: helper asked %q, want once on %s", asked, socket)
	}

	_, err = openHost(hc, socket, 1000, nil)
	if err == nil || !strings.Contains(err.Error(), "root helper") || !strings.Contains(err.Error(), socket) || !strings.Contains(err.Error(), "helper_socket") {
		t.Errorf("as uid 1000 without a helper: %v; want an error that names the root helper, its socket and helper_socket", err)
	}

	refused := errors.New("connection refused")
	_, err = openHost(hc, socket, 1000, func(hostnet.Config, string) (vmnet.Host, error) { return nil, refused })
	if !errors.Is(err, refused) || !strings.Contains(err.Error(), socket) {
		t.Errorf("as uid 1000, helper unreachable: %v; want the helper's error, wrapped, naming %s", err, socket)
	}
}

// TestDialHelperTakesNamespacesByName: the root helper works in namespaces under /run/netns,
// named; BANGER_NETWORK_NAMESPACE may give the path, which becomes the name, and any other
// path is refused before the helper is asked.
func TestDialHelperTakesNamespacesByName(t *testing.T) {
	hc := hostnet.Config{Bridge: "bgdt0", CIDR: netip.MustParsePrefix("172.31.3.0/29")}
	hc.NetNS = "/tmp/elsewhere/ns"
	if _, err := dialHelper(hc, "/nonexistent/helper.sock"); err == nil || !strings.Contains(err.Error(), "under /run/netns") {
		t.Errorf("namespace path outside /run/netns: %v; want it refused as such", err)
	}
	hc.NetNS = "/run/netns/banger-x"
	_, err := dialHelper(hc, "/nonexistent/helper.sock")
	if err == nil || strings.Contains(err.Error(), "under /run/netns") {
		t.Errorf("namespace /run/netns/banger-x: %v; want it taken by name and the (absent) helper's socket to fail", err)
	}
}
