package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/progress"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/version"
	"github.com/banger-dev/banger/internal/vmservice"
)

func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(r api.Route, h http.HandlerFunc) { mux.HandleFunc(string(r), h) }
	handle(api.RouteVersion, d.handleVersion)
	handle(api.RouteShutdown, d.handleShutdown)
	handle(api.RouteListVMs, d.handleListVMs)
	handle(api.RouteCreateVM, d.handleCreateVM)
	handle(api.RouteGetVM, d.handleGetVM)
	handle(api.RouteDeleteVM, d.handleDeleteVM)
	handle(api.RouteExec, d.handleExec)
	handle(api.RouteSetVM, d.handleSetVM)
	handle(api.RouteStartVM, d.handleStartVM)
	handle(api.RouteStopVM, d.handleStopVM)
	handle(api.RouteRestartVM, d.handleRestartVM)
	handle(api.RouteKillVM, d.handleKillVM)
	handle(api.RouteSuspendVM, d.handleSuspendVM)
	handle(api.RouteResumeVM, d.handleResumeVM)
	handle(api.RouteSnapshotVM, d.handleSnapshotVM)
	handle(api.RouteForkVM, d.handleForkVM)
	handle(api.RouteListSnapshots, d.handleListSnapshots)
	handle(api.RouteDeleteSnapshot, d.handleDeleteSnapshot)
	handle(api.RouteLogs, d.handleLogs)
	handle(api.RoutePruneVMs, d.handlePrune)
	handle(api.RoutePorts, d.handlePorts)
	handle(api.RouteSSH, d.handleSSH)
	handle(api.RouteForward, d.handleForward)
	handle(api.RouteTeardown, d.handleTeardown)
	handle(api.RouteUpload, d.handleUpload)
	handle(api.RouteSetWorkspace, d.handleSetWorkspace)
	handle(api.RouteListOperations, d.handleListOperations)
	handle(api.RouteWatchOperation, d.handleWatchOperation)
	handle(api.RouteListImages, d.handleListImages)
	handle(api.RouteBuildImage, d.handleBuildImage)
	handle(api.RouteListKernels, d.handleListKernels)
	handle(api.RoutePullKernel, d.handlePullKernel)
	handle(api.RouteShowImage, d.handleShowImage)
	handle(api.RouteDeleteImage, d.handleDeleteImage)
	handle(api.RouteExportImage, d.handleExportImage)
	handle(api.RoutePullImage, d.handlePullImage)
	handle(api.RouteRegisterImage, d.handleRegisterImage)
	handle(api.RouteImportImage, d.handleImportImage)
	handle(api.RoutePruneImageCache, d.handlePruneImageCache)
	handle(api.RouteShowKernel, d.handleShowKernel)
	handle(api.RouteDeleteKernel, d.handleDeleteKernel)
	handle(api.RouteExportKernel, d.handleExportKernel)
	handle(api.RouteImportKernel, d.handleImportKernel)
	handle(api.RouteCatalog, d.handleCatalog)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &api.Error{Code: "not_found", Message: fmt.Sprintf("no route %s %s in API %s", r.Method, r.URL.Path, version.API),
			Hint: "the CLI and daemon disagree; run the banger that matches this daemon"})
	})
	return mux
}

// testHooks returns the step a request asks to fail (HeaderInjectFault) and the one to pause
// before (HeaderPauseAt): both "" unless the daemon runs with test hooks.
func (d *Daemon) testHooks(r *http.Request) (failStep, pauseStep string) {
	if !d.opts.TestHooks {
		return "", ""
	}
	return r.Header.Get(api.HeaderInjectFault), r.Header.Get(api.HeaderPauseAt)
}

// writeJSON answers with v.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// apiError classifies an error for the API.
func apiError(err error) *api.Error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	code := api.CodeOf(err)
	var fe *config.FlagError
	if errors.As(err, &fe) && (code == "invalid" || code == "failed") {
		code = "usage"
	}
	return &api.Error{Code: code, Message: err.Error()}
}

// statusClientClosedRequest answers work cancelled before it ended (nginx's and gRPC
// gateways' 499): its client went away, or the daemon is shutting down.
const statusClientClosedRequest = 499

func statusOf(e *api.Error) int {
	switch e.Code {
	case "invalid", "usage":
		return http.StatusBadRequest
	case "not_found":
		return http.StatusNotFound
	case "conflict":
		return http.StatusConflict
	case "canceled":
		return statusClientClosedRequest
	case "timeout":
		return http.StatusGatewayTimeout
	case "internal", "io":
		return http.StatusInternalServerError
	}
	return http.StatusUnprocessableEntity
}

func writeError(w http.ResponseWriter, err error) {
	e := apiError(err)
	writeJSON(w, statusOf(e), api.ErrorBody{Error: e})
}

