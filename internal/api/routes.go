package api

import (
	"fmt"
	"net/url"
	"strings"
)

// A Route is one endpoint of the API, written as a net/http ServeMux pattern: "METHOD /v1/…",
// where a segment in braces ({ref}, {name}, {id}) stands for a value the caller fills in. The
// daemon registers each Route with its handler and the client builds its requests from the
// same Route (Method, Path), so the two cannot disagree on a method or a path.
type Route string

// The routes. (op): the answer is an operation's event stream (ContentNDJSON) ending with a
// result event. (upgrade): the connection switches to another protocol (ExecUpgrade,
// ForwardUpgrade, UploadUpgrade).
const (
	RouteVersion  Route = "GET /v1/version"
	RouteShutdown Route = "POST /v1/shutdown" // the daemon exits; VMs keep running

	RouteListVMs   Route = "GET /v1/vms"
	RouteCreateVM  Route = "POST /v1/vms" // (op) CreateVMRequest; result: VM
	RouteGetVM     Route = "GET /v1/vms/{ref}"
	RouteSetVM     Route = "PATCH /v1/vms/{ref}"        // SetVMRequest
	RouteDeleteVM  Route = "DELETE /v1/vms/{ref}"       // ?force=1: a running one too
	RouteStartVM   Route = "POST /v1/vms/{ref}/start"   // (op) result: VM
	RouteStopVM    Route = "POST /v1/vms/{ref}/stop"    // (op) StopRequest; result: VM
	RouteRestartVM Route = "POST /v1/vms/{ref}/restart" // (op) StopRequest; result: VM
	RouteKillVM    Route = "POST /v1/vms/{ref}/kill"    // KillRequest
	RouteSuspendVM Route = "POST /v1/vms/{ref}/suspend" // (op) result: VM
	RouteResumeVM  Route = "POST /v1/vms/{ref}/resume"  // (op) result: VM
	RoutePruneVMs  Route = "POST /v1/vms/prune"         // delete every VM that is not running
	// RouteSnapshotVM saves a running VM as a snapshot and lets it run on.
	RouteSnapshotVM Route = "POST /v1/vms/{ref}/snapshot" // (op) SnapshotVMRequest; result: Snapshot
	// RouteForkVM makes live clones of a running VM, all or none.
	RouteForkVM Route = "POST /v1/vms/{ref}/fork" // (op) ForkVMRequest; result: VMs (the clones)
	// RouteLogs answers plain text: ?source=console|vmm, &follow=1 to keep following.
	RouteLogs         Route = "GET /v1/vms/{ref}/logs"
	RouteExec         Route = "POST /v1/vms/{ref}/exec" // (upgrade) ExecRequest
	RoutePorts        Route = "GET /v1/vms/{ref}/ports"
	RouteSSH          Route = "GET /v1/vms/{ref}/ssh"       // ?wait=<duration>
	RouteForward      Route = "POST /v1/vms/{ref}/forward"  // (upgrade) ForwardRequest
	RouteUpload       Route = "POST /v1/vms/{ref}/upload"   // (upgrade) UploadRequest
	RouteSetWorkspace Route = "PUT /v1/vms/{ref}/workspace" // Workspace
	RouteTeardown     Route = "POST /v1/system/teardown"    // banger's host network state; refused while VMs run

	RouteListOperations Route = "GET /v1/operations"
	RouteWatchOperation Route = "GET /v1/operations/{id}/events" // (op) replay, then follow

	RouteListImages      Route = "GET /v1/images"
	RouteShowImage       Route = "GET /v1/images/{name}"
	RouteDeleteImage     Route = "DELETE /v1/images/{name}"
	RouteBuildImage      Route = "POST /v1/images/{name}/build"  // (op) result: Image
	RouteExportImage     Route = "POST /v1/images/{name}/export" // (op) ExportRequest; result: Bundle
	RoutePullImage       Route = "POST /v1/images/pull"          // (op) PullImageRequest; result: Image
	RouteRegisterImage   Route = "POST /v1/images/register"      // (op) RegisterImageRequest; result: Image
	RouteImportImage     Route = "POST /v1/images/import"        // (op) ImportRequest; result: Image
	RoutePruneImageCache Route = "POST /v1/images/cache/prune"   // PruneRequest

	RouteListKernels  Route = "GET /v1/kernels"
	RouteShowKernel   Route = "GET /v1/kernels/{name}"
	RouteDeleteKernel Route = "DELETE /v1/kernels/{name}"
	RoutePullKernel   Route = "POST /v1/kernels/{name}/pull"   // (op) result: Kernel
	RouteExportKernel Route = "POST /v1/kernels/{name}/export" // (op) ExportRequest; result: Bundle
	RouteImportKernel Route = "POST /v1/kernels/import"        // (op) ImportRequest; result: Kernel

	RouteListSnapshots  Route = "GET /v1/snapshots"           // boot and user snapshots, oldest first
	RouteDeleteSnapshot Route = "DELETE /v1/snapshots/{name}" // VMs made from it keep running

	RouteCatalog Route = "GET /v1/catalog" // what can be had
)

// Method is the route's HTTP method.
func (r Route) Method() string {
	method, _, _ := strings.Cut(string(r), " ")
	return method
}

// Path is the route's path with its wildcards replaced by values, in order, each escaped as
// one path segment. It panics when the number of values is not the number of wildcards: that
// is a mistake in the caller's code, not in its input.
func (r Route) Path(values ...string) string {
	_, pattern, _ := strings.Cut(string(r), " ")
	segs := strings.Split(pattern, "/")
	n := 0
	for i, s := range segs {
		if !strings.HasPrefix(s, "{") {
			continue
		}
		if n >= len(values) {
			break
		}
		segs[i] = url.PathEscape(values[n])
		n++
	}
	if n != len(values) || n != strings.Count(pattern, "{") {
		panic(fmt.Sprintf("api: route %q has %d wildcards, given %d values", r, strings.Count(pattern, "{"), len(values)))
	}
	return strings.Join(segs, "/")
}
