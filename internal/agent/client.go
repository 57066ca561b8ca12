package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/banger-dev/banger/internal/termtext"
	"github.com/banger-dev/banger/internal/wire"
)

// YamuxConfig is the multiplexer configuration both sides use.
func YamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = io.Discard
	c.EnableKeepAlive = true
	c.KeepAliveInterval = 15 * time.Second
	c.ConnectionWriteTimeout = 30 * time.Second
	// A guest under software emulation can be slow to open streams while it boots.
	c.StreamOpenTimeout = 60 * time.Second
	c.MaxStreamWindowSize = 1 << 20
	return c
}

// Deadlines of unary calls: a guest that accepts a request and never answers fails the call
// with ErrNoReply after this long, whatever the caller's context allows. Provisioning and
// renewing restart or reload sshd, which a guest under software emulation may take minutes
// to do.
const (
	CallTimeout      = 15 * time.Second
	ProvisionTimeout = 2 * time.Minute
)

// ErrNoReply is matched by the error of a call the guest did not answer in time.
var ErrNoReply = errors.New("the guest agent did not answer in time")

// Client talks to one guest's agent over an established, handshaken connection.
type Client struct {
	session *yamux.Session
	version string
	// timeouts overrides CallTimeout/ProvisionTimeout by op (tests shorten them).
	timeouts map[string]time.Duration
}

// timeout is how long a unary call of op may wait for its reply.
func (c *Client) timeout(op string) time.Duration {
	if d, ok := c.timeouts[op]; ok {
		return d
	}
	if op == OpProvision || op == OpRenew {
		return ProvisionTimeout
	}
	return CallTimeout
}

// withDeadline bounds ctx by op's timeout; the cause it ends with matches ErrNoReply.
func (c *Client) withDeadline(ctx context.Context, op string) (context.Context, context.CancelFunc) {
	d := c.timeout(op)
	return context.WithTimeoutCause(ctx, d, fmt.Errorf("%w (no reply to %s within %s; the guest may be overloaded or its agent stuck: retry, or restart the VM)", ErrNoReply, op, d))
}

// Connect runs the handshake on conn and starts the multiplexer. On error conn is closed.
func Connect(ctx context.Context, conn net.Conn) (*Client, error) {
	c, version, err := ClientHandshake(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	s, err := yamux.Client(c, YamuxConfig())
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("agent: start multiplexer: %w", err)
	}
	return &Client{session: s, version: version}, nil
}

// Version is the agent's version as it announced it in the handshake.
func (c *Client) Version() string { return c.version }

// Close ends the session and its connection.
func (c *Client) Close() error { return c.session.Close() }

// Streams is how many streams (exec sessions, forwarded connections, calls) are open on the
// session now.
func (c *Client) Streams() int { return c.session.NumStreams() }

// Done is closed when the session ends (the guest went away, or Close was called).
func (c *Client) Done() <-chan struct{} { return c.session.CloseChan() }

