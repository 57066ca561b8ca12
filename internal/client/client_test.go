package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// serve runs handler as a daemon on a unix socket for the test and returns a client for it.
func serve(t *testing.T, handler http.HandlerFunc) *Client {
	t.Helper()
	socket := filepath.Join(shortTempDir(t), "d.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return New(socket)
}

// ndjson answers with the given lines as an event stream, flushing after each.
func ndjson(lines ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", api.ContentNDJSON)
		for _, l := range lines {
			_, _ = io.WriteString(w, l+"\n")
			w.(http.Flusher).Flush()
		}
	}
}

// event encodes one event as a stream line.
func event(ev api.Event) string {
	b, err := json.Marshal(ev)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestDecodeError(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   api.Error
	}{
		{
			name:   "an error body becomes its api.Error",
			status: http.StatusNotFound,
			body:   `{"error":{"code":"not_found","message":"no VM named \"dev\"","hint":"list VMs with banger vm list"}}`,
			want:   api.Error{Code: "not_found", Message: `no VM named "dev"`, Hint: "list VMs with banger vm list"},
		},
		{
			name:   "a body that is not JSON is quoted with the status",
			status: http.StatusBadGateway,
			body:   "upstream went away\n",
			want:   api.Error{Code: "internal", Message: "daemon answered 502 Bad Gateway: upstream went away"},
		},
		{
			name:   "JSON without an error object is quoted with the status",
			status: http.StatusInternalServerError,
			body:   `{"oops":true}`,
			want:   api.Error{Code: "internal", Message: `daemon answered 500 Internal Server Error: {"oops":true}`},
		},
		{
			name:   "an empty body gives the status alone",
			status: http.StatusServiceUnavailable,
			body:   "",
			want:   api.Error{Code: "internal", Message: "daemon answered 503 Service Unavailable with no explanation"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := &http.Response{
				StatusCode: tc.status,
				Status:     fmt.Sprintf("%d %s", tc.status, http.StatusText(tc.status)),
				Body:       io.NopCloser(strings.NewReader(tc.body)),
			}
			err := decodeError(resp)
			var got *api.Error
			if !errors.As(err, &got) {
				t.Fatalf("decodeError = %v (%T), want an *api.Error", err, err)
			}
			if *got != tc.want {
				t.Errorf("decodeError = %+v, want %+v", *got, tc.want)
			}
		})
	}
}

func TestStream(t *testing.T) {
	progress := api.Event{Type: api.EventProgress, Stage: "vm.disk", Message: "creating 8 GiB disk"}
	notice := api.Event{Type: api.EventNotice, Message: "KVM is not usable; guests run under TCG"}
	result := api.Event{Type: api.EventResult, VM: &api.VM{Name: "dev", State: "running"}}
	failed := api.Event{Type: api.EventError, Error: &api.Error{Code: "failed", Message: "guest agent did not answer", Hint: "see the console log"}}

	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		// wantSeen are the messages of the events passed to onEvent, in order.
		wantSeen []string
		// wantVM is the name of the VM in the result event returned on success.
		wantVM string
		// wantAPIErr is the *api.Error the stream must return, or nil.
		wantAPIErr *api.Error
		// wantErrText is a piece of a plain error's text ("" when no plain error is expected).
		wantErrText string
	}{
		{
			name:     "progress events reach onEvent and the result event is returned",
			handler:  ndjson(event(progress), event(notice), event(result)),
			wantSeen: []string{progress.Message, notice.Message},
			wantVM:   "dev",
		},
		{
			name:       "an error event returns its api.Error",
			handler:    ndjson(event(progress), event(failed)),
			wantSeen:   []string{progress.Message},
			wantAPIErr: failed.Error,
		},
		{
			name:       "an error event without an error still fails",
			handler:    ndjson(event(api.Event{Type: api.EventError})),
			wantAPIErr: &api.Error{Code: "internal", Message: "operation failed without a reason"},
		},
		{
			name:        "a stream that ends without a final event is an error",
			handler:     ndjson(event(progress)),
			wantSeen:    []string{progress.Message},
			wantErrText: "ended the operation without a result",
		},
		{
			name:        "a line that is not JSON is an error",
			handler:     ndjson(event(progress), "<html>502 Bad Gateway</html>", event(result)),
			wantSeen:    []string{progress.Message},
			wantErrText: "unreadable event",
		},
		{
			name: "an error answer before any event is decoded",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusConflict)
				_, _ = io.WriteString(w, `{"error":{"code":"conflict","message":"a VM named \"dev\" already exists"}}`)
			},
			wantAPIErr: &api.Error{Code: "conflict", Message: `a VM named "dev" already exists`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := serve(t, tc.handler)
			var seen []string
			ev, err := c.stream(context.Background(), to(api.RouteCreateVM), api.CreateVMRequest{Name: "dev"},
				func(ev api.Event) { seen = append(seen, ev.Message) })

			if strings.Join(seen, "|") != strings.Join(tc.wantSeen, "|") {
				t.Errorf("onEvent saw %q, want %q", seen, tc.wantSeen)
			}
			switch {
			case tc.wantAPIErr != nil:
				var got *api.Error
				if !errors.As(err, &got) {
					t.Fatalf("stream err = %v (%T), want *api.Error %+v", err, err, *tc.wantAPIErr)
				}
				if *got != *tc.wantAPIErr {
					t.Errorf("stream err = %+v, want %+v", *got, *tc.wantAPIErr)
				}
			case tc.wantErrText != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErrText) {
					t.Errorf("stream err = %v, want one containing %q", err, tc.wantErrText)
				}
			default:
				if err != nil {
					t.Fatalf("stream err = %v, want nil", err)
				}
				if ev.Type != api.EventResult || ev.VM == nil || ev.VM.Name != tc.wantVM {
					t.Errorf("stream returned %+v, want the result event with VM %q", ev, tc.wantVM)
				}
			}
		})
	}
}

