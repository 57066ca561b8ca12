// Package client is the Go client of the daemon's API (package api): it connects to the
// daemon's unix socket, starts the daemon when nothing answers, restarts it when it is a
// different build, and wraps every route in a typed method. Operation streams are decoded
// into api.Events for the caller to render.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/peercred"
)

// Client talks to one daemon.
type Client struct {
	socket string
	http   *http.Client
	// Header is added to every request (tests set api.HeaderInjectFault here).
	Header http.Header
}

// New returns a client for the daemon listening on socket. It does not connect.
//
// Every connection is checked before a byte is sent: the socket file must be a socket owned
// by root or this process's uid, and so must be the process that listens on it (SO_PEERCRED).
// Otherwise another local user could pose as the daemon and receive what the CLI sends (files
// to sync, credentials). A refusal is a *peercred.UntrustedError (peercred.ErrUntrusted).
func New(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialDaemon(ctx, socket)
		},
		DisableCompression: true,
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr}, Header: http.Header{}}
}

// Socket is the daemon socket this client uses.
func (c *Client) Socket() string { return c.socket }

// target is where a request goes: a route's method and its path with the wildcards filled in.
type target struct{ method, path string }

// to is route with its wildcards filled in by values (see api.Route.Path).
func to(route api.Route, values ...string) target {
	return target{method: route.Method(), path: route.Path(values...)}
}

// withQuery is t with q as its query string.
func (t target) withQuery(q url.Values) target {
	t.path += "?" + q.Encode()
	return t
}

func (c *Client) newRequest(ctx context.Context, t target, body any) (*http.Request, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, t.method, "http://bangerd"+t.path, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range c.Header {
		req.Header[k] = v
	}
	return req, nil
}

// do sends a request and decodes a JSON answer into out (which may be nil).
func (c *Client) do(ctx context.Context, t target, body, out any) error {
	req, err := c.newRequest(ctx, t, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.connError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("daemon sent an unreadable answer to %s %s: %w", t.method, t.path, err)
	}
	return nil
}

// ErrNoDaemon means nothing answers on the socket.
var ErrNoDaemon = errors.New("daemon is not running")

// dialDaemon connects to socket once both it and the process serving it are trusted: owned by
// root or by this process's uid.
func dialDaemon(ctx context.Context, socket string) (net.Conn, error) {
	trusted := peercred.Trusted(os.Geteuid())
	hint := "another user may be posing as banger's daemon; nothing was sent. Remove " + socket +
		" as root, or set BANGER_SOCKET to a socket in a directory of your own"
	// A missing socket is left to the dial, whose error means "no daemon".
	if err := peercred.CheckSocketFile(socket, hint, trusted...); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	if err := peercred.Check(conn, "the process serving "+socket, hint, trusted...); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func (c *Client) connError(err error) error {
	var untrusted *peercred.UntrustedError
	if errors.As(err, &untrusted) {
		return fmt.Errorf("refusing to talk to the daemon socket %s: %w", c.socket, untrusted)
	}
	var ne *net.OpError
	if errors.As(err, &ne) && ne.Op == "dial" {
		return fmt.Errorf("%w (socket %s): %v", ErrNoDaemon, c.socket, ne.Err)
	}
	return fmt.Errorf("talk to daemon at %s: %w", c.socket, err)
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var body api.ErrorBody
	if json.Unmarshal(b, &body) == nil && body.Error != nil {
		return body.Error
	}
	msg := strings.TrimSpace(string(b))
	if msg == "" {
		return &api.Error{Code: "internal", Message: fmt.Sprintf("daemon answered %s with no explanation", resp.Status)}
	}
	return &api.Error{Code: "internal", Message: fmt.Sprintf("daemon answered %s: %s", resp.Status, msg)}
}

// Version asks the daemon who it is.
func (c *Client) Version(ctx context.Context) (api.Version, error) {
	var v api.Version
	err := c.do(ctx, to(api.RouteVersion), nil, &v)
	return v, err
}

// Shutdown asks the daemon to exit (VMs keep running).
func (c *Client) Shutdown(ctx context.Context) error {
	return c.do(ctx, to(api.RouteShutdown), nil, nil)
}

// ListVMs lists every VM.
func (c *Client) ListVMs(ctx context.Context) ([]api.VM, error) {
	var vms []api.VM
	err := c.do(ctx, to(api.RouteListVMs), nil, &vms)
	return vms, err
}

// GetVM returns one VM by reference.
func (c *Client) GetVM(ctx context.Context, ref string) (api.VM, error) {
	var vm api.VM
	err := c.do(ctx, to(api.RouteGetVM, ref), nil, &vm)
	return vm, err
}

// DeleteVM stops (if needed) and deletes a VM with its disk.
//
// A running VM is deleted only with force; without it the daemon refuses (conflict), so that a
// VM someone is using is not lost to a typo.
func (c *Client) DeleteVM(ctx context.Context, ref string, force bool) error {
	t := to(api.RouteDeleteVM, ref)
	if force {
		t = t.withQuery(url.Values{"force": {"1"}})
	}
	return c.do(ctx, t, nil, nil)
}

// CreateVM creates and starts a VM, passing every event to onEvent, and returns the ready VM.
func (c *Client) CreateVM(ctx context.Context, req api.CreateVMRequest, onEvent func(api.Event)) (api.VM, error) {
	res, err := c.CreateVMResult(ctx, req, onEvent)
	if err != nil {
		return api.VM{}, err
	}
	return *res.VM, nil
}

// CreateVMResult is CreateVM returning the whole final event: the VM and the daemon's timing
// of each start step.
func (c *Client) CreateVMResult(ctx context.Context, req api.CreateVMRequest, onEvent func(api.Event)) (api.Event, error) {
	res, err := c.stream(ctx, to(api.RouteCreateVM), req, onEvent)
	if err != nil {
		return api.Event{}, err
	}
	if res.VM == nil {
		return api.Event{}, fmt.Errorf("daemon finished creating the VM but sent no VM")
	}
	return res, nil
}

// ListOperations lists the daemon's running and recently finished operations.
func (c *Client) ListOperations(ctx context.Context) ([]api.Operation, error) {
	var out []api.Operation
	err := c.do(ctx, to(api.RouteListOperations), nil, &out)
	return out, err
}

// WatchOperation follows an operation from its first event (whoever started it) and returns
// its final event.
func (c *Client) WatchOperation(ctx context.Context, id string, onEvent func(api.Event)) (api.Event, error) {
	return c.stream(ctx, to(api.RouteWatchOperation, id), nil, onEvent)
}

// stream runs an operation and decodes its event stream up to the final event.
func (c *Client) stream(ctx context.Context, t target, body any, onEvent func(api.Event)) (api.Event, error) {
	req, err := c.newRequest(ctx, t, body)
	if err != nil {
		return api.Event{}, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return api.Event{}, ctx.Err()
		}
		return api.Event{}, c.connError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return api.Event{}, decodeError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var ev api.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return api.Event{}, fmt.Errorf("daemon sent an unreadable event: %w", err)
		}
		switch ev.Type {
		case api.EventResult:
			return ev, nil
		case api.EventError:
			if ev.Error == nil {
				ev.Error = &api.Error{Code: "internal", Message: "operation failed without a reason"}
			}
			return ev, ev.Error
		}
		if onEvent != nil {
			onEvent(ev)
		}
	}
	if ctx.Err() != nil {
		return api.Event{}, ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return api.Event{}, fmt.Errorf("lost the daemon's event stream: %w", err)
	}
	return api.Event{}, fmt.Errorf("daemon ended the operation without a result; see its log")
}
