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
)

// Request opens a stream.
type Request struct {
	Op        string        `json:"op"`
	Exec      *ExecRequest  `json:"exec,omitempty"`
	Provision *Provision    `json:"provision,omitempty"`
	Dial      *DialRequest  `json:"dial,omitempty"`
	Untar     *UntarRequest `json:"untar,omitempty"`
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
