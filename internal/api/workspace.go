package api

import "time"

// UploadUpgrade is the Upgrade token of POST /v1/vms/{ref}/upload: the connection then carries
// a tar stream as wire.Stdin frames ended by wire.StdinEOF, and the guest answers with one
// wire.Reply frame ({"error":…, "untar":{"files":N,"bytes":N}}).
const UploadUpgrade = "banger-upload"

// UploadRequest is the body of POST /v1/vms/{ref}/upload.
type UploadRequest struct {
	Dest        string `json:"dest"`                  // absolute directory in the guest
	Compression string `json:"compression,omitempty"` // "" or "zstd"
	Keep        string `json:"keep,omitempty"`        // also save the stream as sent at this guest path
}

// Workspace records what was shipped into a VM (PUT /v1/vms/{ref}/workspace), so that later
// commands can run there and warn when the host has moved on.
type Workspace struct {
	HostPath  string    `json:"host_path"`  // the repository's top directory on the host
	GuestPath string    `json:"guest_path"` // where it is in the guest
	Head      string    `json:"head"`       // the host's HEAD commit when shipped
	Branch    string    `json:"branch,omitempty"`
	Files     int       `json:"files"`
	Bytes     int64     `json:"bytes"`
	ShippedAt time.Time `json:"shipped_at"`
}