// decodeBody reads a JSON request body strictly.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &api.Error{Code: "invalid", Message: fmt.Sprintf("bad request body for %s %s: %v", r.Method, r.URL.Path, err)}
	}
	return nil
}

func (d *Daemon) handleVersion(w http.ResponseWriter, r *http.Request) {
	v := version.Get()
	writeJSON(w, http.StatusOK, api.Version{Version: v.Version, Commit: v.Commit, Date: v.Date, API: version.API, PID: os.Getpid(), StateDir: d.opts.Layout.StateDir})
}

func (d *Daemon) handleShutdown(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, struct{}{})
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	go d.requestShutdown()
}

func toAPIVM(vm store.VM) api.VM {
	out := api.VM{
		ID: vm.ID, Name: vm.Name, State: vm.State, Image: vm.Image, Kernel: vm.Kernel, VMM: vm.VMM,
		Accel: vm.Accel, VCPU: vm.VCPU, MemoryMiB: vm.MemoryMiB, DiskBytes: vm.DiskBytes,
		AutoRemove: vm.AutoRemove, Dir: vm.Dir, LastError: vm.LastError, CreatedAt: vm.CreatedAt,
		IP: vm.IP, NAT: vm.NAT,
	}
	if rec, ok := vmservice.Record(vm); ok && (vm.State == vmservice.StateRunning || vm.State == vmservice.StateStarting) {
		out.PID = rec.PID
	}
	var spec config.VMSpec
	if len(vm.Spec) > 0 && json.Unmarshal(vm.Spec, &spec) == nil {
		out.Spec = toAPISpec(spec)
	}
	if ws, ok := vmservice.WorkspaceOf(vm); ok {
		aw := api.Workspace(ws)
		out.Workspace = &aw
	}
	return out
}

func toAPISpec(s config.VMSpec) *api.Spec {
	return &api.Spec{
		VCPU:      api.Field{Value: int64(s.VCPU.Value), Source: string(s.VCPU.Source), Reason: s.VCPU.Reason},
		MemoryMiB: api.Field{Value: int64(s.MemoryMiB.Value), Source: string(s.MemoryMiB.Source), Reason: s.MemoryMiB.Reason},
		DiskBytes: api.Field{Value: s.DiskBytes.Value, Source: string(s.DiskBytes.Source), Reason: s.DiskBytes.Reason},
		Summary:   s.String(),
	}
}

func (d *Daemon) handleListVMs(w http.ResponseWriter, r *http.Request) {
	vms, err := d.vms.List(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]api.VM, 0, len(vms))
	for _, vm := range vms {
		out = append(out, toAPIVM(vm))
	}
	writeJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleGetVM(w http.ResponseWriter, r *http.Request) {
	vm, err := d.vms.Resolve(r.Context(), r.PathValue("ref"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toAPIVM(vm))
}

func (d *Daemon) handleDeleteVM(w http.ResponseWriter, r *http.Request) {
	// A delete must finish even if the client goes away half way.
	ctx := context.WithoutCancel(r.Context())
	vm, err := d.vms.Delete(ctx, r.PathValue("ref"), r.URL.Query().Get("force") == "1")
	if err != nil {
		writeError(w, err)
		return
	}
	d.log.Info("deleted VM", "vm", vm.Name, "id", vm.ID)
	writeJSON(w, http.StatusOK, toAPIVM(vm))
}

// eventStream writes an operation's events as NDJSON, flushing each one.
type eventStream struct {
	mu  sync.Mutex
	w   http.ResponseWriter
	enc *json.Encoder
}

func newEventStream(w http.ResponseWriter) *eventStream {
	w.Header().Set("Content-Type", api.ContentNDJSON)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	return &eventStream{w: w, enc: json.NewEncoder(w)}
}

func (s *eventStream) send(ev api.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.enc.Encode(ev)
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
}

// progress turns service progress into the operation's events.
func (op *operation) progress() progress.Func {
	return func(u progress.Update) {
		op.publish(api.Event{Type: api.EventProgress, Stage: u.Stage, Message: u.Message, Done: u.Done, Total: u.Total})
	}
}

func (op *operation) fail(err error) {
	op.publish(api.Event{Type: api.EventError, Error: apiError(err)})
}

// runOp runs fn as an operation and streams its events to the client until it ends. fn must
// end by publishing a result or an error event. The work belongs to the daemon, not to the
// request: it is cancelled (and undoes itself) when the daemon stops, which waits for it.
// With cancelOnDisconnect it is also cancelled when the client goes away; otherwise it goes
// on, and any client can still watch it through /v1/operations/{id}/events.
func (d *Daemon) runOp(w http.ResponseWriter, r *http.Request, kind, target string, cancelOnDisconnect bool, fn func(ctx context.Context, op *operation)) {
	op := d.ops.start(kind, target)
	started := d.work.start(kind+" "+target, func(ctx context.Context) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		if cancelOnDisconnect {
			defer context.AfterFunc(r.Context(), cancel)()
		}
		defer context.AfterFunc(ctx, func() {
			if errors.Is(context.Cause(ctx), errStopping) {
				op.publish(api.Event{Type: api.EventNotice, Message: "bangerd is stopping: " + kind + " is cancelled"})
			}
		})()
		defer func() {
			// A handler that forgot its final event must not leave watchers hanging.
			op.publish(api.Event{Type: api.EventError, Error: &api.Error{Code: "internal", Message: kind + " ended without a result"}})
		}()
		fn(ctx, op)
	})
	if !started {
		op.fail(stoppingError())
	}
	op.watch(r.Context(), newEventStream(w).send)
}

