package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
)

// openUpgrade sends body to t asking to switch to the upgrade protocol and returns the
// upgraded connection; an ordinary answer is decoded as the daemon's error.
func (c *Client) openUpgrade(ctx context.Context, t target, upgrade string, body any) (io.ReadWriteCloser, error) {
	req, err := c.newRequest(ctx, t, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", upgrade)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.connError(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return nil, fmt.Errorf("daemon switched protocols but the connection is not writable")
	}
	return rwc, nil
}
