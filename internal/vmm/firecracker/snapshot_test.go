package firecracker

import (
	"encoding/json"
	"testing"

	"github.com/banger-dev/banger/internal/vmm"
)

// A restored machine gets its own tap and vsock socket; the memory is a File backend and the
// machine is not resumed by the load (its drives change first).
func TestLoadRequestOverridesTapAndVsock(t *testing.T) {
	cfg := vmm.Config{VCPU: 1, MemoryMiB: 128, Disks: []vmm.Disk{{Path: "/clone/disk.ext4"}}, NIC: &vmm.NIC{Tap: "tap-clone", MAC: "02:00:00:00:00:02"}}
	pl := buildPlan(cfg, paths{disks: []string{"/clone/disk.ext4"}, vsock: "/run/clone/vsock.sock"})
	extra, _ := json.Marshal(snapshotExtra{Vsock: "/run/original/vsock.sock"})
	snap := vmm.Snapshot{Dir: "/snap", Files: map[string]string{"state": stateFile, "memory": memoryFile}, Extra: extra}
	got := loadRequest(pl, snap)
	b, _ := json.Marshal(got)
	want := `{"snapshot_path":"/snap/state","mem_backend":{"backend_type":"File","backend_path":"/snap/memory"},"resume_vm":false,` +
		`"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap-clone"}],"vsock_override":{"uds_path":"/run/clone/vsock.sock"}}`
	if string(b) != want {
		t.Errorf("PUT /snapshot/load body\n got %s\nwant %s", b, want)
	}
	// The snapshot's own socket path needs no override (and versions without it accept the load).
	pl.Vsock.UDSPath = "/run/original/vsock.sock"
	if got := loadRequest(pl, snap); got.VsockOverride != nil {
		t.Errorf("vsock_override %+v for the snapshot's own socket path; want none", got.VsockOverride)
	}
}
