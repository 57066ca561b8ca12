package daemon

import (
	"net/http"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/vmservice"
)

// Handlers for shipping files into VMs.

func (d *Daemon) handleUpload(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != api.UploadUpgrade {
		writeError(w, &api.Error{Code: "invalid", Message: "upload needs `Upgrade: " + api.UploadUpgrade + "`"})
		return
	}
	var req api.UploadRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	stream, vm, err := d.vms.OpenUpload(r.Context(), r.PathValue("ref"), agent.UntarRequest{Dest: req.Dest, Compression: req.Compression, Keep: req.Keep})
	if err != nil {
		writeError(w, err)
		return
	}
	d.log.Debug("upload", "vm", vm.Name, "dest", req.Dest)
	d.splice(w, api.UploadUpgrade, stream)
}

func (d *Daemon) handleSetWorkspace(w http.ResponseWriter, r *http.Request) {
	var ws api.Workspace
	if err := decodeBody(r, &ws); err != nil {
		writeError(w, err)
		return
	}
	vm, err := d.vms.SetWorkspace(r.Context(), r.PathValue("ref"), vmservice.Workspace(ws))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toAPIVM(vm))
}
