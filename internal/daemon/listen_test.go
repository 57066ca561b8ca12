package daemon

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/peercred/peercredtest"
)

// TestDaemonRefusesClientOfAnotherUser: even with the socket's mode opened by mistake, a
// client running as another user is answered 403 and reaches no route (here: shutdown).
func TestDaemonRefusesClientOfAnotherUser(t *testing.T) {
	h := newHarness(t, false)
	socket := h.layout.Socket
	// The mistake: every directory on the way and the socket itself opened to everyone.
	for p := filepath.Dir(socket); p != "/tmp" && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(socket, 0o666); err != nil {
		t.Fatal(err)
	}
	var conn net.Conn
	var dialErr error
	peercredtest.AsUser(t, peercredtest.Nobody, peercredtest.Nobody, func() {
		conn, dialErr = net.Dial("unix", socket)
	})
	if dialErr != nil {
		t.Fatalf("dial as nobody: %v", dialErr)
	}
	defer conn.Close()
	req, _ := http.NewRequest(http.MethodPost, "http://bangerd"+api.RouteShutdown.Path(), nil)
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "uid 65534") {
		t.Errorf("answer %s %s; want 403 naming uid 65534", resp.Status, body)
	}
	select {
	case <-h.d.shutdown:
		t.Fatal("another user's request reached the shutdown route")
	default:
	}
	// The owner is still served.
	if _, err := h.c.Version(context.Background()); err != nil {
		t.Errorf("the owner's client: %v", err)
	}
}
