package firecracker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/guestagent"
	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/vmm"
)

// These tests run no Firecracker: they check request building, the API client against a fake
// server, version handling, the vsock CONNECT preamble, the jail and the jailer decision.

// TestRequestBodies pins the JSON of each request to the field names of Firecracker's
// OpenAPI description, with optional newer fields left out when unset.
func TestRequestBodies(t *testing.T) {
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"machine-config", MachineConfig{VCPUCount: 2, MemSizeMiB: 1024}, `{"vcpu_count":2,"mem_size_mib":1024,"smt":false}`},
		{"machine-config huge pages", MachineConfig{VCPUCount: 1, MemSizeMiB: 512, HugePages: "2M", TrackDirtyPages: true}, `{"vcpu_count":1,"mem_size_mib":512,"smt":false,"track_dirty_pages":true,"huge_pages":"2M"}`},
		{"boot-source", BootSource{KernelImagePath: "/k", InitrdPath: "/i", BootArgs: "console=ttyS0"}, `{"kernel_image_path":"/k","initrd_path":"/i","boot_args":"console=ttyS0"}`},
		{"boot-source without initrd", BootSource{KernelImagePath: "/k"}, `{"kernel_image_path":"/k"}`},
		{"drive", Drive{DriveID: "disk0", PathOnHost: "/img", IsReadOnly: true}, `{"drive_id":"disk0","path_on_host":"/img","is_root_device":false,"is_read_only":true}`},
		{"drive with engine", Drive{DriveID: "disk1", PathOnHost: "/d", CacheType: "Writeback", IOEngine: "Async"}, `{"drive_id":"disk1","path_on_host":"/d","is_root_device":false,"is_read_only":false,"cache_type":"Writeback","io_engine":"Async"}`},
		{"network-interface", NetworkInterface{IfaceID: "eth0", HostDevName: "tap0", GuestMAC: "06:00:0a:00:00:02"}, `{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:0a:00:00:02"}`},
		{"vsock", Vsock{GuestCID: 3, UDSPath: "/run/v.sock"}, `{"guest_cid":3,"uds_path":"/run/v.sock"}`},
		{"logger", Logger{LogPath: "/l", Level: "Info", ShowLevel: true}, `{"log_path":"/l","level":"Info","show_level":true,"show_log_origin":false}`},
		{"metrics", Metrics{MetricsPath: "/m"}, `{"metrics_path":"/m"}`},
		{"action", Action{ActionType: ActionInstanceStart}, `{"action_type":"InstanceStart"}`},
		{"vm", VMState{State: VMPaused}, `{"state":"Paused"}`},
	}
	for _, tc := range tests {
		b, err := json.Marshal(tc.v)
		if err != nil || string(b) != tc.want {
			t.Errorf("%s: got %s (%v)\nwant %s", tc.name, b, err, tc.want)
		}
	}
}

