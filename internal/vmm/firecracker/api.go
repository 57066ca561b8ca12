package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The request and response bodies of Firecracker's HTTP API, as its OpenAPI description
// (src/firecracker/swagger/firecracker.yaml) defines them. Firecracker rejects unknown fields,
// so every field that not all supported versions (1.8 and later) know is omitted when empty.

// MachineConfig is PUT /machine-config (MachineConfiguration).
type MachineConfig struct {
	VCPUCount  int  `json:"vcpu_count"`
	MemSizeMiB int  `json:"mem_size_mib"`
	SMT        bool `json:"smt"`
	// TrackDirtyPages enables diff snapshots (a later feature).
	TrackDirtyPages bool `json:"track_dirty_pages,omitempty"`
	// HugePages is "None" or "2M" (and "Transparent" on recent versions); empty means None.
	HugePages string `json:"huge_pages,omitempty"`
}

// BootSource is PUT /boot-source.
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	InitrdPath      string `json:"initrd_path,omitempty"`
	BootArgs        string `json:"boot_args,omitempty"`
}

// Drive is PUT /drives/{drive_id} for a virtio-block device backed by a file.
type Drive struct {
	DriveID      string `json:"drive_id"`
	PathOnHost   string `json:"path_on_host"`
	IsRootDevice bool   `json:"is_root_device"`
	IsReadOnly   bool   `json:"is_read_only"`
	// CacheType is "Unsafe" (the default: flushes are not passed to the host) or "Writeback".
	CacheType string `json:"cache_type,omitempty"`
	// IOEngine is "Sync" (the default) or "Async" (io_uring, host kernels 5.10.51+).
	IOEngine string `json:"io_engine,omitempty"`
}

// NetworkInterface is PUT /network-interfaces/{iface_id}: a virtio-net device backed by a tap.
type NetworkInterface struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
	GuestMAC    string `json:"guest_mac,omitempty"`
}