// Open starts a stream carrying req and returns it for the caller to continue with frames
// of package wire. The daemon uses it to splice an exec session through to the CLI.
func (c *Client) Open(ctx context.Context, req Request) (net.Conn, error) {
	type result struct {
		s   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := c.session.OpenStream()
		ch <- result{s, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, ctx.Err()
	}
	if r.err != nil {
		return nil, fmt.Errorf("agent: open stream: %w", r.err)
	}
	if err := wire.NewWriter(r.s).WriteJSON(wire.Request, req); err != nil {
		r.s.Close()
		return nil, fmt.Errorf("agent: send %s request: %w", req.Op, err)
	}
	return r.s, nil
}

// call sends a unary request and decodes its reply, waiting at most the op's timeout.
func (c *Client) call(ctx context.Context, req Request) (Reply, error) {
	ctx, cancel := c.withDeadline(ctx, req.Op)
	defer cancel()
	s, err := c.Open(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			return Reply{}, fmt.Errorf("agent: %s: %w", req.Op, context.Cause(ctx))
		}
		return Reply{}, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { _ = s.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	rep, err := ReadReply(wire.NewReader(s))
	if err != nil {
		if ctx.Err() != nil {
			return Reply{}, fmt.Errorf("agent: %s: %w", req.Op, context.Cause(ctx))
		}
		return Reply{}, fmt.Errorf("agent: %s: %w", req.Op, err)
	}
	if rep.Error != "" {
		return rep, fmt.Errorf("agent: %s: %s", req.Op, rep.Error)
	}
	return rep, nil
}

// Health asks the agent how the guest is.
func (c *Client) Health(ctx context.Context) (Health, error) {
	rep, err := c.call(ctx, Request{Op: OpHealth})
	if err != nil {
		return Health{}, err
	}
	if rep.Health == nil {
		return Health{}, fmt.Errorf("agent: health: empty reply")
	}
	return *rep.Health, nil
}

// Renew applies r in a guest that was just restored from a snapshot (see Renewal). It
// returns once all of r is in effect, with the agent's account of how long each part took
// (empty from older agents); a guest whose agent predates OpRenew answers with an error
// naming the unknown operation.
func (c *Client) Renew(ctx context.Context, r Renewal) (report string, err error) {
	rep, err := c.call(ctx, Request{Op: OpRenew, Renew: &r})
	// The guest's words, bound for the daemon's log: bounded and escaped.
	return termtext.CleanLine(termtext.Truncate(rep.Renewed, maxRenewReport)), err
}

// maxRenewReport bounds the account of a renewal kept from a guest.
const maxRenewReport = 512

// Poweroff asks the guest to shut down cleanly. The reply comes before the shutdown starts.
func (c *Client) Poweroff(ctx context.Context) error {
	_, err := c.call(ctx, Request{Op: OpPoweroff})
	return err
}

// Exec runs a command and connects it to cio; it returns the command's exit status.
func (c *Client) Exec(ctx context.Context, req ExecRequest, cio wire.CallerIO) (wire.ExitMsg, error) {
	s, err := c.Open(ctx, Request{Op: OpExec, Exec: &req})
	if err != nil {
		return wire.ExitMsg{}, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	return wire.Call(s, cio)
}

// DecodeRequest reads the Request frame that opens a stream.
func DecodeRequest(r *wire.Reader) (Request, error) {
	var req Request
	if err := r.NextJSON(wire.Request, &req); err != nil {
		return Request{}, err
	}
	return req, nil
}

// Bounds on the strings of a Reply, which the guest writes and the host stores, logs and
// prints: an error message is cut at MaxReplyError bytes, other strings at MaxReplyField.
// The guest's list of ports is cut at MaxReplyPorts entries.
const (
	MaxReplyError = 1 << 10
	MaxReplyField = 256
	MaxReplyPorts = 4096
)

// ReadReply reads a stream's Reply frame and bounds what the guest put in it (see
// MaxReplyError). The strings stay as the guest wrote them otherwise: whoever prints them on
// a terminal escapes them (package termtext).
func ReadReply(r *wire.Reader) (Reply, error) {
	var rep Reply
	if err := r.NextJSON(wire.Reply, &rep); err != nil {
		return Reply{}, err
	}
	rep.Error = termtext.Truncate(rep.Error, MaxReplyError)
	if len(rep.Ports) > MaxReplyPorts {
		rep.Ports = rep.Ports[:MaxReplyPorts]
	}
	for i := range rep.Ports {
		p := &rep.Ports[i]
		p.Proto = termtext.Truncate(p.Proto, MaxReplyField)
		p.Addr = termtext.Truncate(p.Addr, MaxReplyField)
		p.Process = termtext.Truncate(p.Process, MaxReplyField)
	}
	if h := rep.Health; h != nil {
		h.AgentVersion = termtext.Truncate(h.AgentVersion, MaxReplyField)
		h.BootID = termtext.Truncate(h.BootID, MaxReplyField)
		h.Hostname = termtext.Truncate(h.Hostname, MaxReplyField)
		h.Init = termtext.Truncate(h.Init, MaxReplyField)
		if s := h.SSH; s != nil {
			s.State = termtext.Truncate(s.State, MaxReplyField)
			s.Reason = termtext.Truncate(s.Reason, MaxReplyError)
			s.Sshd = termtext.Truncate(s.Sshd, MaxReplyField)
			s.Via = termtext.Truncate(s.Via, MaxReplyField)
		}
	}
	return rep, nil
}

// EncodeReply is a helper for the agent side: it writes rep as the stream's Reply frame.
func EncodeReply(w *wire.Writer, rep Reply) error {
	return w.WriteJSON(wire.Reply, rep)
}

// Provision writes host-made files in the guest and restarts the given units if they run.
func (c *Client) Provision(ctx context.Context, p Provision) error {
	_, err := c.call(ctx, Request{Op: OpProvision, Provision: &p})
	return err
}

// Ports lists the guest's listening sockets.
func (c *Client) Ports(ctx context.Context) ([]Port, error) {
	rep, err := c.call(ctx, Request{Op: OpPorts})
	return rep.Ports, err
}

// Dial connects to an address inside the guest and returns a connection carrying its bytes.
func (c *Client) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	// The connection, once made, lives as long as the caller wants; only the wait for the
	// guest's answer to the dial is bounded.
	rctx, cancel := c.withDeadline(ctx, OpDial)
	defer cancel()
	s, err := c.Open(rctx, Request{Op: OpDial, Dial: &DialRequest{Network: network, Address: address}})
	if err != nil {
		if rctx.Err() != nil {
			err = context.Cause(rctx)
		}
		return nil, fmt.Errorf("connect to %s %s in the guest: %w", network, address, err)
	}
	stop := context.AfterFunc(rctx, func() { _ = s.SetDeadline(time.Unix(1, 0)) })
	rep, err := ReadReply(wire.NewReader(s))
	stop()
	_ = s.SetDeadline(time.Time{})
	if err != nil && rctx.Err() != nil {
		err = context.Cause(rctx)
	}
	if err == nil && rep.Error != "" {
		err = errors.New(rep.Error)
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("connect to %s %s in the guest: %w", network, address, err)
	}
	return s, nil
}

// Upload extracts the tar stream read from src into req.Dest in the guest and returns what the
// guest wrote.
func (c *Client) Upload(ctx context.Context, req UntarRequest, src io.Reader) (UntarResult, error) {
	dest := req.Dest
	s, err := c.Open(ctx, Request{Op: OpUntar, Untar: &req})
	if err != nil {
		return UntarResult{}, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	sendErr := wire.SendStream(wire.NewWriter(s), src)
	rep, err := ReadReply(wire.NewReader(s))
	if err != nil {
		return UntarResult{}, errors.Join(fmt.Errorf("upload into %s: %w", dest, err), sendErr)
	}
	if rep.Error != "" {
		return UntarResult{}, fmt.Errorf("upload into %s: %s", dest, rep.Error)
	}
	if sendErr != nil {
		return UntarResult{}, fmt.Errorf("upload into %s: %w", dest, sendErr)
	}
	if rep.Untar == nil {
		return UntarResult{}, nil
	}
	return *rep.Untar, nil
}
