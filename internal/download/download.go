// Package download fetches files from the network for banger (bundles, Debian metadata and
// packages) with every wait and every size bounded: connecting, the TLS handshake and the
// response headers each have a timeout, a body that stops sending for Stall is abandoned, and
// a body longer than the size its caller expects — the size a signed index or a catalog entry
// declares, or MaxSize when nothing declares one — is cut off with an error naming the URL,
// before the caller hashes or stores the excess.
package download

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Timeouts of the default HTTP client and the default stall timeout.
const (
	DialTimeout           = 30 * time.Second
	TLSHandshakeTimeout   = 30 * time.Second
	ResponseHeaderTimeout = 60 * time.Second
	IdleConnTimeout       = 90 * time.Second
	DefaultStall          = 60 * time.Second
)

// MaxSize bounds a download whose caller declares no size. The largest things banger
// downloads are image bundles of a few GiB.
const MaxSize int64 = 64 << 30

// Errors a download can fail with, to match with errors.Is.
var (
	// ErrTooLarge: the body is longer than the size declared for it (or than MaxSize).
	ErrTooLarge = errors.New("larger than declared")
	// ErrStalled: no byte arrived for the stall timeout.
	ErrStalled = errors.New("stalled")
	// ErrNotFound: the server answered 404.
	ErrNotFound = errors.New("not found")
)

// NewHTTPClient returns an HTTP client with the package's dial, TLS handshake, response
// header and idle timeouts, and the environment's proxy settings. It has no overall timeout:
// a large download may take long as long as it keeps moving (see Client.Stall).
func NewHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   TLSHandshakeTimeout,
		ResponseHeaderTimeout: ResponseHeaderTimeout,
		IdleConnTimeout:       IdleConnTimeout,
		ExpectContinueTimeout: time.Second,
		MaxIdleConnsPerHost:   4,
		ForceAttemptHTTP2:     true,
	}}
}

var defaultHTTP = NewHTTPClient()

// Client downloads with bounded time and size. The zero value is ready to use: HTTP nil is a
// shared client from NewHTTPClient, Stall 0 is DefaultStall. It is safe for concurrent use.
type Client struct {
	HTTP  *http.Client
	Stall time.Duration // a body (or the response to the request) silent this long is abandoned
}

func (c *Client) http() *http.Client {
	if c == nil || c.HTTP == nil {
		return defaultHTTP
	}
	return c.HTTP
}

func (c *Client) stall() time.Duration {
	if c == nil || c.Stall <= 0 {
		return DefaultStall
	}
	return c.Stall
}

// Body is a response body being downloaded. Reads fail with ErrTooLarge past the declared
// size and with ErrStalled when nothing arrives for the stall timeout. Close it.
type Body struct {
	URL string
	// Size is the response's Content-Length, -1 when the server did not send one.
	Size int64

	r      io.ReadCloser
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	stall  time.Duration
	limit  int64
	n      int64
}

// Get requests url and returns its body once the server answered 200. limit is the size the
// caller expects at most (<= 0: MaxSize); a Content-Length above it fails at once. Errors
// name the URL; a 404 matches ErrNotFound.
func (c *Client) Get(ctx context.Context, url string, limit int64) (*Body, error) {
	if limit <= 0 || limit > MaxSize {
		limit = MaxSize
	}
	stall := c.stall()
	ctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(stall, func() {
		cancel(fmt.Errorf("download %s: %w: no data for %s (is the server or the network overloaded? retry)", url, ErrStalled, stall))
	})
	fail := func(err error) (*Body, error) {
		timer.Stop()
		if cause := context.Cause(ctx); errors.Is(cause, ErrStalled) {
			err = cause
		}
		cancel(nil)
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fail(fmt.Errorf("download %s: %w", url, err))
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return fail(fmt.Errorf("download %s (is the server reachable?): %w", url, err))
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return fail(fmt.Errorf("download %s: %s: %w", url, resp.Status, ErrNotFound))
		}
		return fail(fmt.Errorf("download %s: %s", url, resp.Status))
	}
	if resp.ContentLength > limit {
		resp.Body.Close()
		return fail(fmt.Errorf("download %s: the server announces %d bytes, larger than the %d bytes expected: %w", url, resp.ContentLength, limit, ErrTooLarge))
	}
	timer.Reset(stall)
	return &Body{URL: url, Size: resp.ContentLength, r: resp.Body, ctx: ctx, cancel: cancel, timer: timer, stall: stall, limit: limit}, nil
}

// Read reads the body, failing once more than the declared size has arrived.
func (b *Body) Read(p []byte) (int, error) {
	if b.n > b.limit {
		return 0, fmt.Errorf("download %s: larger than the %d bytes expected: %w", b.URL, b.limit, ErrTooLarge)
	}
	// Read at most one byte past the limit, to tell "exactly the limit" from "more".
	if room := b.limit + 1 - b.n; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := b.r.Read(p)
	if n > 0 {
		b.timer.Reset(b.stall)
	}
	b.n += int64(n)
	if b.n > b.limit {
		return n - int(b.n-b.limit), fmt.Errorf("download %s: larger than the %d bytes expected: %w", b.URL, b.limit, ErrTooLarge)
	}
	if err != nil && err != io.EOF {
		if cause := context.Cause(b.ctx); errors.Is(cause, ErrStalled) {
			return n, cause
		}
		return n, fmt.Errorf("download %s: %w (after %d bytes)", b.URL, err, b.n)
	}
	return n, err
}

// Close releases the connection.
func (b *Body) Close() error {
	b.timer.Stop()
	b.cancel(nil)
	return b.r.Close()
}

// Bytes downloads url into memory; limit is as for Get.
func (c *Client) Bytes(ctx context.Context, url string, limit int64) ([]byte, error) {
	b, err := c.Get(ctx, url, limit)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return io.ReadAll(b)
}

// Guard returns rc wrapped so that when no byte arrives for stall (<= 0: DefaultStall), rc is
// closed and the blocked read fails with ErrStalled, naming what. For bodies that come
// through other clients (registry blobs); Client.Get guards its own. Close the result.
func Guard(rc io.ReadCloser, stall time.Duration, what string) io.ReadCloser {
	if stall <= 0 {
		stall = DefaultStall
	}
	g := &guarded{rc: rc, stall: stall, what: what}
	g.timer = time.AfterFunc(stall, func() {
		g.stalled.Store(true)
		rc.Close()
	})
	return g
}

type guarded struct {
	rc      io.ReadCloser
	stall   time.Duration
	what    string
	timer   *time.Timer
	stalled atomic.Bool
}

func (g *guarded) Read(p []byte) (int, error) {
	n, err := g.rc.Read(p)
	if n > 0 {
		g.timer.Reset(g.stall)
	}
	if err != nil && err != io.EOF && g.stalled.Load() {
		return n, fmt.Errorf("%s: %w: no data for %s (is the server or the network overloaded? retry)", g.what, ErrStalled, g.stall)
	}
	return n, err
}

func (g *guarded) Close() error {
	g.timer.Stop()
	return g.rc.Close()
}
