package daemon

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// A stop cancels the operations in flight and waits for them, so that they end (undone, and
// told to their client as cancelled) before Run closes the store; none is left running on a
// closed store.
func TestStopCancelsOperationsAndWaitsBeforeTheStoreCloses(t *testing.T) {
	h := newHarness(t, false)
	h.driver.NoAgent = true // the boot waits for an agent that never answers
	booting := make(chan struct{})
	var once sync.Once
	created := make(chan error, 1)
	go func() {
		_, err := h.c.CreateVM(context.Background(), api.CreateVMRequest{Name: "dev"}, func(ev api.Event) {
			if ev.Stage == "vm.boot" {
				once.Do(func() { close(booting) })
			}
		})
		created <- err
	}()
	<-booting

	h.d.stop(h.srv, time.Minute)
	// Here Run closes the store: the operation must be over, its undo done.
	ops := h.d.ops.list()
	if len(ops) != 1 || !ops[0].Done || !strings.Contains(ops[0].Error, "cancelled") {
		t.Fatalf("operations after the stop = %+v, want the create ended as cancelled", ops)
	}
	if vms, err := h.d.store.ListVMs(context.Background()); err != nil || len(vms) != 0 {
		t.Errorf("VMs after the stop = %+v, %v; want the cancelled create undone", vms, err)
	}
	if entries, _ := os.ReadDir(h.layout.VMsDir()); len(entries) != 0 {
		t.Errorf("VM files left: %v", entries)
	}
	if err := <-created; err == nil || !strings.Contains(err.Error(), "creation cancelled") {
		t.Errorf("the client's create = %v, want it told that the creation was cancelled", err)
	}
	if _, err := h.c.Version(context.Background()); err == nil {
		t.Error("the stopped daemon still answers")
	}
}

// A start cut short by the stop leaves the VM stopped, not failed: the daemon stopping is
// no fault of the VM's.
func TestStopDuringAStartIsNotAFailure(t *testing.T) {
	h := newHarness(t, false)
	if _, _, err := h.create(t, api.CreateVMRequest{Name: "dev", NoStart: true}); err != nil {
		t.Fatal(err)
	}
	h.driver.NoAgent = true
	booting := make(chan struct{})
	var once sync.Once
	started := make(chan error, 1)
	go func() {
		_, _, err := h.c.StartVM(context.Background(), "dev", func(ev api.Event) {
			if ev.Stage == "vm.boot" {
				once.Do(func() { close(booting) })
			}
		})
		started <- err
	}()
	<-booting
	h.d.stop(h.srv, time.Minute)
	vm, err := h.d.vms.Resolve(context.Background(), "dev")
	if err != nil {
		t.Fatal(err)
	}
	if vm.State != "stopped" || vm.LastError != "start cancelled" {
		t.Errorf("VM after the stop: state %q, last error %q; want stopped, \"start cancelled\"", vm.State, vm.LastError)
	}
	if err := <-started; err == nil || !strings.Contains(err.Error(), "bangerd is stopping") {
		t.Errorf("the client's start = %v, want it told that bangerd is stopping", err)
	}
}

// Work that ignores the cancellation holds the stop up for the limit, no longer, and is named
// in the log; new work is refused once the stop has begun.
func TestStopIsBoundedWhenWorkIgnoresCancellation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log bytes.Buffer
		d := &Daemon{log: slog.New(slog.NewTextHandler(&log, nil)), work: newBackground()}
		release := make(chan struct{})
		d.work.start("vm.create stubborn", func(context.Context) { <-release })
		d.work.start("vm.start polite", func(ctx context.Context) { <-ctx.Done() })

		start := time.Now()
		d.stop(&http.Server{}, 10*time.Second)
		if waited := time.Since(start); waited != 10*time.Second {
			t.Errorf("the stop took %s, want the limit (10s)", waited)
		}
		if !strings.Contains(log.String(), "vm.create stubborn") || strings.Contains(log.String(), "polite") {
			t.Errorf("log = %q, want the work still running named, and only it", log.String())
		}
		if d.work.start("late", func(context.Context) { t.Error("work ran after the stop") }) {
			t.Error("new work was taken after the stop")
		}
		close(release)
		synctest.Wait()
	})
}

// Work that ends when cancelled lets the stop return at once.
func TestStopReturnsOnceTheWorkHasEnded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBackground()
		h := b.track(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-b.ctx.Done() }))
		go h.ServeHTTP(nil, &http.Request{Method: "GET", URL: &url.URL{Path: "/v1/vms/dev/logs"}})
		b.start("vm.start dev", func(ctx context.Context) { <-ctx.Done() })
		synctest.Wait()
		b.stop()
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if left := b.wait(ctx); left != nil || time.Since(start) != 0 {
			t.Errorf("wait = %v after %s, want nothing left at once", left, time.Since(start))
		}
	})
}

// The API socket is the daemon's own: even with guest networking in a namespace of its own
// (BANGER_NETWORK_NAMESPACE), it is bound in the daemon's namespace, not the guests'.
func TestRunBindsTheAPISocketInTheDaemonsNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2 (ip)")
	}
	ns := fmt.Sprintf("banger-dt-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	t.Setenv("BANGER_NETWORK_NAMESPACE", ns)

	opts, _, stop := runDaemon(t)
	l := opts.Layout

	own, err := os.ReadFile("/proc/self/net/unix") // the sockets of this process's namespace
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(own), l.Socket) {
		t.Errorf("the API socket %s is not bound in the daemon's namespace", l.Socket)
	}
	guests, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/net/unix").CombinedOutput()
	if err != nil {
		t.Fatalf("read the guest namespace's sockets: %v: %s", err, guests)
	}
	if strings.Contains(string(guests), l.Socket) {
		t.Errorf("the API socket %s is bound in the guests' namespace %s", l.Socket, ns)
	}
	if err := stop(); err != nil {
		t.Errorf("Run = %v, want a clean exit on cancellation", err)
	}
}
