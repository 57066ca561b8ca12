package api

// Port is a listening socket in a guest (GET /v1/vms/{ref}/ports).
type Port struct {
	Proto   string `json:"proto"` // tcp, tcp6, udp, udp6
	Addr    string `json:"addr"`
	Port    int    `json:"port"`
	PID     int    `json:"pid,omitempty"`
	Process string `json:"process,omitempty"`
	// Reach is <name>.vm:<port> for TCP ports that listen beyond the guest's loopback.
	Reach string `json:"reach,omitempty"`
	// URL is http://<name>.vm:<port> for those of them whose service answered an HTTP
	// request when listed.
	URL string `json:"url,omitempty"`
}

// SSHTarget says how to reach a running VM's sshd (GET /v1/vms/{ref}/ssh, which waits until
// sshd listens). The connection goes through the forward endpoint to GuestAddress (what
// `banger vm ssh-proxy` does), never to the guest's network address.
type SSHTarget struct {
	VM           string `json:"vm"`
	GuestAddress string `json:"guest_address"` // where sshd listens inside the guest: 127.0.0.1:22
	User         string `json:"user"`
	KeyFile      string `json:"key_file"`
	KnownHosts   string `json:"known_hosts"`
	HostAlias    string `json:"host_alias"` // <name>.vm: the name its host key is recorded under
	SSHConfig    string `json:"ssh_config"` // banger's ssh_config, for `ssh <name>.vm`
}

// ForwardRequest is the body of POST /v1/vms/{ref}/forward (Upgrade: banger-forward): the
// connection then carries the bytes of a connection to Address inside the guest.
type ForwardRequest struct {
	Network string `json:"network"` // tcp or unix
	Address string `json:"address"` // 127.0.0.1:PORT, or a socket path
}

// ForwardUpgrade is the Upgrade token of port forwarding connections.
const ForwardUpgrade = "banger-forward"
