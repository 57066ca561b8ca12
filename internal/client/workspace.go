package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/wire"
)

// UploadResult counts what an upload wrote in the guest.
type UploadResult struct {
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
}

// Upload streams the tar archive read from src into req.Dest in a running VM (extracted as it
// arrives; nothing is staged on the host) and returns what the guest wrote.
func (c *Client) Upload(ctx context.Context, ref string, req api.UploadRequest, src io.Reader) (UploadResult, error) {
	dest := req.Dest
	rwc, err := c.openUpgrade(ctx, to(api.RouteUpload, ref), api.UploadUpgrade, req)
	if err != nil {
		return UploadResult{}, err
	}
	defer rwc.Close()
	stop := context.AfterFunc(ctx, func() { rwc.Close() })
	defer stop()
	sendErr := wire.SendStream(wire.NewWriter(rwc), src)
	// The guest answers even when it stopped reading early (a bad entry): read its word.
	var rep struct {
		Error string        `json:"error"`
		Untar *UploadResult `json:"untar"`
	}
	if err := wire.NewReader(rwc).NextJSON(wire.Reply, &rep); err != nil {
		if ctx.Err() != nil {
			return UploadResult{}, ctx.Err()
		}
		return UploadResult{}, errors.Join(fmt.Errorf("upload into %s: no answer from the guest: %w", dest, err), sendErr)
	}
	if rep.Error != "" {
		return UploadResult{}, fmt.Errorf("upload into %s: %s", dest, rep.Error)
	}
	if sendErr != nil {
		return UploadResult{}, fmt.Errorf("upload into %s: %w", dest, sendErr)
	}
	var res UploadResult
	if rep.Untar != nil {
		res = *rep.Untar
	}
	return res, nil
}

// SetWorkspace records what was shipped into a VM.
func (c *Client) SetWorkspace(ctx context.Context, ref string, ws api.Workspace) error {
	return c.do(ctx, to(api.RouteSetWorkspace, ref), ws, nil)
}
