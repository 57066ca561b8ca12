package hostnet

import "slices"

// SetOpenPorts replaces the host ports guests may reach besides DNS (Config.OpenPorts); the
// next SetGuests or ReapplyFilter writes them. banger's root helper uses it: the ports are
// its callers' and its configuration's, and change while the network stays open.
func (n *Net) SetOpenPorts(ports []uint16) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cfg.OpenPorts = slices.Clone(ports)
}
