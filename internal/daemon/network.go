package daemon

import (
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/vmservice"
)

// Handlers for reaching guests: ports, ssh, forwarding.

func (d *Daemon) handlePorts(w http.ResponseWriter, r *http.Request) {
	ports, err := d.vms.Ports(r.Context(), r.PathValue("ref"))
	if err != nil {
		writeError(w, err)
		return
	}
	vm, _ := d.vms.Resolve(r.Context(), r.PathValue("ref"))
	out := make([]api.Port, 0, len(ports))
	var probes []int // indexes into out of the ports to ask whether they speak HTTP
	for _, p := range ports {
		ap := api.Port{Proto: p.Proto, Addr: p.Addr, Port: p.Port, PID: p.PID, Process: p.Process}
		if (p.Proto == "tcp" || p.Proto == "tcp6") && !isLoopback(p.Addr) && vm.IP != "" {
			ap.Reach = vm.Name + ".vm:" + strconv.Itoa(p.Port)
			probes = append(probes, len(out))
		}
		out = append(out, ap)
	}
	// Only services that answer HTTP get a URL; sshd on 22 gets its address alone.
	isHTTP := d.vms.SpeaksHTTP(r.Context(), vm.Name, vm.Name+".vm", portsOf(out, probes))
	for i, j := range probes {
		if isHTTP[i] {
			out[j].URL = "http://" + out[j].Reach
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// portsOf is the ports of out at the indexes idx.
func portsOf(out []api.Port, idx []int) []vmservice.ListenAddr {
	l := make([]vmservice.ListenAddr, len(idx))
	for i, j := range idx {
		l[i] = vmservice.ListenAddr{Addr: out[j].Addr, Port: out[j].Port}
	}
	return l
}

func isLoopback(addr string) bool {
	ip := net.ParseIP(addr)
	return ip != nil && ip.IsLoopback()
}

func (d *Daemon) handleSSH(w http.ResponseWriter, r *http.Request) {
	wait := 60 * time.Second
	if v := r.URL.Query().Get("wait"); v != "" {
		if dur, err := time.ParseDuration(v); err == nil {
			wait = dur
		}
	}
	t, err := d.vms.SSH(r.Context(), r.PathValue("ref"), wait)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.SSHTarget{
		VM: t.VM.Name, GuestAddress: t.GuestAddress, User: "root", KeyFile: t.KeyFile, KnownHosts: t.KnownHosts,
		HostAlias: t.HostAlias, SSHConfig: d.vms.SSHConfigFile(),
	})
}

// handleForward connects to an address in the guest and splices it to the upgraded client
// connection: one forwarded connection per request.
func (d *Daemon) handleForward(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != api.ForwardUpgrade {
		writeError(w, &api.Error{Code: "invalid", Message: "forward needs `Upgrade: " + api.ForwardUpgrade + "`"})
		return
	}
	var req api.ForwardRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	conn, _, err := d.vms.Dial(r.Context(), r.PathValue("ref"), req.Network, req.Address)
	if err != nil {
		writeError(w, err)
		return
	}
	d.splice(w, api.ForwardUpgrade, conn)
}

func (d *Daemon) handleTeardown(w http.ResponseWriter, r *http.Request) {
	if err := d.vms.TeardownNetwork(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}