func TestBuildPlan(t *testing.T) {
	cfg := vmm.Config{
		ID: "abc", VCPU: 2, MemoryMiB: 1024, Kernel: "/k/vmlinux", Initrd: "/k/initrd",
		Cmdline: "banger.lower=vda panic=-1",
		Disks:   []vmm.Disk{{Path: "/img/rootfs.ext4", ReadOnly: true}, {Path: "/vm/disk.ext4"}},
	}
	p := paths{kernel: "/kernel", initrd: "/initrd", disks: []string{"/disk0", "/disk1"}, log: "/fc.log", metrics: "/fc.metrics", vsock: "/run/v.sock"}
	pl := buildPlan(cfg, p)
	if pl.Machine != (MachineConfig{VCPUCount: 2, MemSizeMiB: 1024}) {
		t.Errorf("machine = %+v", pl.Machine)
	}
	if pl.Boot.KernelImagePath != "/kernel" || pl.Boot.InitrdPath != "/initrd" {
		t.Errorf("boot source = %+v", pl.Boot)
	}
	args := pl.Boot.BootArgs
	if !strings.HasPrefix(args, "console=ttyS0 ") || !strings.HasSuffix(args, " "+cfg.Cmdline) {
		t.Errorf("boot args %q: want the console first and the caller's arguments last (they win)", args)
	}
	for _, bad := range []string{"acpi=off", "8250.nr_uarts=0", "nomodule"} {
		if strings.Contains(args, bad) {
			t.Errorf("boot args %q contain %s", args, bad)
		}
	}
	want := []Drive{
		{DriveID: "disk0", PathOnHost: "/disk0", IsReadOnly: true},
		{DriveID: "disk1", PathOnHost: "/disk1"},
	}
	if len(pl.Drives) != 2 || pl.Drives[0] != want[0] || pl.Drives[1] != want[1] {
		t.Errorf("drives = %+v; want %+v (image read-only first, disk second)", pl.Drives, want)
	}
	if pl.Vsock != (Vsock{GuestCID: 3, UDSPath: "/run/v.sock"}) || pl.Logger.LogPath != "/fc.log" || pl.Metrics.MetricsPath != "/fc.metrics" {
		t.Errorf("vsock %+v logger %+v metrics %+v", pl.Vsock, pl.Logger, pl.Metrics)
	}
	if len(pl.Networks) != 0 {
		t.Errorf("networks = %+v; want none without a NIC", pl.Networks)
	}
	cfg.NIC = &vmm.NIC{Tap: "bgtap0", MAC: "02:42:ac:10:00:02"}
	if n := buildPlan(cfg, p).Networks; len(n) != 1 || n[0] != (NetworkInterface{IfaceID: "eth0", HostDevName: "bgtap0", GuestMAC: "02:42:ac:10:00:02"}) {
		t.Errorf("networks = %+v; want eth0 on the NIC's tap with its MAC", n)
	}
}

// fakeAPI serves Firecracker's API on a unix socket from canned answers, recording requests.
type fakeAPI struct {
	sock     string
	requests []string // "METHOD path body"
	answer   func(method, path string) (int, string)
}

func newFakeAPI(t *testing.T, answer func(method, path string) (int, string)) *fakeAPI {
	t.Helper()
	f := &fakeAPI{sock: filepath.Join(shortDir(t, "bff"), "api.sock"), answer: answer}
	ln, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodGet && r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s without Content-Type: application/json", r.Method, r.URL.Path)
		}
		f.requests = append(f.requests, r.Method+" "+r.URL.Path+" "+string(b))
		status, body := f.answer(r.Method, r.URL.Path)
		w.WriteHeader(status)
		io.WriteString(w, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return f
}

func TestPlanApplyOrderAndFaults(t *testing.T) {
	rec := loadRecordings(t)["1.14.2"]
	fault := func(name string) string {
		for _, ex := range rec {
			if ex.Name == name {
				return ex.Response
			}
		}
		t.Fatalf("no recording %q", name)
		return ""
	}
	pl := buildPlan(vmm.Config{VCPU: 1, MemoryMiB: 512, Disks: []vmm.Disk{{ReadOnly: true}, {}}},
		paths{kernel: "/k", disks: []string{"/a", "/b"}, log: "/l", metrics: "/m", vsock: "/v"})

	f := newFakeAPI(t, func(method, path string) (int, string) { return 204, "" })
	c := NewClient(f.sock)
	defer c.Close()
	n, err := pl.apply(context.Background(), c)
	if err != nil || n != 7 {
		t.Fatalf("apply = %d calls, %v; want 7, nil", n, err)
	}
	var order []string
	for _, r := range f.requests {
		order = append(order, strings.Join(strings.Fields(r)[:2], " "))
	}
	want := "PUT /logger,PUT /metrics,PUT /machine-config,PUT /boot-source,PUT /drives/disk0,PUT /drives/disk1,PUT /vsock"
	if strings.Join(order, ",") != want {
		t.Errorf("requests %v\nwant %s", order, want)
	}

	// The first rejection stops the plan and is reported verbatim.
	f2 := newFakeAPI(t, func(method, path string) (int, string) {
		if path == "/boot-source" {
			return 400, fault("missing kernel")
		}
		return 204, ""
	})
	c2 := NewClient(f2.sock)
	defer c2.Close()
	_, err = pl.apply(context.Background(), c2)
	wantErr := "firecracker rejected boot-source: Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)"
	if err == nil || err.Error() != wantErr {
		t.Errorf("apply error = %v\nwant %s", err, wantErr)
	}
	if len(f2.requests) != 4 {
		t.Errorf("%d requests after a rejected boot-source; want 4 (nothing after it)", len(f2.requests))
	}
}

