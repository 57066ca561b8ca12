package vmservice

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmtest"
)

// byNameDriver is vmmtest's driver as a VMM that opens its tap by name (Firecracker): at each
// Start it notes whether it got a queue and whether the network's queues were all closed.
type byNameDriver struct {
	*vmmtest.Driver
	net       *recordingNetwork
	gotFile   bool
	queueOpen bool
}

func (d *byNameDriver) OpensTapByName() {}

func (d *byNameDriver) Start(ctx context.Context, cfg vmm.Config) (vmm.Machine, error) {
	if cfg.NIC == nil {
		return nil, errors.New("no NIC")
	}
	d.gotFile = d.gotFile || cfg.NIC.File != nil
	d.net.mu.Lock()
	for _, q := range d.net.queues {
		if _, err := q.Stat(); !errors.Is(err, os.ErrClosed) {
			d.queueOpen = true
		}
	}
	d.net.mu.Unlock()
	return d.Driver.Start(ctx, cfg)
}

// A VMM that opens its tap by name gets no queue, and the service's own queue is closed before
// it starts: a tap admits one queue at a time, so Firecracker's attach would fail with EBUSY.
func TestTapByNameDriverStartsWithTheQueueClosed(t *testing.T) {
	e := newEnv(t)
	n := &recordingNetwork{}
	d := &byNameDriver{Driver: e.driver, net: n}
	e.svc = New(Options{
		Store: e.store, Layout: e.layout, Host: e.svc.host, Artifacts: fakeArtifacts{},
		Drivers: []vmm.Driver{d},
		Config:  e.svc.config,
	})
	e.svc.net = n
	if _, err := e.create(CreateRequest{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	if d.gotFile || d.queueOpen {
		t.Errorf("Start of a VMM that opens its tap by name: got a queue %v, the service's queue still open %v", d.gotFile, d.queueOpen)
	}
	n.assertQueuesClosed(t, 1)
}
