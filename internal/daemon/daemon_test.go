package daemon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/catalog"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/progress"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/version"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmtest"
	"github.com/banger-dev/banger/internal/vmservice"
	"github.com/banger-dev/banger/internal/wire"
)

// These tests drive the daemon's HTTP API through the real client, with the real store and
// VM service on top of the stand-in VMM of package vmmtest.

type artifacts struct{}

func (artifacts) Kernel(ctx context.Context, name string, p progress.Func) (catalog.Kernel, error) {
	p.Stage("kernel.resolve", "fetching kernel "+name)
	return catalog.Kernel{Name: name, Release: "6.1.0-test", Vmlinux: "/nonexistent"}, nil
}

func (artifacts) Image(ctx context.Context, name string, p progress.Func) (catalog.Image, error) {
	return catalog.Image{Name: name, Rootfs: "/nonexistent"}, nil
}

type harness struct {
	d      *Daemon
	srv    *http.Server
	c      *client.Client
	driver *vmmtest.Driver
	layout paths.Layout
}

func newHarness(t *testing.T, testHooks bool) *harness {
	t.Helper()
	dir, err := os.MkdirTemp("", "bd") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	vars := map[string]string{"BANGER_SOCKET": filepath.Join(dir, "run", "d.sock")}
	l, err := paths.New(func(k string) (string, bool) { v, ok := vars[k]; return v, ok }, os.Getuid(), filepath.Join(dir, "home"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Create(); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(l.DBFile())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := config.Default(l)
	cfg.BootTimeout = 5 * time.Second
	cfg.VMDefaults = config.VMDefaults{VCPU: 1, MemoryMiB: 512, DiskBytes: 1 << 30}
	loadConfig := func() (config.Config, error) { return cfg, nil }
	drv := &vmmtest.Driver{}
	t.Cleanup(drv.KillAll)
	lg := slog.New(slog.DiscardHandler)
	d := &Daemon{
		opts:  Options{Layout: l, TestHooks: testHooks},
		log:   lg,
		store: st,
		vms: vmservice.New(vmservice.Options{Store: st, Layout: l, Config: loadConfig, Host: host.Root("/"),
			Artifacts: artifacts{}, Drivers: []vmm.Driver{drv}, Log: lg}),
		catalog:  catalog.New(catalog.Options{Store: st, Layout: l, Config: loadConfig, Log: lg}),
		ops:      newOperations(),
		work:     newBackground(),
		shutdown: make(chan struct{}),
	}
	ln, err := listenSocket(l.Socket, net.Listen, lg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: d.handler()}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return &harness{d: d, srv: srv, c: client.New(l.Socket), driver: drv, layout: l}
}

func (h *harness) create(t *testing.T, req api.CreateVMRequest) (api.VM, []api.Event, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var events []api.Event
	vm, err := h.c.CreateVM(ctx, req, func(ev api.Event) { events = append(events, ev) })
	return vm, events, err
}

func TestVersion(t *testing.T) {
	h := newHarness(t, false)
	v, err := h.c.Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	mine := version.Get()
	if v.Version != mine.Version || v.API != version.API || v.StateDir != h.layout.StateDir || v.PID != os.Getpid() {
		t.Errorf("version = %+v, want this build, API %s, state dir %s", v, version.API, h.layout.StateDir)
	}
}

func TestCreateStreamsEventsThenExecAndDelete(t *testing.T) {
	h := newHarness(t, false)
	vm, events, err := h.create(t, api.CreateVMRequest{Name: "dev"})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if vm.Name != "dev" || vm.State != "running" || vm.PID == 0 || vm.Spec == nil || vm.Spec.VCPU.Source != "config" {
		t.Errorf("created VM = %+v, want running dev with a pid and a spec from config", vm)
	}
	var sawSpec, sawKernel, sawBoot bool
	for _, ev := range events {
		sawSpec = sawSpec || (ev.Type == api.EventSpec && strings.Contains(ev.Spec.Summary, "vcpu=1 (config"))
		sawKernel = sawKernel || (ev.Type == api.EventProgress && ev.Stage == "kernel.resolve")
		sawBoot = sawBoot || (ev.Type == api.EventProgress && ev.Stage == "vm.boot")
	}
	if !sawSpec || !sawKernel || !sawBoot {
		t.Errorf("events %+v: want a spec event, the kernel stage and the boot stage", events)
	}

	vms, err := h.c.ListVMs(context.Background())
	if err != nil || len(vms) != 1 || vms[0].Name != "dev" {
		t.Fatalf("list = %+v, %v", vms, err)
	}
	if got, err := h.c.GetVM(context.Background(), "d"); err != nil || got.ID != vm.ID {
		t.Errorf("get by prefix = %+v, %v", got, err)
	}

	var out, errb bytes.Buffer
	exit, err := h.c.Exec(context.Background(), "dev", api.ExecRequest{Argv: []string{"sh", "-c", "cat; echo done >&2; exit 9"}},
		wire.CallerIO{Stdin: strings.NewReader("through the daemon\n"), Stdout: &out, Stderr: &errb})
	if err != nil || exit.Code != 9 || out.String() != "through the daemon\n" || errb.String() != "done\n" {
		t.Errorf("exec = %+v %v stdout %q stderr %q", exit, err, out.String(), errb.String())
	}

	// A running VM is deleted only when forced.
	if err := h.c.DeleteVM(context.Background(), "dev", false); apiErr(t, err).Code != "conflict" || !strings.Contains(err.Error(), "delete -f dev") {
		t.Errorf("delete of a running VM without force: %v; want a conflict naming -f", err)
	}
	if err := h.c.DeleteVM(context.Background(), "dev", true); err != nil {
		t.Fatal(err)
	}
	if vms, _ := h.c.ListVMs(context.Background()); len(vms) != 0 {
		t.Errorf("after delete: %+v", vms)
	}
}

func apiErr(t *testing.T, err error) *api.Error {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v (%T), want *api.Error", err, err)
	}
	return ae
}

func TestErrorsAreClassified(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()

	_, _, err := h.create(t, api.CreateVMRequest{Name: "Bad_Name"})
	if e := apiErr(t, err); e.Code != "invalid" || !strings.Contains(e.Message, `"Bad_Name"`) {
		t.Errorf("bad name: %+v", e)
	}
	if _, err := h.c.GetVM(ctx, "missing"); apiErr(t, err).Code != "not_found" {
		t.Errorf("get missing: %v", err)
	}
	if err := h.c.DeleteVM(ctx, "missing", false); apiErr(t, err).Code != "not_found" {
		t.Errorf("delete missing: %v", err)
	}
	_, err = h.c.Exec(ctx, "missing", api.ExecRequest{Argv: []string{"true"}}, wire.CallerIO{Stdout: io.Discard, Stderr: io.Discard})
	if apiErr(t, err).Code != "not_found" {
		t.Errorf("exec in missing VM: %v", err)
	}
	if _, _, err := h.create(t, api.CreateVMRequest{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.create(t, api.CreateVMRequest{Name: "dev"}); apiErr(t, err).Code != "conflict" {
		t.Errorf("duplicate: %v", err)
	}
}

// raw sends a request without the client's help.
func (h *harness) raw(t *testing.T, method, path, body string, header map[string]string) (int, string) {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("unix", h.layout.Socket)
	}}
	req, _ := http.NewRequest(method, "http://bangerd"+path, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestBadRequestsAreRefused(t *testing.T) {
	h := newHarness(t, false)
	if code, body := h.raw(t, "GET", "/v2/vms", "", nil); code != 404 || !strings.Contains(body, `"not_found"`) || !strings.Contains(body, "no route") {
		t.Errorf("unknown route: %d %s", code, body)
	}
	if code, body := h.raw(t, "POST", api.RouteCreateVM.Path(), `{"nmae":"x"}`, nil); code != 400 || !strings.Contains(body, `unknown field \"nmae\"`) {
		t.Errorf("unknown field: %d %s", code, body)
	}
	if code, body := h.raw(t, "POST", api.RouteCreateVM.Path(), `{`, nil); code != 400 || !strings.Contains(body, "bad request body") {
		t.Errorf("broken JSON: %d %s", code, body)
	}
	if code, body := h.raw(t, "POST", api.RouteExec.Path("x"), `{"argv":["true"]}`, nil); code != 400 || !strings.Contains(body, "Upgrade") {
		t.Errorf("exec without upgrade: %d %s", code, body)
	}
	if vms, _ := h.c.ListVMs(context.Background()); len(vms) != 0 {
		t.Errorf("bad requests created VMs: %+v", vms)
	}
}

func TestFaultInjectionNeedsTestHooks(t *testing.T) {
	off := newHarness(t, false)
	off.c.Header.Set(api.HeaderInjectFault, "ready")
	if _, _, err := off.create(t, api.CreateVMRequest{Name: "dev"}); err != nil {
		t.Errorf("without test hooks the header must be ignored: %v", err)
	}

	on := newHarness(t, true)
	on.c.Header.Set(api.HeaderInjectFault, "ready")
	_, _, err := on.create(t, api.CreateVMRequest{Name: "dev"})
	if err == nil || !strings.Contains(err.Error(), `fault injected at step "ready"`) {
		t.Errorf("with test hooks: err = %v, want the injected fault", err)
	}
	if vms, _ := on.c.ListVMs(context.Background()); len(vms) != 0 {
		t.Errorf("failed create left %+v", vms)
	}
}

// A create whose client goes away is cancelled and undone when the client asked for it
// (CancelOnDisconnect). The test watches the create's operation to its end, which comes once
// the create has undone what it did, and checks that it ended cancelled: the boot never
// finishes on its own, but would time out after cfg.BootTimeout and be undone too.
func TestClientGoneCancelsCreateWhenAsked(t *testing.T) {
	h := newHarness(t, false)
	h.driver.NoAgent = true // the boot never finishes on its own
	ctx, cancel := context.WithCancel(context.Background())
	var opID string
	_, err := h.c.CreateVM(ctx, api.CreateVMRequest{Name: "dev", CancelOnDisconnect: true}, func(ev api.Event) {
		opID = ev.Operation
		if ev.Stage == "vm.boot" {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	// The operation ends once the create has undone what it made.
	if _, err := h.c.WatchOperation(context.Background(), opID, nil); err == nil || !strings.Contains(err.Error(), "cancelled") {
		t.Errorf("the create's operation ended with %v; want it cancelled when its client went away", err)
	}
	if vms, _ := h.c.ListVMs(context.Background()); len(vms) != 0 {
		t.Errorf("the create was not undone after its client went away: %+v", vms)
	}
	if entries, _ := os.ReadDir(h.layout.VMsDir()); len(entries) != 0 {
		t.Errorf("VM files left: %v", entries)
	}
}

func TestShutdownEndpoint(t *testing.T) {
	h := newHarness(t, false)
	if err := h.c.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The handler requests the shutdown after its answer is sent, on a goroutine of its own.
	select {
	case <-h.d.shutdown:
	case <-time.After(time.Minute): // a guard against hanging, not a timing check
		t.Error("shutdown was not requested")
	}
}

// startedLog is a log handler that drops every record and closes started when the daemon
// logs "bangerd started", which it does once its socket listens.
// startedLog closes started when Run logs that it serves.
type startedLog struct {
	started chan struct{}
	once    *sync.Once
}

func (h startedLog) Enabled(context.Context, slog.Level) bool { return true }
func (h startedLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h startedLog) WithGroup(string) slog.Handler            { return h }
func (h startedLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "bangerd started" {
		h.once.Do(func() { close(h.started) })
	}
	return nil
}

// runDaemon runs Run on a fresh layout in a temporary directory (short, for the socket
// path's limit) and returns once the daemon logged that it serves: the options it runs
// with, the directory, and stop, which cancels Run and returns what it returned.
func runDaemon(t *testing.T) (opts Options, dir string, stop func() error) {
	t.Helper()
	dir, err := os.MkdirTemp("", "bd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	vars := map[string]string{"BANGER_SOCKET": filepath.Join(dir, "run", "d.sock")}
	l, err := paths.New(func(k string) (string, bool) { v, ok := vars[k]; return v, ok }, os.Getuid(), filepath.Join(dir, "home"))
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	opts = Options{Layout: l, AgentPath: "/nonexistent", Log: slog.New(startedLog{started: started, once: new(sync.Once)})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, opts) }()
	select {
	case <-started:
	case err := <-done:
		cancel()
		t.Fatalf("Run = %v before it started", err)
	case <-time.After(time.Minute): // a guard against hanging, not a timing check
		cancel()
		t.Fatal("the daemon did not log that it started")
	}
	return opts, dir, func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(time.Minute): // a guard against hanging, not a timing check
			t.Fatal("Run did not return after cancellation")
			return nil
		}
	}
}

func TestRunServesOneDaemonPerSocketAndStateDir(t *testing.T) {
	opts, dir, stop := runDaemon(t)
	l := opts.Layout
	if _, err := client.New(l.Socket).Version(context.Background()); err != nil {
		t.Fatalf("the daemon said it started but does not answer: %v", err)
	}
	st, err := os.Stat(l.Socket)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, %v; want 0600", st.Mode().Perm(), err)
	}
	if err := Run(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "another bangerd") {
		t.Errorf("second daemon on the same socket: err = %v, want a refusal", err)
	}
	other := l
	other.Socket = filepath.Join(dir, "run", "other.sock")
	if err := Run(context.Background(), Options{Layout: other, Log: opts.Log}); err == nil || !strings.Contains(err.Error(), "already served by the daemon on "+l.Socket) {
		t.Errorf("second daemon for the same state dir on another socket: err = %v, want a refusal naming the first socket", err)
	}
	if err := stop(); err != nil {
		t.Errorf("Run = %v, want a clean exit on cancellation", err)
	}
	if _, err := os.Stat(l.Socket); !os.IsNotExist(err) {
		t.Errorf("socket still there after exit: %v", err)
	}
}

// A second client finds a create in flight by the VM's name and watches it from its first
// event. The boot is held (BootGate) until the watcher has its first event, so the create is
// in flight for certain while it attaches.
func TestASecondClientCanWatchACreateInFlight(t *testing.T) {
	h := newHarness(t, false)
	gate := make(chan struct{})
	var openGate sync.Once
	t.Cleanup(func() { openGate.Do(func() { close(gate) }) })
	h.driver.BootGate = gate
	started := make(chan string, 1) // the operation's ID, once it has published an event
	created := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := h.c.CreateVM(ctx, api.CreateVMRequest{Name: "dev"}, func(ev api.Event) {
			select {
			case started <- ev.Operation:
			default:
			}
		})
		created <- err
	}()
	var id string
	select {
	case id = <-started:
	case err := <-created:
		t.Fatalf("the create ended before its first event: %v", err)
	}
	// Find the operation by the VM's name, as `banger vm watch dev` would.
	ops, err := h.c.ListOperations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var op api.Operation
	for _, o := range ops {
		if o.Target == "dev" && o.Kind == "vm.create" && !o.Done {
			op = o
		}
	}
	if op.ID != id {
		t.Fatalf("operations %+v; want the running vm.create of dev, %s", ops, id)
	}
	var seen []string
	res, err := client.New(h.layout.Socket).WatchOperation(context.Background(), op.ID, func(ev api.Event) {
		seen = append(seen, ev.Type+":"+ev.Stage)
		openGate.Do(func() { close(gate) }) // the watcher is attached: let the boot finish
	})
	if err != nil || res.VM == nil || res.VM.Name != "dev" {
		t.Fatalf("watch = %+v, %v; want the create's result", res, err)
	}
	if len(seen) == 0 || seen[0] != "spec:" {
		t.Errorf("watcher saw %v; want every event from the start (the spec first)", seen)
	}
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	// A finished operation can still be replayed for a while.
	res, err = h.c.WatchOperation(context.Background(), op.ID, nil)
	if err != nil || res.VM == nil {
		t.Errorf("replay after the end = %+v, %v", res, err)
	}
	if _, err := h.c.WatchOperation(context.Background(), "nope", nil); apiErr(t, err).Code != "not_found" {
		t.Errorf("unknown operation: %v", err)
	}
}

func TestSystemdUnitLeavesVMsAlone(t *testing.T) {
	b, err := os.ReadFile("../../contrib/systemd/bangerd.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"KillMode=process", "ExecStart=@PREFIX@/bin/bangerd", "BANGER_SOCKET=/run/banger/bangerd.sock"} {
		if !strings.Contains(unit, want) {
			t.Errorf("bangerd.service lacks %q: stopping the service must end bangerd only, never the VMMs in its cgroup", want)
		}
	}
}

// A flag value the service refused answers "usage", so the CLI exits 2 as for any other
// bad command line; the same error from a config value stays "invalid".
func TestAPIErrorOfAFlagValueIsUsage(t *testing.T) {
	flagErr := failure.Wrap(failure.Invalid, &config.FlagError{Flag: "--vcpu", Err: errors.New("--vcpu flag: 500 vCPUs is more than the host's 2 CPUs")})
	if e := apiError(flagErr); e.Code != "usage" || statusOf(e) != http.StatusBadRequest {
		t.Errorf("apiError(flag error) = %+v (status %d), want usage/400", e, statusOf(e))
	}
	if e := apiError(failure.Wrap(failure.Invalid, errors.New("vm_defaults.vcpu: bad"))); e.Code != "invalid" {
		t.Errorf("apiError(config error) = %+v, want invalid", e)
	}
}

// Every VM operation reaches its client the same way (vmOp): progress as events, then the VM,
// with the steps' timings when it booted, and "unchanged" when nothing needed doing.
func TestVMOperationsReportTheirResults(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	res, err := h.c.CreateVMResult(ctx, api.CreateVMRequest{Name: "dev"}, nil)
	if err != nil || res.VM == nil || res.VM.State != "running" || len(res.Timings) == 0 {
		t.Fatalf("create = %+v, %v; want the running VM with its steps' timings", res, err)
	}
	if vm, unchanged, err := h.c.StartVM(ctx, "dev", nil); err != nil || !unchanged || vm.State != "running" {
		t.Errorf("start of a running VM = %+v, unchanged %v, %v; want it unchanged", vm, unchanged, err)
	}
	var stages []string
	vm, unchanged, err := h.c.StopVM(ctx, "dev", time.Second, func(ev api.Event) { stages = append(stages, ev.Type+":"+ev.Stage) })
	if err != nil || unchanged || vm.State != "stopped" || len(stages) == 0 {
		t.Errorf("stop = %+v, unchanged %v, %v, events %v; want it stopped, with its progress", vm, unchanged, err, stages)
	}
	if _, unchanged, err := h.c.StopVM(ctx, "dev", time.Second, nil); err != nil || !unchanged {
		t.Errorf("stop of a stopped VM: unchanged %v, %v; want it unchanged", unchanged, err)
	}
	if vm, err := h.c.RestartVM(ctx, "dev", time.Second, nil); err != nil || vm.State != "running" {
		t.Errorf("restart = %+v, %v; want it running", vm, err)
	}
	if _, _, err := h.c.StartVM(ctx, "nope", nil); apiErr(t, err).Code != "not_found" {
		t.Errorf("start of an unknown VM: %v, want not_found", err)
	}
}
