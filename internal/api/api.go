// Package api is the daemon's HTTP/JSON API: routes, request and response types, progress
// events and errors. It is shared by the daemon and its client and imports nothing of
// either; its ExecRequest is the guest agent's (package agent).
//
// Every route starts with the API version (/v1/…). Long operations answer with a stream of
// newline-delimited JSON Events (Content-Type application/x-ndjson) that ends with one event
// of type "result" or "error". Exec upgrades the connection (Upgrade: banger-exec) and then
// carries the frames of package wire.
package api

import (
	"context"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/failure"
)

// Tokens and headers of the API (the routes are in routes.go).
const (
	// ExecUpgrade is the Upgrade token of RouteExec.
	ExecUpgrade = "banger-exec"
	// ContentNDJSON is the Content-Type of operations' event streams.
	ContentNDJSON = "application/x-ndjson"

	// HeaderInjectFault names a start step to fail on purpose; honoured only by a daemon
	// started with BANGER_TEST_HOOKS=1 (end-to-end tests of failure cleanup).
	HeaderInjectFault = "X-Banger-Inject-Fault"
	// HeaderPauseAt names a start step before which the daemon hangs (after writing
	// <state dir>/test-paused-at), so a test can kill it there; test hooks only.
	HeaderPauseAt = "X-Banger-Pause-At"
)

// Version is the daemon's identity, returned by GET /v1/version.
type Version struct {
	Version  string `json:"version"`
	Commit   string `json:"commit"`
	Date     string `json:"date"`
	API      string `json:"api"`
	PID      int    `json:"pid"`
	StateDir string `json:"state_dir"`
}

// Error is the body of every non-2xx answer and of "error" events.
type Error struct {
	// Code is a stable machine-readable class: "invalid", "usage" (invalid because of a
	// value the user gave as a command-line flag), "not_found", "conflict", "io" (the host
	// failed to store or read data), "canceled", "timeout", "failed", "internal".
	Code    string `json:"code"`
	Message string `json:"message"`
	// Hint says what to do about it, when there is something to do.
	Hint string `json:"hint,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// codeKinds are the codes that carry an error's kind (see failure.Of) across the API; the
// first code of a kind is the one the daemon answers with.
var codeKinds = []struct {
	code string
	kind error
}{
	{"invalid", failure.Invalid},
	{"usage", failure.Invalid},
	{"not_found", failure.NotFound},
	{"conflict", failure.Conflict},
	{"io", failure.IO},
	{"canceled", context.Canceled},
	{"timeout", context.DeadlineExceeded},
}

// Is reports whether e's code stands for target, so that the client tests an answer's kind
// as the daemon tested the error: errors.Is(err, failure.NotFound) holds for a "not_found"
// answer, errors.Is(err, context.Canceled) for a "canceled" one.
func (e *Error) Is(target error) bool {
	for _, ck := range codeKinds {
		if ck.code == e.Code && ck.kind == target {
			return true
		}
	}
	return false
}

// CodeOf returns the code for err's kind (failure.Of), or "failed" for an error without one.
func CodeOf(err error) string {
	if kind := failure.Of(err); kind != nil {
		for _, ck := range codeKinds {
			if ck.kind == kind {
				return ck.code
			}
		}
	}
	return "failed"
}

// ErrorBody wraps Error in answers: {"error": {...}}.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// Field is one resolved setting with where its value came from: "flag", "config", "auto"
// (a host heuristic) or "builtin" (a floor).
type Field struct {
	Value  int64  `json:"value"`
	Source string `json:"source"`
	Reason string `json:"reason,omitempty"`
}

// Spec is a VM's resolved resources.
type Spec struct {
	VCPU      Field  `json:"vcpu"`
	MemoryMiB Field  `json:"memory_mib"`
	DiskBytes Field  `json:"disk_bytes"`
	Summary   string `json:"summary"` // the one-line form printed after "spec:"
}

// VM is a VM as the API shows it.
type VM struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	State      string     `json:"state"`
	Image      string     `json:"image"`
	Kernel     string     `json:"kernel"`
	VMM        string     `json:"vmm"`
	Accel      string     `json:"accel"`
	VCPU       int        `json:"vcpu"`
	MemoryMiB  int        `json:"memory_mib"`
	DiskBytes  int64      `json:"disk_bytes"`
	AutoRemove bool       `json:"auto_remove,omitempty"`
	PID        int        `json:"pid,omitempty"`
	IP         string     `json:"ip,omitempty"`
	NAT        bool       `json:"nat"`
	Workspace  *Workspace `json:"workspace,omitempty"`
	Dir        string     `json:"dir"`
	LastError  string     `json:"last_error,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	Spec       *Spec      `json:"spec,omitempty"`
}

