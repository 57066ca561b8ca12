// Package agent is the protocol between the host and banger-agent in the guest, and the host's
// client for it.
//
// The transport is one byte stream per VM: a virtio-serial port under QEMU, a vsock connection
// under Firecracker. A connection starts with a line-based handshake that makes the stream
// clean (a serial port can hold stale bytes from an earlier connection):
//
//	host:  BANGER-SYNC <nonce>\n   (repeated until acknowledged; the guest may not listen yet)
//	guest: BANGER-ACK <nonce> <agent version>\n
//	host:  BANGER-GO <nonce>\n
//
// Each side discards everything before the line it waits for. Then yamux runs on the stream,
// the host as client. Every request is one yamux stream that starts with a wire.Request frame
// holding a JSON Request; unary requests are answered with one wire.Reply frame, exec streams
// carry the frames of package wire until wire.Exit.
package agent

import "time"

// PortName is the virtio-serial port name the agent listens on (QEMU).
const PortName = "org.banger.agent.0"

// VsockPort is the vsock port the agent listens on (Firecracker).
const VsockPort = 1024

// GuestBinary is where the agent's binary is in a running guest (the initramfs installs it
// there), for commands run in the guest that need one of its tools, e.g. `banger-agent extract`.
const GuestBinary = "/run/banger/banger-agent"

// ImageEnvFile holds, in an image made from an OCI image, the environment its config sets
// (KEY=VALUE lines, e.g. a PATH with /usr/local/go/bin): the agent gives it to every command,
// under the request's own entries.
const ImageEnvFile = "/etc/banger/image.env"

// Operations.
const (
	OpHealth    = "health"
	OpExec      = "exec"
	OpPoweroff  = "poweroff"
	OpProvision = "provision" // write host-made files (ssh keys, config) and restart units
	OpPorts     = "ports"     // list listening sockets
	OpDial      = "dial"      // connect to an address in the guest; the stream then carries its bytes
	OpUntar     = "untar"     // extract the tar stream that follows (Stdin frames) into a directory
	OpRenew     = "renew"     // after a restore from a snapshot: catch up (clock, entropy) or become a new machine
)

// Request opens a stream.
type Request struct {
	Op        string        `json:"op"`
	Exec      *ExecRequest  `json:"exec,omitempty"`
	Provision *Provision    `json:"provision,omitempty"`
	Dial      *DialRequest  `json:"dial,omitempty"`
	Untar     *UntarRequest `json:"untar,omitempty"`
	Renew     *Renewal      `json:"renew,omitempty"`
}

// Limits of a Renewal, checked by both sides.
const (
	// MinEntropy and MaxEntropy bound Renewal.Entropy, in bytes.
	MinEntropy = 32
	MaxEntropy = 512
	// MaxRenewalFiles bounds Renewal.HostKeys.
	MaxRenewalFiles = 16
)

// Renewal is what the host tells a guest right after its VMM restored it from a snapshot,
// before the guest runs anything for the user. Every field is optional; the agent applies
// the ones that are set — Clock first, Entropy next, then the others at once — and replies
// once all are in effect (an error names the parts that failed; the others stay applied).
//
// A VM resumed as itself (vm resume) gets Clock and Entropy: its memory is its own, but time
// went on and its random pool must not repeat what it produced before the suspend. A clone
// (a fork, a warm start from a boot snapshot) gets every field: it must become a machine of
// its own, different from its snapshot and from every other clone of it.
type Renewal struct {
	// Clock is the host's time when the request was sent; the guest sets its system clock
	// (and the RTC, where it has one) to it.
	Clock time.Time `json:"clock,omitzero"`
	// Entropy is MinEntropy..MaxEntropy bytes of host randomness that the guest credits to
	// its kernel RNG (RNDADDENTROPY) and that reseeds it (RNDRESEEDCRNG), so that clones of
	// one snapshot do not produce the same random bytes.
	Entropy []byte `json:"entropy,omitempty"`
	// Hostname is the guest's new host name (a DNS label).
	Hostname string `json:"hostname,omitempty"`
	// MachineID is the new /etc/machine-id: 32 lowercase hex digits.
	MachineID string `json:"machine_id,omitempty"`
	// Network is the guest's new address on banger's network.
	Network *NetworkIdentity `json:"network,omitempty"`
	// HostKeys are the guest's new ssh host key files (written as Provision writes files);
	// the agent then makes sshd use them (reload or restart) if it runs.
	HostKeys []File `json:"host_keys,omitempty"`
}