func TestClientErrors(t *testing.T) {
	f := newFakeAPI(t, func(method, path string) (int, string) {
		switch path {
		case "/vm":
			return 400, `{"fault_message":"The requested operation is not supported before starting the microVM."}`
		case "/actions":
			return 500, "not json"
		}
		return 200, `{"id":"x","state":"Running","vmm_version":"1.14.2","app_name":"Firecracker"}`
	})
	c := NewClient(f.sock)
	defer c.Close()
	ctx := context.Background()
	if info, err := c.Describe(ctx); err != nil || info.State != StateRunning {
		t.Errorf("Describe = %+v, %v", info, err)
	}
	err := c.PatchVM(ctx, VMPaused)
	if err == nil || err.Error() != "firecracker rejected vm state Paused: The requested operation is not supported before starting the microVM." {
		t.Errorf("PatchVM error = %v", err)
	}
	err = c.Action(ctx, ActionSendCtrlAltDel)
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 500 || !strings.Contains(err.Error(), "SendCtrlAltDel: not json") {
		t.Errorf("Action error = %v; want the raw body when there is no fault_message", err)
	}
	// No process behind the socket: a plain connection error, without net/http's fake URL.
	gone := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	err = gone.PutVsock(ctx, Vsock{})
	if err == nil || strings.Contains(err.Error(), "http://localhost") || !strings.HasPrefix(err.Error(), "firecracker vsock: ") {
		t.Errorf("error without a server = %v", err)
	}
}

func TestParseAndCheckVersion(t *testing.T) {
	tests := []struct {
		in        string
		want      Version
		supported bool
	}{
		{"Firecracker v1.14.2", Version{1, 14, 2}, true},
		{"1.8.0", Version{1, 8, 0}, true},
		{"v1.7.0", Version{1, 7, 0}, false},
		{"Firecracker v1.10.1-dev", Version{1, 10, 1}, true},
		{"Firecracker v2.0.0", Version{2, 0, 0}, false},
		{"Jailer v1.7.0", Version{1, 7, 0}, false},
	}
	for _, tc := range tests {
		v, err := ParseVersion(tc.in)
		if err != nil || v != tc.want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v", tc.in, v, err, tc.want)
			continue
		}
		if err := CheckSupported(v); (err == nil) != tc.supported {
			t.Errorf("CheckSupported(%v) = %v; want supported=%v", v, err, tc.supported)
		} else if err != nil && !strings.Contains(err.Error(), ReleasesURL) {
			t.Errorf("CheckSupported(%v) = %v; want it to say where to get a release", v, err)
		}
	}
	if _, err := ParseVersion("Firecracker"); err == nil {
		t.Error("ParseVersion without a number succeeded")
	}
}

