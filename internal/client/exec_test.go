package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// upgradingDaemon answers POST /v1/vms/dev/exec with 101 Switching Protocols, then sends
// "argv: <argv>\n", echoes every line it reads back as "echo: <line>\n", and reports on
// closed when the client closes its end.
func upgradingDaemon(t *testing.T, closed chan<- struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/vms/dev/exec" ||
			r.Header.Get("Upgrade") != api.ExecUpgrade || !strings.EqualFold(r.Header.Get("Connection"), "Upgrade") {
			http.Error(w, "not an exec upgrade: "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		var req api.ExecRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + api.ExecUpgrade + "\r\n\r\n")
		_, _ = rw.WriteString("argv: " + strings.Join(req.Argv, " ") + "\n")
		_ = rw.Flush()
		for {
			line, err := rw.ReadString('\n')
			if err != nil {
				closed <- struct{}{}
				return
			}
			_, _ = rw.WriteString("echo: " + line)
			_ = rw.Flush()
		}
	}
}

func TestOpenExecCarriesBytesBothWays(t *testing.T) {
	t.Parallel()
	closed := make(chan struct{}, 1)
	c := serve(t, upgradingDaemon(t, closed))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	rwc, err := c.OpenExec(ctx, "dev", api.ExecRequest{Argv: []string{"uname", "-a"}})
	if err != nil {
		t.Fatalf("OpenExec: %v", err)
	}
	r := bufio.NewReader(rwc)
	if line, err := r.ReadString('\n'); err != nil || line != "argv: uname -a\n" {
		t.Errorf("first bytes from the daemon = %q, %v; want %q", line, err, "argv: uname -a\n")
	}
	if _, err := io.WriteString(rwc, "hello\n"); err != nil {
		t.Fatalf("write to the exec connection: %v", err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "echo: hello\n" {
		t.Errorf("answer to %q = %q, %v; want %q", "hello\n", line, err, "echo: hello\n")
	}
	if err := rwc.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Error("the daemon did not see the connection close after Close")
	}
}

func TestOpenExecReturnsTheDaemonsError(t *testing.T) {
	t.Parallel()
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		_, _ = io.WriteString(w, `{"error":{"code":"conflict","message":"vm \"dev\" is stopped","hint":"start it first"}}`)
	})
	rwc, err := c.OpenExec(context.Background(), "dev", api.ExecRequest{Argv: []string{"true"}})
	if rwc != nil {
		rwc.Close()
		t.Error("OpenExec returned a connection along with an error answer")
	}
	var got *api.Error
	if !errors.As(err, &got) {
		t.Fatalf("OpenExec = %v (%T), want an *api.Error", err, err)
	}
	want := api.Error{Code: "conflict", Message: `vm "dev" is stopped`, Hint: "start it first"}
	if *got != want {
		t.Errorf("OpenExec error = %+v, want %+v", *got, want)
	}
}
