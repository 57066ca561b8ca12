package agent

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/banger-dev/banger/internal/wire"
)

// fakeAgent runs the guest side of the handshake on conn after feeding it garbage, then
// answers health requests over yamux.
func fakeAgent(t *testing.T, conn net.Conn, garbage string) {
	t.Helper()
	if garbage != "" {
		// Stale bytes from an earlier session, as a serial port may deliver them.
		if _, err := io.WriteString(conn, garbage); err != nil {
			t.Errorf("write garbage: %v", err)
			return
		}
	}
	r, err := ServerHandshake(conn, "9.9.9")
	if err != nil {
		t.Errorf("ServerHandshake: %v", err)
		return
	}
	sess, err := yamux.Server(struct {
		io.Reader
		io.Writer
		io.Closer
	}{r, conn, conn}, YamuxConfig())
	if err != nil {
		t.Errorf("yamux.Server: %v", err)
		return
	}
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		go func() {
			defer st.Close()
			req, err := DecodeRequest(wire.NewReader(st))
			if err != nil {
				return
			}
			rep := Reply{Error: "unknown op " + req.Op}
			switch req.Op {
			case OpHealth:
				rep = Reply{Health: &Health{AgentVersion: "9.9.9", BootID: "boot-1", Init: "systemd"}}
			case OpRenew:
				// A guest's account with escapes and far too long.
				rep = Reply{Renewed: "12ms (clock kept)\x1b]0;owned\x07\n" + strings.Repeat("x", 10000)}
			}
			_ = EncodeReply(wire.NewWriter(st), rep)
		}()
	}
}

func TestHandshakeThroughGarbageThenRequests(t *testing.T) {
	host, guest := net.Pipe()
	defer host.Close()
	go fakeAgent(t, guest, "\x00\x01stale yamux bytes\nBANGER-ACK wrongnonce 1.0\n"+strings.Repeat("z", 1000)+"\n")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Connect(ctx, host)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer c.Close()
	if c.Version() != "9.9.9" {
		t.Errorf("Version() = %q, want the version from the ACK line", c.Version())
	}
	h, err := c.Health(ctx)
	if err != nil || h.BootID != "boot-1" {
		t.Fatalf("Health = %+v, %v; want boot-1", h, err)
	}
	if _, err := c.call(ctx, Request{Op: "nonsense"}); err == nil || !strings.Contains(err.Error(), "unknown op nonsense") {
		t.Errorf("unknown op: err = %v, want the agent's error passed through", err)
	}
}

// A guest restored inside an agent session sends its multiplexer's keep-alive ping (binary,
// no newline) before it answers the SYNC: the ACK comes on the same line, after it, and the
// guest does not answer the repeated SYNC again.
func TestHandshakeFindsTheAckAfterBinaryOnItsLine(t *testing.T) {
	host, guest := net.Pipe()
	defer host.Close()
	ping := "\x00\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00\x07" // yamux: version 0, ping, SYN, stream 0, id 7
	go fakeAgent(t, guest, ping)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Connect(ctx, host)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer c.Close()
	if c.Version() != "9.9.9" {
		t.Errorf("Version() = %q, want the version from the ACK", c.Version())
	}
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("Health: %v", err)
	}
}

// TestSyncIsRepeatedUntilAgentListens models a guest that starts reading late: the first
// SYNC lines are lost, and the host must keep sending them.
func TestSyncIsRepeatedUntilAgentListens(t *testing.T) {
	old := syncInterval
	syncInterval = 10 * time.Millisecond
	defer func() { syncInterval = old }()

	host, guest := net.Pipe()
	defer host.Close()
	go func() {
		// Swallow the first SYNC lines the host sends (the agent is not up yet): only a host
		// that repeats its SYNC gets an answer. The lines are counted, not timed.
		br := bufio.NewReader(guest)
		for range 3 {
			if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "BANGER-SYNC ") {
				t.Errorf("read %q, %v; want a SYNC line", line, err)
				return
			}
		}
		fakeAgent(t, guest, "")
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Connect(ctx, host)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer c.Close()
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("Health: %v", err)
	}
}

// TestHandshakeGivesUpWithContext runs on synctest's clock (the guest is an in-memory pipe),
// so Connect must give up exactly when its context ends.
func TestHandshakeGivesUpWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		host, guest := net.Pipe()
		defer guest.Close()
		go func() { _, _ = io.Copy(io.Discard, guest) }() // a guest that never answers
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := Connect(ctx, host)
		if err == nil {
			t.Fatal("Connect succeeded against a silent guest")
		}
		if took := time.Since(start); took != 100*time.Millisecond {
			t.Errorf("Connect gave up after %s, want when its context ended, after 100ms", took)
		}
	})
}

// TestServerHandshakeAnswersANewNonce runs in a synctest bubble: were ServerHandshake to
// miss the current nonce's GO, waiting for it would deadlock, which synctest reports.
func TestServerHandshakeAnswersANewNonce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		host, guest := net.Pipe()
		defer host.Close()
		done := make(chan error, 1)
		go func() {
			_, err := ServerHandshake(guest, "1")
			done <- err
		}()
		br := bufio.NewReader(host)
		_, _ = io.WriteString(host, "BANGER-SYNC aaa\n")
		if line, _ := br.ReadString('\n'); line != "BANGER-ACK aaa 1\n" {
			t.Fatalf("first ack = %q", line)
		}
		// The host restarted its handshake with a new nonce.
		_, _ = io.WriteString(host, "BANGER-SYNC bbb\n")
		if line, _ := br.ReadString('\n'); line != "BANGER-ACK bbb 1\n" {
			t.Fatalf("second ack = %q", line)
		}
		// A GO for the old nonce is ignored; the current one completes the handshake.
		_, _ = io.WriteString(host, "BANGER-GO aaa\nBANGER-GO bbb\n")
		if err := <-done; err != nil {
			t.Fatalf("ServerHandshake: %v", err)
		}
	})
}

// A renewal's account comes from the guest: the client keeps it short and printable.
func TestRenewReportIsBoundedAndClean(t *testing.T) {
	host, guest := net.Pipe()
	go fakeAgent(t, guest, "")
	c, err := Connect(context.Background(), host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	report, err := c.Renew(context.Background(), Renewal{Clock: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	// Cut to maxRenewReport, then escaped (an escape is at most 4 bytes for one).
	if !strings.HasPrefix(report, "12ms (clock kept)") || len(report) > 4*maxRenewReport || strings.ContainsAny(report, "\x1b\x07\n") {
		t.Errorf("report %q (%d bytes); want its start, cut near %d bytes, no control characters", report[:min(len(report), 80)], len(report), maxRenewReport)
	}
}