// CreateVMRequest is the body of POST /v1/vms. Unset resources are resolved by the daemon
// (config, then host heuristics, then floors).
type CreateVMRequest struct {
	Name      string `json:"name,omitempty"`
	Image     string `json:"image,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
	VCPU      *int   `json:"vcpu,omitempty"`
	MemoryMiB *int   `json:"memory_mib,omitempty"`
	DiskBytes *int64 `json:"disk_bytes,omitempty"`
	// AutoRemove marks the VM as ephemeral (vm run --rm): the daemon deletes it if it finds
	// it stopped, e.g. after a crash.
	AutoRemove bool `json:"auto_remove,omitempty"`
	// CancelOnDisconnect ties the create to the request: if the client goes away before the
	// VM is ready, the create is undone.
	CancelOnDisconnect bool `json:"cancel_on_disconnect,omitempty"`
	// NoStart only creates the VM (record and disk): state "created".
	NoStart bool `json:"no_start,omitempty"`
	// KeepUnreachable keeps a VM whose guest never answered (stopped, with its disk and
	// console log, AutoRemove cleared) instead of undoing the create; other failures still
	// undo everything.
	KeepUnreachable bool `json:"keep_unreachable,omitempty"`
	// NoNAT keeps the VM's traffic on the bridge (no masquerading out of the host).
	NoNAT bool `json:"no_nat,omitempty"`
	// FromSnapshot restores the VM from the named snapshot instead of booting it: its image,
	// kernel, VMM and size are the snapshot's, and asking for others is refused.
	FromSnapshot string `json:"from_snapshot,omitempty"`
	// Cold boots the VM even when a boot snapshot of its combination exists, and makes none
	// (the config's warm_start = false does the same for every VM).
	Cold bool `json:"cold,omitempty"`
}

// StopRequest is the body of POST /v1/vms/{ref}/stop and /restart.
type StopRequest struct {
	// Timeout is how long the guest gets to power off before harder means; 0: the default.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// KillRequest is the body of POST /v1/vms/{ref}/kill.
type KillRequest struct {
	// Signal is the signal number for the VMM process; 0 means SIGKILL.
	Signal int `json:"signal,omitempty"`
}

// SetVMRequest is the body of PATCH /v1/vms/{ref}: resources of a VM that is not running.
type SetVMRequest struct {
	VCPU      *int   `json:"vcpu,omitempty"`
	MemoryMiB *int   `json:"memory_mib,omitempty"`
	DiskBytes *int64 `json:"disk_bytes,omitempty"`
}

// ExecRequest is the body of RouteExec: the guest agent's own request, which the daemon
// passes on as it is, so that the API takes exactly what the agent does.
type ExecRequest = agent.ExecRequest

// Event types.
const (
	EventProgress = "progress" // a stage started or advanced
	EventSpec     = "spec"     // the resolved spec of a VM being created
	EventNotice   = "notice"   // something the user should read
	EventResult   = "result"   // the operation succeeded; last event
	EventError    = "error"    // the operation failed; last event
)

// Event is one line of an operation's stream.
type Event struct {
	Type string `json:"type"`
	// Operation is the id of the operation the event belongs to; GET
	// /v1/operations/{id}/events replays and follows it from another client.
	Operation string    `json:"operation,omitempty"`
	Time      time.Time `json:"time"`
	Stage     string    `json:"stage,omitempty"`
	Message   string    `json:"message,omitempty"`
	Done      int64     `json:"done,omitempty"`
	Total     int64     `json:"total,omitempty"`

	Spec     *Spec        `json:"spec,omitempty"`
	VM       *VM          `json:"vm,omitempty"`
	Kernel   *Kernel      `json:"kernel,omitempty"`
	Image    *Image       `json:"image,omitempty"`
	Bundle   *Bundle      `json:"bundle,omitempty"`
	Snapshot *Snapshot    `json:"snapshot,omitempty"` // the result of RouteSnapshotVM
	VMs      []VM         `json:"vms,omitempty"`      // the clones RouteForkVM made
	Timings  []StepTiming `json:"timings,omitempty"`  // each step's time, in order
	Error    *Error       `json:"error,omitempty"`
	// Unchanged, on a result, says the VM already was in the state asked for (start of a
	// running VM, stop of a stopped one): nothing was done.
	Unchanged bool `json:"unchanged,omitempty"`
}

// StepTiming is how long one step of an operation took.
type StepTiming struct {
	Name string `json:"name"`
	// VM, in an operation that makes several VMs (a fork), names the VM the step made; it is
	// empty for a step of the operation itself (a fork's capture of its source) and in an
	// operation on one VM.
	VM       string        `json:"vm,omitempty"`
	Duration time.Duration `json:"duration"`
}

// Operation is a long piece of work the daemon runs (create, start, stop, pull, build). Its
// events can be watched by any client while it runs and for a few minutes after.
type Operation struct {
	ID       string    `json:"id"`
	Kind     string    `json:"kind"`   // "vm.create", "vm.start", "kernel.pull", …
	Target   string    `json:"target"` // the VM, kernel or image it works on
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitempty"`
	Done     bool      `json:"done"`
	Error    string    `json:"error,omitempty"`
}
