package debian

import (
	"context"
	"io"

	"github.com/banger-dev/banger/internal/download"
)

var errNotFound = download.ErrNotFound

// get fetches url into memory, refusing bodies larger than limit (the size the signed chain
// declares, or a bound for the InRelease).
func (a *Archive) get(ctx context.Context, url string, limit int64) ([]byte, error) {
	return a.client().Bytes(ctx, url, limit)
}

// open issues a GET for a body of at most limit bytes and returns it if the status is 200.
func (a *Archive) open(ctx context.Context, url string, limit int64) (io.ReadCloser, error) {
	return a.client().Get(ctx, url, limit)
}