func TestStreamStopsWhenTheContextIsCancelled(t *testing.T) {
	t.Parallel()
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, event(api.Event{Type: api.EventProgress, Message: "booting"})+"\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // a long operation that never finishes
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.stream(ctx, to(api.RouteCreateVM), nil, func(api.Event) { cancel() })
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("stream after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream did not return after its context was cancelled")
	}
}

func TestCreateVMSendsTheRequestAndReturnsTheVM(t *testing.T) {
	t.Parallel()
	type request struct {
		method, path, fault string
		body                api.CreateVMRequest
	}
	received := make(chan request, 1)
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		req := request{method: r.Method, path: r.URL.Path, fault: r.Header.Get(api.HeaderInjectFault)}
		_ = json.NewDecoder(r.Body).Decode(&req.body)
		received <- req
		ndjson(event(api.Event{Type: api.EventResult, VM: &api.VM{Name: "dev", State: "running"}}))(w, r)
	})
	c.Header.Set(api.HeaderInjectFault, "agent")
	vcpu := 2
	vm, err := c.CreateVM(context.Background(), api.CreateVMRequest{Name: "dev", VCPU: &vcpu}, nil)
	if err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	if vm.Name != "dev" || vm.State != "running" {
		t.Errorf("CreateVM = %+v, want VM dev running", vm)
	}
	req := <-received
	if req.method+" "+req.path != string(api.RouteCreateVM) {
		t.Errorf("request = %s %s, want %s", req.method, req.path, api.RouteCreateVM)
	}
	if req.body.Name != "dev" || req.body.VCPU == nil || *req.body.VCPU != 2 {
		t.Errorf("request body = %+v, want name dev and vcpu 2", req.body)
	}
	if req.fault != "agent" {
		t.Errorf("header %s = %q, want the client's Header (\"agent\") on the request", api.HeaderInjectFault, req.fault)
	}
}

func TestCreateVMWithAResultWithoutAVMIsAnError(t *testing.T) {
	t.Parallel()
	c := serve(t, ndjson(event(api.Event{Type: api.EventResult})))
	if _, err := c.CreateVM(context.Background(), api.CreateVMRequest{}, nil); err == nil || !strings.Contains(err.Error(), "sent no VM") {
		t.Errorf("CreateVM = %v, want an error saying the daemon sent no VM", err)
	}
}

func TestNothingListeningIsErrNoDaemon(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // the socket file stays, as after a daemon crash

	for name, socket := range map[string]string{
		"no socket file":    filepath.Join(dir, "missing.sock"),
		"stale socket file": stale,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New(socket).Version(context.Background())
			if !errors.Is(err, ErrNoDaemon) {
				t.Errorf("Version = %v, want ErrNoDaemon", err)
			}
			if err != nil && !strings.Contains(err.Error(), socket) {
				t.Errorf("error %q does not name the socket %s", err, socket)
			}
		})
	}
}

func TestVersionWithAnUnreadableAnswerIsAnError(t *testing.T) {
	t.Parallel()
	c := serve(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "not json") })
	if _, err := c.Version(context.Background()); err == nil || !strings.Contains(err.Error(), "unreadable answer to GET /v1/version") {
		t.Errorf("Version = %v, want an error about an unreadable answer to GET /v1/version", err)
	}
}
