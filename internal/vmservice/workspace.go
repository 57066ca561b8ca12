package vmservice

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/store"
)

// workspaceFile in a VM's directory records what was shipped into it.
const workspaceFile = "workspace.json"

// Workspace is what was shipped into a VM.
type Workspace struct {
	HostPath  string    `json:"host_path"`
	GuestPath string    `json:"guest_path"`
	Head      string    `json:"head"`
	Branch    string    `json:"branch,omitempty"`
	Files     int       `json:"files"`
	Bytes     int64     `json:"bytes"`
	ShippedAt time.Time `json:"shipped_at"`
}

// OpenUpload starts an upload into a running VM: the returned stream takes the tar stream as
// wire.Stdin frames ended by wire.StdinEOF and answers with the guest's wire.Reply.
func (s *Service) OpenUpload(ctx context.Context, ref string, req agent.UntarRequest) (net.Conn, store.VM, error) {
	if !filepath.IsAbs(req.Dest) {
		return nil, store.VM{}, invalidf("upload destination %q: want an absolute path in the guest", req.Dest)
	}
	if req.Keep != "" && !filepath.IsAbs(req.Keep) {
		return nil, store.VM{}, invalidf("upload keep %q: want an absolute path in the guest", req.Keep)
	}
	c, vm, err := s.agentOf(ctx, ref)
	if err != nil {
		return nil, vm, err
	}
	st, err := c.Open(ctx, agent.Request{Op: agent.OpUntar, Untar: &req})
	if err != nil {
		return nil, vm, fmt.Errorf("vm %q: %w", vm.Name, err)
	}
	return st, vm, nil
}

// SetWorkspace records what was shipped into a VM.
func (s *Service) SetWorkspace(ctx context.Context, ref string, ws Workspace) (store.VM, error) {
	vm, err := s.Resolve(ctx, ref)
	if err != nil {
		return vm, err
	}
	if ws.ShippedAt.IsZero() {
		ws.ShippedAt = time.Now().UTC()
	}
	b, err := json.MarshalIndent(ws, "", "  ")
	if err != nil {
		return vm, err
	}
	if err := os.WriteFile(filepath.Join(vm.Dir, workspaceFile), append(b, '\n'), 0o600); err != nil {
		return vm, fmt.Errorf("vm %q: record workspace: %w", vm.Name, err)
	}
	return vm, nil
}

// WorkspaceOf returns what was shipped into a VM, if anything.
func WorkspaceOf(vm store.VM) (Workspace, bool) {
	b, err := os.ReadFile(filepath.Join(vm.Dir, workspaceFile))
	if err != nil {
		return Workspace{}, false
	}
	var ws Workspace
	if json.Unmarshal(b, &ws) != nil {
		return Workspace{}, false
	}
	return ws, true
}
