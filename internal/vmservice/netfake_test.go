package vmservice

import (
	"context"
	"errors"
	"fmt"
	"os"
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
	queues    []*os.File // the tap queues Attach handed out
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
	for _, a := range []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"} {
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
	// /dev/null stands for the tap's queue: the fake VMM holds it as its fd 3 (see holdsQueue).
	queue, err := os.Open(os.DevNull)
	if err != nil {
		return vmnet.Link{}, err
	}
	n.mu.Lock()
	n.queues = append(n.queues, queue)
	n.mu.Unlock()
	return vmnet.Link{Tap: "bg" + g.ID[:12], TapFile: queue, MAC: vmnet.MAC(g.ID), Address: g.IP + "/24", Gateway: "10.0.0.1", DNS: "10.0.0.1",
		Notices: []string{"DNS for .vm names is not available"}}, nil
}

// assertQueuesClosed fails t for every tap queue Attach handed out that the service has not
// closed (it owns them: it closes each once the VMM was spawned, or the boot failed before),
// and checks that Attach handed out want of them.
func (n *recordingNetwork) assertQueuesClosed(t *testing.T, want int) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.queues) != want {
		t.Errorf("%d tap queues handed out, want %d", len(n.queues), want)
	}
	for i, q := range n.queues {
		if _, err := q.Stat(); !errors.Is(err, os.ErrClosed) {
			t.Errorf("tap queue %d of %d is still open (stat: %v): the service leaked it", i+1, len(n.queues), err)
			q.Close()
		}
	}
}

// holdsQueue reports whether VMM process pid holds a tap queue of recordingNetwork: QEMU's
// fd 3 (vmm.NIC.File), /dev/null here.
func holdsQueue(pid int) bool {
	target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", pid))
	return err == nil && target == os.DevNull
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
	n.assertQueuesClosed(t, 2)
	if pid := e.machineOf("a").Record().PID; !holdsQueue(pid) {
		t.Errorf("the VMM (pid %d) does not hold the tap queue it was handed", pid)
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

// A start step that fails after the network step detaches the VM and closes the tap's queue,
// whether the VMM was spawned or not; an attach that fails leaves nothing to detach.
func TestNetworkUndo(t *testing.T) {
	for _, c := range []struct {
		name      string
		failStep  string
		startErr  error
		attachErr error
		want      []string
		queues    int
	}{
		{name: "fault before the VMM step", failStep: StepVMM, want: []string{"allocate 10.0.0.2", "attach a 10.0.0.2", "detach a"}, queues: 1},
		{name: "the VMM does not start", startErr: errors.New("no VMM for you"), want: []string{"allocate 10.0.0.2", "attach a 10.0.0.2", "detach a"}, queues: 1},
		{name: "fault after the VMM step", failStep: StepAgent, want: []string{"allocate 10.0.0.2", "attach a 10.0.0.2", "detach a"}, queues: 1},
		{name: "attach fails", attachErr: errors.New("no tap for you"), want: []string{"allocate 10.0.0.2", "attach a 10.0.0.2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			n := &recordingNetwork{attachErr: c.attachErr}
			e.svc.net = n
			e.driver.StartErr = c.startErr
			if _, err := e.create(CreateRequest{Name: "a", FailStep: c.failStep}); err == nil {
				t.Fatal("create succeeded")
			}
			if got := n.log(); !slices.Equal(got, c.want) {
				t.Errorf("network calls %q, want %q", got, c.want)
			}
			n.assertQueuesClosed(t, c.queues)
			e.assertNothingLeft()
		})
	}
}