// NetworkIdentity is a guest's identity on banger's network. The agent sets the MAC of the
// interface that has OldMAC (the one the snapshot's device had), flushes its addresses,
// routes and neighbour cache, then configures Address, the default route via Gateway and the
// resolvers; it sends a gratuitous ARP for the new address.
type NetworkIdentity struct {
	OldMAC  string   `json:"old_mac"`
	MAC     string   `json:"mac"`
	Address string   `json:"address"` // CIDR, e.g. 172.16.0.5/24
	Gateway string   `json:"gateway"`
	DNS     []string `json:"dns,omitempty"`
}

// UntarRequest extracts a tar stream, sent as wire.Stdin frames ended by wire.StdinEOF, into
// Dest (created). Compression is "" or "zstd". Keep, when set, is an absolute path in the guest
// where the stream is also saved as sent, once all of it was extracted. The reply carries an
// UntarResult.
type UntarRequest struct {
	Dest        string `json:"dest"`
	Compression string `json:"compression,omitempty"`
	Keep        string `json:"keep,omitempty"`
}

// UntarResult counts what an upload wrote.
type UntarResult struct {
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
}

// Provision is files the host made for the guest (ssh host keys, authorized keys, sshd
// settings), written atomically as root, and units to restart if they run already so that
// they pick the files up.
type Provision struct {
	Files        []File   `json:"files"`
	RestartUnits []string `json:"restart_units,omitempty"`
}

// File is one file to write. Parent directories are created with DirMode (0755 if zero).
type File struct {
	Path    string `json:"path"`
	Mode    uint32 `json:"mode"`
	DirMode uint32 `json:"dir_mode,omitempty"`
	Data    []byte `json:"data"`
}

// DialRequest asks the agent to connect to an address in the guest: network "tcp" (address
// host:port, usually 127.0.0.1:PORT) or "unix" (a socket path).
type DialRequest struct {
	Network string `json:"network"`
	Address string `json:"address"`
}

// Port is a listening socket in the guest.
type Port struct {
	Proto   string `json:"proto"` // tcp, tcp6, udp, udp6
	Addr    string `json:"addr"`  // local address, e.g. 0.0.0.0 or ::
	Port    int    `json:"port"`
	PID     int    `json:"pid,omitempty"`
	Process string `json:"process,omitempty"`
}

// ExecRequest starts a command in the guest.
type ExecRequest struct {
	// Argv is the command and its arguments, passed to execve unchanged (never re-tokenised).
	Argv []string `json:"argv"`
	// Env holds extra KEY=VALUE entries added to the agent's login-like default environment.
	Env []string `json:"env,omitempty"`
	// Dir is the working directory; empty means the user's home.
	Dir string `json:"dir,omitempty"`
	// TTY runs the command on a pseudo-terminal of Rows×Cols; stdout then carries the
	// terminal's output and there is no separate stderr.
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
}

// Reply answers a unary request. Error is set when the request failed.
type Reply struct {
	Error  string       `json:"error,omitempty"`
	Health *Health      `json:"health,omitempty"`
	Ports  []Port       `json:"ports,omitempty"`
	Untar  *UntarResult `json:"untar,omitempty"`
	// Renewed says, for a renewal, how long it and each of its parts took (for the host's
	// log: the guest's journal is kept out of a clone's start, where journald's work is
	// ~10 % of the guest's). Agents before it leave it empty.
	Renewed string `json:"renewed,omitempty"`
}

// Health describes the guest as the agent sees it.
type Health struct {
	AgentVersion string        `json:"agent_version"`
	BootID       string        `json:"boot_id"`
	Hostname     string        `json:"hostname"`
	Uptime       time.Duration `json:"uptime"`
	// Init is what runs as PID 1: "systemd", or "agent" where the agent is PID 1 itself.
	Init string `json:"init"`
	// SSH is what the agent recorded about sshd this boot; nil until it has looked.
	SSH *SSHStatus `json:"ssh,omitempty"`
}

// SSH states.
const (
	SSHRunning     = "running"     // sshd was started (or its systemd unit manages it)
	SSHInstalling  = "installing"  // the image's package manager is installing it
	SSHUnavailable = "unavailable" // no sshd, and Reason says why it could not be installed
)

// SSHStatus is whether sshd runs in the guest, and why not.
type SSHStatus struct {
	State  string    `json:"state"`
	Reason string    `json:"reason,omitempty"`
	Sshd   string    `json:"sshd,omitempty"` // the sshd binary
	Via    string    `json:"via,omitempty"`  // how it was installed, e.g. "apk add openssh-server"
	Time   time.Time `json:"time"`
}
