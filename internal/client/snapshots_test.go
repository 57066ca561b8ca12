package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/failure"
)

// received is one request as a test daemon saw it.
type received struct {
	route       string // "METHOD PATH"
	body, fault string
}

// recordingDaemon answers every request with answer and sends what it received on the
// returned channel.
func recordingDaemon(t *testing.T, answer http.HandlerFunc) (*Client, <-chan received) {
	t.Helper()
	got := make(chan received, 1)
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- received{route: r.Method + " " + r.URL.EscapedPath(), body: strings.TrimSpace(string(b)), fault: r.Header.Get(api.HeaderInjectFault)}
		answer(w, r)
	})
	return c, got
}

func TestSnapshotVMSendsTheRequestAndReturnsTheSnapshot(t *testing.T) {
	t.Parallel()
	c, got := recordingDaemon(t, ndjson(
		event(api.Event{Type: api.EventProgress, Stage: "capture"}),
		event(api.Event{Type: api.EventResult, Snapshot: &api.Snapshot{Name: "base", Kind: api.SnapshotUser, From: "dev"}})))
	c.Header.Set(api.HeaderInjectFault, "publish")
	var stages []string
	snap, err := c.SnapshotVM(context.Background(), "dev", api.SnapshotVMRequest{Name: "base"}, func(ev api.Event) { stages = append(stages, ev.Stage) })
	if err != nil || snap.Name != "base" || snap.From != "dev" {
		t.Fatalf("SnapshotVM = %+v, %v; want snapshot base of dev", snap, err)
	}
	req := <-got
	if req.route != "POST "+api.RouteSnapshotVM.Path("dev") || req.body != `{"name":"base"}` || req.fault != "publish" {
		t.Errorf("request = %+v; want POST %s with the name and the client's test header", req, api.RouteSnapshotVM.Path("dev"))
	}
	if strings.Join(stages, ",") != "capture" {
		t.Errorf("events passed on: %q, want the progress", stages)
	}
}

func TestForkVMSendsTheRequestAndReturnsTheClones(t *testing.T) {
	t.Parallel()
	c, got := recordingDaemon(t, ndjson(event(api.Event{Type: api.EventResult, VMs: []api.VM{{Name: "a"}, {Name: "b"}}})))
	clones, err := c.ForkVM(context.Background(), "dev", api.ForkVMRequest{Count: 2, Names: []string{"a", "b"}}, nil)
	if err != nil || len(clones) != 2 || clones[0].Name != "a" || clones[1].Name != "b" {
		t.Fatalf("ForkVM = %+v, %v; want clones a and b", clones, err)
	}
	req := <-got
	if req.route != "POST "+api.RouteForkVM.Path("dev") || req.body != `{"count":2,"names":["a","b"]}` {
		t.Errorf("request = %+v; want POST %s with count and names", req, api.RouteForkVM.Path("dev"))
	}
}

func TestSnapshotAndForkWithoutTheirResultAreErrors(t *testing.T) {
	t.Parallel()
	c := serve(t, ndjson(event(api.Event{Type: api.EventResult})))
	if _, err := c.SnapshotVM(context.Background(), "dev", api.SnapshotVMRequest{}, nil); err == nil || !strings.Contains(err.Error(), "sent no snapshot") {
		t.Errorf("SnapshotVM = %v, want an error saying the daemon sent no snapshot", err)
	}
	if _, err := c.ForkVM(context.Background(), "dev", api.ForkVMRequest{}, nil); err == nil || !strings.Contains(err.Error(), "sent no clones") {
		t.Errorf("ForkVM = %v, want an error saying the daemon sent no clones", err)
	}
}

func TestListAndDeleteSnapshots(t *testing.T) {
	t.Parallel()
	c, got := recordingDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode([]api.Snapshot{{Name: "base", SizeBytes: 4096}})
	})
	list, err := c.ListSnapshots(context.Background())
	if err != nil || len(list) != 1 || list[0].Name != "base" || list[0].SizeBytes != 4096 {
		t.Errorf("ListSnapshots = %+v, %v", list, err)
	}
	if req := <-got; req.route != string(api.RouteListSnapshots) {
		t.Errorf("list went to %s, want %s", req.route, api.RouteListSnapshots)
	}

	c, got = recordingDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: "not_found", Message: `no snapshot named "a b"`}})
	})
	err = c.DeleteSnapshot(context.Background(), "a b")
	if !errors.Is(err, failure.NotFound) {
		t.Errorf("DeleteSnapshot of a missing one = %v, want failure.NotFound", err)
	}
	if req := <-got; req.route != "DELETE "+api.RouteDeleteSnapshot.Path("a b") {
		t.Errorf("delete went to %s, want DELETE %s", req.route, api.RouteDeleteSnapshot.Path("a b"))
	}
}