// Vsock is PUT /vsock. Host-initiated connections go through the unix socket at UDSPath
// ("CONNECT <port>\n"); guest-initiated ones to <UDSPath>_<port>.
type Vsock struct {
	GuestCID int    `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
}

// Logger is PUT /logger.
type Logger struct {
	LogPath       string `json:"log_path"`
	Level         string `json:"level,omitempty"` // Error, Warning, Info, Debug, Trace, Off
	ShowLevel     bool   `json:"show_level"`
	ShowLogOrigin bool   `json:"show_log_origin"`
}

// Metrics is PUT /metrics.
type Metrics struct {
	MetricsPath string `json:"metrics_path"`
}

// Action types of PUT /actions.
const (
	ActionInstanceStart  = "InstanceStart"
	ActionSendCtrlAltDel = "SendCtrlAltDel"
	ActionFlushMetrics   = "FlushMetrics"
)

// Action is PUT /actions (InstanceActionInfo).
type Action struct {
	ActionType string `json:"action_type"`
}

// VM states of PATCH /vm.
const (
	VMPaused  = "Paused"
	VMResumed = "Resumed"
)

// VMState is PATCH /vm (Vm).
type VMState struct {
	State string `json:"state"`
}

// Instance states as GET / reports them.
const (
	StateNotStarted = "Not started"
	StateRunning    = "Running"
	StatePaused     = "Paused"
)

// InstanceInfo is the answer to GET /.
type InstanceInfo struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	VMMVersion string `json:"vmm_version"`
	AppName    string `json:"app_name"`
}

// VersionInfo is the answer to GET /version (FirecrackerVersion).
type VersionInfo struct {
	FirecrackerVersion string `json:"firecracker_version"`
}

// faultBody is Firecracker's error body (Error).
type faultBody struct {
	FaultMessage string `json:"fault_message"`
}

// APIError is a request Firecracker answered with an error status. Its message carries
// Firecracker's fault_message verbatim.
type APIError struct {
	// Resource names what was being configured: "boot-source", "drives/disk0", "actions
	// InstanceStart", …
	Resource string
	Status   int
	Fault    string
}

func (e *APIError) Error() string {
	msg := e.Fault
	if msg == "" {
		msg = fmt.Sprintf("HTTP %d without a fault message", e.Status)
	}
	return "firecracker rejected " + e.Resource + ": " + msg
}

// Client talks to one Firecracker process over its API socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the API socket at path (a symlink to it works too: use it
// only where nobody but root can change the path; a jailed Firecracker's socket is dialed with
// Machine's own client).
func NewClient(socket string) *Client {
	return newDialClient(socket, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	})
}

// newDialClient returns a client that connects with dial; socket names it in errors.
func newDialClient(socket string, dial func(context.Context) (net.Conn, error)) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx)
		},
		MaxIdleConns:    1,
		IdleConnTimeout: 5 * time.Second,
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// requestTimeout bounds one API call when the caller's context has no deadline.
const requestTimeout = 10 * time.Second

// do sends one request. body is JSON-encoded when not nil; out, when not nil, receives the
// decoded 200 answer. resource names the call in errors.
func (c *Client) do(ctx context.Context, method, path, resource string, body, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, requestTimeout)
		defer cancel()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("firecracker %s: encode request: %w", resource, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, rd)
	if err != nil {
		return fmt.Errorf("firecracker %s: %w", resource, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("firecracker %s: %w", resource, unwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("firecracker %s: read answer: %w", resource, err)
	}
	return decodeResponse(resource, resp.StatusCode, data, out)
}

// decodeResponse maps one API answer to a result: 204 (and 200) succeed, anything else is an
// *APIError with Firecracker's fault_message.
func decodeResponse(resource string, status int, data []byte, out any) error {
	if status == http.StatusOK || status == http.StatusNoContent {
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("firecracker %s: decode answer %q: %w", resource, truncate(string(data), 200), err)
		}
		return nil
	}
	var f faultBody
	if err := json.Unmarshal(data, &f); err != nil || f.FaultMessage == "" {
		f.FaultMessage = strings.TrimSpace(truncate(string(data), 500))
	}
	return &APIError{Resource: resource, Status: status, Fault: f.FaultMessage}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// unwrapURLError drops net/http's `Put "http://localhost/…":` prefix, which names a URL that
// does not exist (the API is a unix socket).
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Describe is GET /.
func (c *Client) Describe(ctx context.Context) (InstanceInfo, error) {
	var info InstanceInfo
	err := c.do(ctx, http.MethodGet, "/", "instance info request", nil, &info)
	return info, err
}

// Version is GET /version.
func (c *Client) Version(ctx context.Context) (string, error) {
	var v VersionInfo
	if err := c.do(ctx, http.MethodGet, "/version", "version request", nil, &v); err != nil {
		return "", err
	}
	return v.FirecrackerVersion, nil
}

// PutLogger configures the log file (which must exist).
func (c *Client) PutLogger(ctx context.Context, l Logger) error {
	return c.do(ctx, http.MethodPut, "/logger", "logger", l, nil)
}

// PutMetrics configures the metrics file (which must exist).
func (c *Client) PutMetrics(ctx context.Context, m Metrics) error {
	return c.do(ctx, http.MethodPut, "/metrics", "metrics", m, nil)
}

// PutMachineConfig sets vCPUs and memory.
func (c *Client) PutMachineConfig(ctx context.Context, m MachineConfig) error {
	return c.do(ctx, http.MethodPut, "/machine-config", "machine-config", m, nil)
}

// PutBootSource sets kernel, initrd and kernel command line.
func (c *Client) PutBootSource(ctx context.Context, b BootSource) error {
	return c.do(ctx, http.MethodPut, "/boot-source", "boot-source", b, nil)
}

// PutDrive attaches a block device.
func (c *Client) PutDrive(ctx context.Context, d Drive) error {
	return c.do(ctx, http.MethodPut, "/drives/"+d.DriveID, "drive "+d.DriveID, d, nil)
}

// PutNetworkInterface attaches a virtio-net device backed by a host tap.
func (c *Client) PutNetworkInterface(ctx context.Context, n NetworkInterface) error {
	return c.do(ctx, http.MethodPut, "/network-interfaces/"+n.IfaceID, "network interface "+n.IfaceID, n, nil)
}

// PutVsock attaches the vsock device.
func (c *Client) PutVsock(ctx context.Context, v Vsock) error {
	return c.do(ctx, http.MethodPut, "/vsock", "vsock", v, nil)
}

// Action runs one of the synchronous actions (InstanceStart, SendCtrlAltDel, FlushMetrics).
func (c *Client) Action(ctx context.Context, action string) error {
	return c.do(ctx, http.MethodPut, "/actions", action, Action{ActionType: action}, nil)
}

// PatchVM pauses or resumes the vCPUs.
func (c *Client) PatchVM(ctx context.Context, state string) error {
	return c.do(ctx, http.MethodPatch, "/vm", "vm state "+state, VMState{State: state}, nil)
}

// Snapshot types of PUT /snapshot/create.
const SnapshotFull = "Full"

// SnapshotCreate is PUT /snapshot/create (SnapshotCreateParams); the VM must be paused.
type SnapshotCreate struct {
	SnapshotType string `json:"snapshot_type,omitempty"`
	SnapshotPath string `json:"snapshot_path"`
	MemFilePath  string `json:"mem_file_path"`
}

// MemBackend is where a loaded snapshot's guest memory comes from (MemoryBackend).
type MemBackend struct {
	BackendType string `json:"backend_type"` // "File" (mapped privately) or "Uffd"
	BackendPath string `json:"backend_path"`
}

// NetworkOverride gives a restored network interface another tap (NetworkOverride).
type NetworkOverride struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
}

// VsockOverride gives a restored vsock device another unix socket (VsockOverride).
type VsockOverride struct {
	UDSPath string `json:"uds_path"`
}

// SnapshotLoad is PUT /snapshot/load (SnapshotLoadParams), allowed only on a Firecracker that
// has not started a machine.
type SnapshotLoad struct {
	SnapshotPath     string            `json:"snapshot_path"`
	MemBackend       MemBackend        `json:"mem_backend"`
	ResumeVM         bool              `json:"resume_vm"`
	NetworkOverrides []NetworkOverride `json:"network_overrides,omitempty"`
	VsockOverride    *VsockOverride    `json:"vsock_override,omitempty"`
}

// PartialDrive is PATCH /drives/{id}: another backing file for a drive of a started (or
// loaded) machine.
type PartialDrive struct {
	DriveID    string `json:"drive_id"`
	PathOnHost string `json:"path_on_host"`
}

// CreateSnapshot saves the paused machine's state and memory.
func (c *Client) CreateSnapshot(ctx context.Context, s SnapshotCreate) error {
	return c.do(ctx, http.MethodPut, "/snapshot/create", "snapshot create", s, nil)
}

// LoadSnapshot loads a snapshot into a Firecracker that has not started a machine.
func (c *Client) LoadSnapshot(ctx context.Context, s SnapshotLoad) error {
	return c.do(ctx, http.MethodPut, "/snapshot/load", "snapshot load", s, nil)
}

// PatchDrive points a drive at another backing file.
func (c *Client) PatchDrive(ctx context.Context, d PartialDrive) error {
	return c.do(ctx, http.MethodPatch, "/drives/"+d.DriveID, "drive "+d.DriveID+" update", d, nil)
}
