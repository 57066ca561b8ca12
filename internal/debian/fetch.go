package debian

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
)

var errNotFound = errors.New("not found")

// get fetches url into memory, refusing bodies larger than limit.
func (a *Archive) get(ctx context.Context, url string, limit int64) ([]byte, error) {
	resp, err := a.open(ctx, url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", url, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("download %s: larger than the expected %d bytes", url, limit)
	}
	return data, nil
}

// open issues a GET and returns the response if the status is 200.
func (a *Archive) open(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", url, err)
	}
	resp, err := a.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s (is the mirror reachable?): %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("fetch %s: %s: %w", url, resp.Status, errNotFound)
		}
		return nil, fmt.Errorf("fetch %s: %s", url, resp.Status)
	}
	return resp, nil
}