// fakeBinary writes an executable script named name that prints out for --version.
func fakeBinary(t *testing.T, dir, name, out string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	script := "#!/bin/sh\nprintf '%s\\n\\n2026-01-01T00:00:00 [anonymous-instance:main] Firecracker exiting successfully. exit_code=0\\n' '" + out + "'\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestProbeWithoutRoot: a daemon that is not root cannot run Firecracker yet (tap by name in
// the namespace, the jailer), so its probe fails with the way out and vmm = "auto" picks QEMU.
func TestProbeWithoutRoot(t *testing.T) {
	good := fakeBinary(t, t.TempDir(), "firecracker", "Firecracker v1.14.2")
	p := (&Driver{Binary: good, EUID: func() int { return 1000 }}).Probe(context.Background())
	if !errors.Is(p.Err, ErrNeedsRoot) || !strings.Contains(p.Err.Error(), "uid 1000") || !strings.Contains(p.Err.Error(), "QEMU") || p.Found == "" {
		t.Errorf("Probe as uid 1000 = %+v; want ErrNeedsRoot naming the uid and QEMU, with the binary found", p)
	}
	qemu := vmm.Probe{Driver: "qemu", Title: "QEMU", Found: "qemu 7.2"}
	c, err := vmm.Choose(config.VMMAuto, "config.toml", vmm.Facts{Accel: host.AccelChoice{Accel: host.KVM}, Drivers: []vmm.Probe{p, qemu}})
	if err != nil || c.Driver != "qemu" {
		t.Errorf("auto with KVM, Firecracker found but not root: %+v, %v; want QEMU", c, err)
	}
}

func TestProbe(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	good := fakeBinary(t, dir, "firecracker", "Firecracker v1.14.2")
	if info, err := (&Driver{Binary: good}).Inspect(ctx); err != nil || info.Version != (Version{1, 14, 2}) || info.Binary != good {
		t.Errorf("Probe(good) = %+v, %v", info, err)
	}
	asRoot := func() int { return 0 }
	if p := (&Driver{Binary: good, EUID: asRoot}).Probe(ctx); p.Err != nil || p.Found != "firecracker 1.14.2 at "+good || !p.NeedsKVM || p.Driver != Name {
		t.Errorf("Probe = %+v", p)
	}
	old := fakeBinary(t, dir, "firecracker-old", "Firecracker v1.7.0")
	if _, err := (&Driver{Binary: old}).Inspect(ctx); err == nil || !strings.Contains(err.Error(), "1.7.0 is too old") {
		t.Errorf("Probe(1.7.0) = %v; want too old", err)
	}
	if _, err := (&Driver{Binary: filepath.Join(dir, "nope")}).Inspect(ctx); err == nil || !strings.Contains(err.Error(), "firecracker_bin") || !strings.Contains(err.Error(), ReleasesURL) {
		t.Errorf("Probe(missing) = %v; want a hint at firecracker_bin and the releases", err)
	}
	// Settings are read afresh on every call (config.toml edits apply without a restart).
	bin := good
	d := &Driver{Binary: "/ignored", Settings: func() Settings { return Settings{Binary: bin} }}
	if info, err := d.Inspect(ctx); err != nil || info.Binary != good {
		t.Errorf("Probe with Settings = %+v, %v", info, err)
	}
	bin = old
	if _, err := d.Inspect(ctx); err == nil || !strings.Contains(err.Error(), "too old") {
		t.Errorf("Probe after the setting changed = %v; want the new binary's verdict", err)
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := (&Driver{}).Inspect(ctx); err == nil || !strings.Contains(err.Error(), "in $PATH") {
		t.Errorf("Probe(default, empty PATH) = %v", err)
	}
}

func TestJailerDecision(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	fc := fakeBinary(t, dir, "firecracker", "Firecracker v1.14.2")
	jailer := fakeBinary(t, dir, "jailer", "Jailer v1.14.2")
	otherDir := t.TempDir()
	oldJailer := fakeBinary(t, otherDir, "jailer-1.7", "Jailer v1.7.0")
	fcAlone := fakeBinary(t, otherDir, "firecracker", "Firecracker v1.14.2")
	t.Setenv("PATH", t.TempDir()) // no jailer in PATH
	on, off := true, false
	v := Version{1, 14, 2}
	tests := []struct {
		name    string
		o       JailerOptions
		fc      string
		enabled bool
		err     string
		reason  string
		warning string
	}{
		{"disabled", JailerOptions{Enabled: &off}, fc, false, "", "jailer_enabled = false", ""},
		{"default, next to firecracker", JailerOptions{ChrootBase: "/srv/j"}, fc, true, "", "jailer 1.14.2 at " + jailer, ""},
		{"default, none found", JailerOptions{ChrootBase: "/srv/j"}, fcAlone, false, "", "no jailer found", ""},
		{"required, none found", JailerOptions{Enabled: &on, ChrootBase: "/srv/j"}, fcAlone, false, "the jailer is required", "", ""},
		{"configured binary missing", JailerOptions{Binary: "/nonexistent/jailer", ChrootBase: "/srv/j"}, fc, false, "jailer_bin", "", ""},
		{"other version", JailerOptions{Binary: oldJailer, ChrootBase: "/srv/j"}, fc, true, "", "jailer 1.7.0", "differ"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := tc.o.status(ctx, tc.fc, v)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("status = %+v, %v; want an error mentioning %q", st, err, tc.err)
				}
				return
			}
			if err != nil || st.Enabled != tc.enabled || !strings.Contains(st.Reason, tc.reason) || !strings.Contains(st.Warning, tc.warning) || (tc.warning == "" && st.Warning != "") {
				t.Errorf("status = %+v, %v; want enabled=%v, reason with %q, warning with %q", st, err, tc.enabled, tc.reason, tc.warning)
			}
		})
	}
}

