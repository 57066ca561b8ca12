package vmservice

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/vmnet"
)

// recordingNetwork is a Network that records what the service asks of it, for tests that
// need no root: it hands out addresses from 10.0.0.2 up.
type recordingNetwork struct {
	mu        sync.Mutex
	calls     []string
	attachErr error
}

func (n *recordingNetwork) record(call string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, call)
}

func (n *recordingNetwork) log() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.calls)
}

func (n *recordingNetwork) Info() vmnet.Info { return vmnet.Info{Bridge: "bgfake0"} }

func (n *recordingNetwork) Allocate(ctx context.Context, taken []string) (string, error) {
	for _, a := range []string{"10.0.0.2", "10.0.0.3", "10.0.0.4"} {
		if !slices.Contains(taken, a) {
			n.record("allocate " + a)
			return a, nil
		}
	}
	return "", errors.New("full")
}

func (n *recordingNetwork) Attach(ctx context.Context, g vmnet.Guest) (vmnet.Link, error) {
	n.record("attach " + g.Name + " " + g.IP)
	if n.attachErr != nil {
		return vmnet.Link{}, n.attachErr
	}
	return vmnet.Link{Tap: "bg" + g.ID[:12], MAC: vmnet.MAC(g.ID), Address: g.IP + "/24", Gateway: "10.0.0.1", DNS: "10.0.0.1",
		Notices: []string{"DNS for .vm names is not available"}}, nil
}

func (n *recordingNetwork) Detach(ctx context.Context, g vmnet.Guest) error {
	n.record("detach " + g.Name)
	return nil
}

func (n *recordingNetwork) Announce(ctx context.Context, g vmnet.Guest) error {
	n.record("announce " + g.Name)
	return nil
}

func (n *recordingNetwork) Withdraw(ctx context.Context, g vmnet.Guest) error {
	n.record("withdraw " + g.Name)
	return nil
}

func (n *recordingNetwork) Restore(ctx context.Context, running []vmnet.Guest) error {
	var names []string
	for _, g := range running {
		names = append(names, g.Name)
	}
	n.record("restore " + strings.Join(names, ","))
	return nil
}

func (n *recordingNetwork) Teardown(ctx context.Context) error {
	n.record("teardown")
	return nil
}

// The service asks its Network for an address when it records a VM, attaches it before the
// VMM starts (the link's notices reach the user), announces it once ready, withdraws it when
// it stops, and gives the network the running VMs when the daemon starts again.
func TestNetworkLifecycle(t *testing.T) {
	e := newEnv(t)
	n := &recordingNetwork{}
	e.svc.net = n
	ctx := context.Background()
	var notices []string
	vm, _, err := e.svc.Create(ctx, CreateRequest{Name: "a"}, Observer{Notice: func(s string) { notices = append(notices, s) }})
	if err != nil {
		t.Fatal(err)
	}
	if vm.IP != "10.0.0.2" {
		t.Errorf("IP = %q, want the network's 10.0.0.2", vm.IP)
	}
	if !slices.Contains(notices, "DNS for .vm names is not available") {
		t.Errorf("notices %q lack the link's notice", notices)
	}
	if _, _, err := e.svc.Stop(ctx, "a", time.Second, Observer{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.Start(ctx, "a", Observer{}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"allocate 10.0.0.2", "attach a 10.0.0.2", "announce a",
		"withdraw a",
		"attach a 10.0.0.2", "announce a",
	}
	if got := n.log(); !slices.Equal(got, want) {
		t.Errorf("network calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// A restarted daemon: a new service and network over the same store; the VMM still runs.
	// (The first service still watches the VMM too, so it gets a network of its own.)
	n = &recordingNetwork{}
	e.svc = e.newService()
	e.svc.net = n
	if err := e.svc.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.TeardownNetwork(ctx); err == nil {
		t.Error("teardown while a VM runs succeeded")
	}
	if _, err := e.svc.Delete(ctx, "a", true); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.TeardownNetwork(ctx); err != nil {
		t.Fatal(err)
	}
	want = []string{"restore a", "withdraw a", "teardown"}
	if got := n.log(); !slices.Equal(got, want) {
		t.Errorf("network calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	e.assertNothingLeft()
}

// A start step that fails after the network step detaches the VM; an attach that fails
// leaves nothing to detach.
func TestNetworkUndo(t *testing.T) {
	for _, c := range []struct {
		failStep  string
		attachErr error
		want      []string
	}{
		{failStep: StepVMM, want: []string{"allocate 10.0.0.2", "attach a 10.0.0.2", "detach a"}},
		{attachErr: errors.New("no tap for you"), want: []string{"allocate 10.0.0.2", "attach a 10.0.0.2"}},
	} {
		e := newEnv(t)
		n := &recordingNetwork{attachErr: c.attachErr}
		e.svc.net = n
		if _, err := e.create(CreateRequest{Name: "a", FailStep: c.failStep}); err == nil {
			t.Fatal("create succeeded")
		}
		if got := n.log(); !slices.Equal(got, c.want) {
			t.Errorf("network calls %q, want %q", got, c.want)
		}
		e.assertNothingLeft()
	}
}
