package hostnet

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// ResolvedActive reports whether systemd-resolved manages this host's DNS (and banger runs in
// the host's own namespace, where resolved's per-link settings mean something).
func (n *Net) ResolvedActive() bool {
	if n.ns.IsOpen() {
		return false
	}
	if _, err := exec.LookPath("resolvectl"); err != nil {
		return false
	}
	_, err := os.Stat("/run/systemd/resolve/io.systemd.Resolve")
	return err == nil
}

// RouteDomain sends queries for the vm domain to banger's server on the bridge, through
// systemd-resolved's per-link settings (resolvectl dns/domain ~vm). resolved forgets them
// when the link goes away, so it is applied whenever the bridge is (re)made. Without resolved
// it does nothing; docs/dns-routing.md has recipes for other setups.
func (n *Net) RouteDomain() error {
	if !n.ResolvedActive() {
		return nil
	}
	for _, args := range [][]string{
		{"dns", n.cfg.Bridge, n.HostIP().String()},
		{"domain", n.cfg.Bridge, "~vm"},
	} {
		if out, err := exec.Command("resolvectl", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("resolvectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// UnrouteDomain removes what RouteDomain set.
func (n *Net) UnrouteDomain() error {
	if !n.ResolvedActive() {
		return nil
	}
	if out, err := exec.Command("resolvectl", "revert", n.cfg.Bridge).CombinedOutput(); err != nil {
		return fmt.Errorf("resolvectl revert %s: %v: %s", n.cfg.Bridge, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// DomainRouted reports whether resolved sends the vm domain to banger's server (for doctor).
func (n *Net) DomainRouted() (bool, error) {
	if !n.ResolvedActive() {
		return false, nil
	}
	out, err := exec.Command("resolvectl", "domain", n.cfg.Bridge).CombinedOutput()
	if err != nil {
		return false, nil
	}
	return strings.Contains(string(out), "~vm"), nil
}