func TestNewJailAndValidJailDir(t *testing.T) {
	j, err := newJail("/var/lib/banger/jailer", "/usr/local/bin/firecracker", "0123abcd")
	if err != nil || j.Dir != "/var/lib/banger/jailer/firecracker/0123abcd" || j.Root != j.Dir+"/root" {
		t.Errorf("newJail = %+v, %v", j, err)
	}
	for _, bad := range []struct{ base, bin, id string }{
		{"/b", "/usr/bin/firecracker", "has/slash"},
		{"/b", "/usr/bin/firecracker", strings.Repeat("a", 65)},
		{"/b", "/usr/bin/fc", "abc"},
		{"relative", "/usr/bin/firecracker", "abc"},
	} {
		if _, err := newJail(bad.base, bad.bin, bad.id); err == nil {
			t.Errorf("newJail(%q, %q, %q) succeeded", bad.base, bad.bin, bad.id)
		}
	}
	for dir, ok := range map[string]bool{
		"/var/lib/banger/jailer/firecracker/0123abcd":  true,
		"/var/lib/banger/jailer/firecracker/other":     false, // not this VM
		"/var/lib/banger/jailer/firecracker/0123abcd/": false, // not clean
		"/var/lib/banger/jailer/qemu/0123abcd":         false,
		"/firecracker/0123abcd":                        false, // too shallow
		"relative/firecracker/0123abcd":                false,
	} {
		if validJailDir(dir, "0123abcd") != ok {
			t.Errorf("validJailDir(%q) = %v; want %v", dir, !ok, ok)
		}
	}
}

// TestJailPlace checks the hard-link/copy rules and ownership (as root: chown needs it).
func TestJailPlace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
	base := t.TempDir()
	j, err := newJail(base, "/usr/bin/firecracker", "vm1")
	if err != nil {
		t.Fatal(err)
	}
	j.UID, j.GID = 912345, 912345
	if err := j.create(); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(src, name)
		if err := os.WriteFile(p, []byte(name), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	owner := func(p string) (uint32, os.FileMode, uint64) {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Uid, os.FileMode(st.Mode & 0o777), st.Ino
	}

	shared := write("image", 0o444)
	if p, err := j.place(shared, "disk0", false); err != nil || p != "/disk0" {
		t.Fatalf("place(shared) = %q, %v", p, err)
	}
	if u, m, ino := owner(shared); u != 0 || m != 0o444 {
		t.Errorf("shared image now uid %d mode %o; a read-only input must not change", u, m)
	} else if _, _, ino2 := owner(filepath.Join(j.Root, "disk0")); ino2 != ino {
		t.Errorf("world-readable input was not hard-linked")
	}

	private := write("kernel", 0o600)
	if _, err := j.place(private, "kernel", false); err != nil {
		t.Fatal(err)
	}
	if u, m, ino := owner(private); u != 0 || m != 0o600 {
		t.Errorf("private input changed to uid %d mode %o", u, m)
	} else if u2, _, ino2 := owner(filepath.Join(j.Root, "kernel")); ino2 == ino || u2 != 912345 {
		t.Errorf("unreadable input: want a copy owned by the jail uid, got inode same=%v uid %d", ino2 == ino, u2)
	}

	disk := write("disk", 0o600)
	if _, err := j.place(disk, "disk1", true); err != nil {
		t.Fatal(err)
	}
	if u, m, ino := owner(disk); u != 912345 || m&0o600 != 0o600 {
		t.Errorf("writable disk uid %d mode %o; want the jail's uid with rw", u, m)
	} else if _, _, ino2 := owner(filepath.Join(j.Root, "disk1")); ino2 != ino {
		t.Errorf("writable disk was not hard-linked (writes would be lost)")
	}

	// Another filesystem: writable files cannot be placed (a copy would lose writes).
	if shm, err := os.MkdirTemp("/dev/shm", "bfc"); err == nil {
		defer os.RemoveAll(shm)
		var a, b syscall.Statfs_t
		if syscall.Statfs(shm, &a) == nil && syscall.Statfs(src, &b) == nil && a.Type != b.Type {
			other := filepath.Join(shm, "disk")
			os.WriteFile(other, []byte("x"), 0o600)
			if _, err := j.place(other, "disk2", true); err == nil || !strings.Contains(err.Error(), "different filesystems") {
				t.Errorf("cross-filesystem writable place = %v; want a clear error", err)
			}
			ro := filepath.Join(shm, "image")
			os.WriteFile(ro, []byte("x"), 0o444)
			if _, err := j.place(ro, "disk3", false); err != nil {
				t.Errorf("cross-filesystem read-only place = %v; want a copy", err)
			}
		}
	}

	if used := usedJailIDs(base); !used[912345] {
		t.Errorf("usedJailIDs = %v; want the jail's id", used)
	}
	if id, err := pickJailID(base); err != nil || id == 912345 || id < DefaultJailerID {
		t.Errorf("pickJailID = %d, %v", id, err)
	}
	if err := removeJail(j.Dir, "vm1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(j.Dir); err == nil {
		t.Error("jail still exists")
	}
	for _, p := range []string{shared, private, disk} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("removing the jail removed %s: %v", p, err)
		}
	}
	if err := removeJail("/etc", "vm1"); err == nil {
		t.Error("removeJail accepted /etc")
	}
}