func (d *Daemon) handleListOperations(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, d.ops.list())
}

func (d *Daemon) handleWatchOperation(w http.ResponseWriter, r *http.Request) {
	op := d.ops.get(r.PathValue("id"))
	if op == nil {
		writeError(w, &api.Error{Code: "not_found", Message: fmt.Sprintf("no operation %q (operations are kept %s after they end)", r.PathValue("id"), opKeep)})
		return
	}
	op.watch(r.Context(), newEventStream(w).send)
}

// createRequest is the VM service's form of a create request (memory in bytes).
func createRequest(req api.CreateVMRequest) vmservice.CreateRequest {
	creq := vmservice.CreateRequest{
		Name: req.Name, Image: req.Image, Kernel: req.Kernel, VCPU: req.VCPU, DiskBytes: req.DiskBytes,
		AutoRemove: req.AutoRemove, NoStart: req.NoStart, NoNAT: req.NoNAT, KeepUnreachable: req.KeepUnreachable,
		FromSnapshot: req.FromSnapshot, Cold: req.Cold,
	}
	if req.MemoryMiB != nil {
		b := int64(*req.MemoryMiB) << 20
		creq.MemoryBytes = &b
	}
	return creq
}

func (d *Daemon) handleCreateVM(w http.ResponseWriter, r *http.Request) {
	var req api.CreateVMRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	creq := createRequest(req)
	creq.FailStep, creq.PauseStep = d.testHooks(r)
	if creq.Name == "" {
		// Named up front so that the operation can be found by the VM's name.
		creq.Name = d.vms.NewName(r.Context())
	}
	d.vmOp(w, r, "vm.create", creq.Name, req.CancelOnDisconnect, func(ctx context.Context, obs vmservice.Observer) (vmDone, error) {
		start := time.Now()
		vm, timings, err := d.vms.Create(ctx, creq, obs)
		if err != nil {
			d.log.Warn("create failed", "name", creq.Name, "err", err)
			return vmDone{}, err
		}
		d.log.Info("created VM", "vm", vm.Name, "id", vm.ID, "took", time.Since(start))
		return vmDone{vm: vm, timings: timings}, nil
	})
}

func (d *Daemon) handleExec(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != api.ExecUpgrade {
		writeError(w, &api.Error{Code: "invalid", Message: "exec needs `Upgrade: " + api.ExecUpgrade + "`"})
		return
	}
	var req api.ExecRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	stream, vm, err := d.vms.OpenExec(r.Context(), r.PathValue("ref"), req)
	if err != nil {
		writeError(w, err)
		return
	}
	d.log.Debug("exec", "vm", vm.Name, "argv", req.Argv)
	// The session ends when the agent closes the stream (after the Exit frame); a client that
	// goes away closes its side, which the agent sees as a hangup.
	d.splice(w, api.ExecUpgrade, stream)
}

// splice answers 101 Switching Protocols with the given Upgrade token and copies bytes both
// ways between the client's connection and remote until either side ends or the daemon
// stops; remote is closed at the end. Errors before the upgrade are answered as usual.
func (d *Daemon) splice(w http.ResponseWriter, upgrade string, remote net.Conn) {
	defer remote.Close()
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeError(w, fmt.Errorf("connection cannot be upgraded"))
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		d.log.Warn("hijack for "+upgrade, "err", err)
		return
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+upgrade+"\r\n\r\n")
	defer context.AfterFunc(d.work.ctx, func() { conn.Close(); remote.Close() })()
	done := make(chan struct{}, 2)
	go func() {
		// Bytes the HTTP server already buffered belong to the session.
		if _, err := io.Copy(remote, buf.Reader); err != nil && !isClosed(err) {
			d.log.Debug(upgrade+": client to guest", "err", err)
		}
		remote.Close()
		done <- struct{}{}
	}()
	go func() {
		if _, err := io.Copy(conn, remote); err != nil && !isClosed(err) {
			d.log.Debug(upgrade+": guest to client", "err", err)
		}
		conn.Close()
		done <- struct{}{}
	}()
	<-done
	<-done
}