// fakeMuxer is Firecracker's vsock side: it accepts on the unix socket, reads the CONNECT
// line and hands the connection to serve (the guest's listener) after "OK".
func fakeMuxer(t *testing.T, refuse bool, serve func(net.Conn)) string {
	t.Helper()
	sock := filepath.Join(shortDir(t, "bfv"), "v.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				// Byte by byte: the host writes nothing after CONNECT until it reads OK.
				r := bufio.NewReaderSize(conn, 16)
				line, err := r.ReadString('\n')
				if err != nil || line != "CONNECT 1024\n" || refuse {
					conn.Close()
					return
				}
				io.WriteString(conn, "OK 1073741824\n")
				serve(conn)
			}()
		}
	}()
	return sock
}

// TestDialAgentOverVsock runs the real agent server behind a fake vsock muxer: CONNECT, OK,
// then the agent handshake and a health request on the same connection.
func TestDialAgentOverVsock(t *testing.T) {
	s := &guestagent.Server{Version: "vsock-test", Log: log.New(io.Discard, "", 0)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sock := fakeMuxer(t, false, func(c net.Conn) { s.ServeConn(ctx, c) })
	conn, err := DialAgent(ctx, sock)
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	c, err := agent.Connect(ctx, conn)
	if err != nil {
		t.Fatalf("agent handshake over vsock: %v", err)
	}
	defer c.Close()
	if h, err := c.Health(ctx); err != nil || h.AgentVersion != "vsock-test" {
		t.Fatalf("health = %+v, %v", h, err)
	}
}

func TestDialVsockFailures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	refused := fakeMuxer(t, true, nil)
	if _, err := DialVsock(ctx, refused, agent.VsockPort); err == nil || !strings.Contains(err.Error(), "nothing listens on guest port 1024") {
		t.Errorf("refused: %v", err)
	}
	sock := filepath.Join(shortDir(t, "bfg"), "v.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			bufio.NewReader(c).ReadString('\n')
			io.WriteString(c, "NO way\n")
		}
	}()
	if _, err := DialVsock(ctx, sock, agent.VsockPort); err == nil || !strings.Contains(err.Error(), "unexpected answer") {
		t.Errorf("garbage answer: %v", err)
	}
	if _, err := DialVsock(ctx, filepath.Join(t.TempDir(), "none"), agent.VsockPort); err == nil {
		t.Error("dial of a missing socket succeeded")
	}
	// A muxer that never answers: the caller's context bounds the wait.
	silent := filepath.Join(shortDir(t, "bfs"), "v.sock")
	ln2, err := net.Listen("unix", silent)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	go func() {
		c, err := ln2.Accept()
		if err == nil {
			defer c.Close()
			time.Sleep(5 * time.Second)
		}
	}()
	sctx, scancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer scancel()
	t0 := time.Now()
	if _, err := DialVsock(sctx, silent, agent.VsockPort); err == nil || time.Since(t0) > 2*time.Second {
		t.Errorf("silent muxer: %v after %s; want a prompt context error", err, time.Since(t0))
	}
}
