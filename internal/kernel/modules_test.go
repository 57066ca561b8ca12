package kernel

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFile writes data at dir/rel, compressing it when rel ends in .xz, .zst or .gz.
func writeFile(t *testing.T, dir, rel string, data []byte) {
	t.Helper()
	switch {
	case strings.HasSuffix(rel, ".xz"):
		data = xzBytes(data)
	case strings.HasSuffix(rel, ".zst"):
		data = zstdBytes(data)
	case strings.HasSuffix(rel, ".gz"):
		data = gzipBytes(data)
	}
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeModuleTree builds a lib/modules/<release> directory shaped like Debian's 6.1 cloud
// kernel: virtio_console and virtio_rng built in, the rest modules with their real
// dependencies, some compressed.
func fakeModuleTree(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "lib/modules/6.1.0-test")
	mods := map[string][]string{
		"kernel/drivers/virtio/virtio.ko":                           {"depends="},
		"kernel/drivers/virtio/virtio_ring.ko":                      {"depends="},
		"kernel/drivers/virtio/virtio_mmio.ko":                      {"depends=virtio_ring,virtio"},
		"kernel/drivers/block/virtio_blk.ko.xz":                     {"depends=virtio,virtio_ring"},
		"kernel/drivers/net/virtio_net.ko.zst":                      {"depends=net_failover,virtio_ring,virtio"},
		"kernel/drivers/net/net_failover.ko.gz":                     {"depends=failover"},
		"kernel/net/core/failover.ko":                               {"depends="},
		"kernel/net/vmw_vsock/vsock.ko":                             {"depends="},
		"kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko": {"depends=vsock"},
		"kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko":        {"depends=vmw_vsock_virtio_transport_common,vsock"},
		"kernel/fs/overlayfs/overlay.ko":                            {"depends=", "softdep=pre: crc32c-generic nonexistent post: unrelated"},
		"kernel/crypto/crc32c_generic.ko":                           {"depends="},
		"kernel/drivers/unused/unused.ko":                           {"depends=missing_dependency"},
	}
	for rel, info := range mods {
		writeFile(t, dir, rel, fakeModule(append([]string{"license=GPL", "name=" + filepath.Base(rel)}, info...)...))
	}
	writeFile(t, dir, "modules.builtin", []byte("kernel/fs/ext4/ext4.ko\nkernel/drivers/char/virtio_console.ko\nkernel/drivers/char/hw_random/virtio-rng.ko\n"))
	writeFile(t, dir, "modules.order", []byte("ignored\n"))
	return dir
}

func moduleNames(mods []Module) string {
	var names []string
	for _, m := range mods {
		names = append(names, m.Name)
	}
	return strings.Join(names, " ")
}

func TestModuleClosureGuestModules(t *testing.T) {
	dir := fakeModuleTree(t)
	mods, err := ModuleClosure(dir, GuestModules)
	if err != nil {
		t.Fatalf("ModuleClosure: %v", err)
	}
	want := "virtio virtio_ring virtio_mmio virtio_blk failover net_failover virtio_net " +
		"vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport crc32c_generic overlay"
	if got := moduleNames(mods); got != want {
		t.Fatalf("closure order:\n got %s\nwant %s", got, want)
	}
	byName := map[string]Module{}
	for _, m := range mods {
		byName[m.Name] = m
	}
	if m := byName["virtio_blk"]; m.Path != "kernel/drivers/block/virtio_blk.ko.xz" || m.LoadPath() != "kernel/drivers/block/virtio_blk.ko" {
		t.Errorf("virtio_blk path = %q, load path %q; want the .ko.xz as shipped and the .ko to load", m.Path, m.LoadPath())
	}
	if d := strings.Join(byName["virtio_net"].Depends, ","); d != "net_failover,virtio,virtio_ring" {
		t.Errorf("virtio_net depends = %s; want net_failover,virtio,virtio_ring", d)
	}
	if d := strings.Join(byName["overlay"].Depends, ","); d != "crc32c_generic" {
		t.Errorf("overlay depends = %s; want the softdep pre: crc32c_generic only", d)
	}

	// Same input, same output.
	again, err := ModuleClosure(dir, GuestModules)
	if err != nil || moduleNames(again) != moduleNames(mods) {
		t.Fatalf("second ModuleClosure = %s, %v; want the same order", moduleNames(again), err)
	}
}

func TestModuleClosureCases(t *testing.T) {
	tests := []struct {
		name    string
		want    []string
		extra   map[string][]string // more modules: path → modinfo
		order   string
		wantErr string
	}{
		{name: "dash and underscore are the same module", want: []string{"vmw-vsock-virtio-transport"},
			order: "vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport"},
		{name: "built-in wanted module is skipped", want: []string{"ext4", "virtio_rng"}, order: ""},
		{name: "order follows the wanted list", want: []string{"overlay", "virtio_mmio"},
			order: "crc32c_generic overlay virtio virtio_ring virtio_mmio"},
		{name: "missing wanted module", want: []string{"virtio_gpu"}, wantErr: "module virtio_gpu is neither in"},
		{name: "missing dependency", want: []string{"unused"}, wantErr: "missing_dependency (needed by unused)"},
		{name: "dependency cycle", want: []string{"cyc_a"}, wantErr: "cycle",
			extra: map[string][]string{"extra/cyc_a.ko": {"depends=cyc_b"}, "extra/cyc_b.ko": {"depends=cyc_a"}}},
		{name: "softdep cycle is ignored", want: []string{"soft_a"}, order: "soft_b soft_a",
			extra: map[string][]string{"extra/soft_a.ko": {"depends=soft_b"}, "extra/soft_b.ko": {"softdep=pre: soft_a"}}},
		{name: "updates/ overrides kernel/", want: []string{"failover"}, order: "failover",
			extra: map[string][]string{"updates/failover.ko": {"depends="}}},
		{name: "empty name", want: []string{""}, wantErr: "empty module name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := fakeModuleTree(t)
			for rel, info := range tt.extra {
				writeFile(t, dir, rel, fakeModule(info...))
			}
			mods, err := ModuleClosure(dir, tt.want)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ModuleClosure error = %v; want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ModuleClosure: %v", err)
			}
			if got := moduleNames(mods); got != tt.order {
				t.Fatalf("closure = %q; want %q", got, tt.order)
			}
			if tt.name == "updates/ overrides kernel/" && mods[0].Path != "updates/failover.ko" {
				t.Fatalf("failover path = %s; want updates/failover.ko", mods[0].Path)
			}
		})
	}
}

func TestModuleClosureBadTrees(t *testing.T) {
	empty := t.TempDir()
	if _, err := ModuleClosure(empty, GuestModules); err == nil || !strings.Contains(err.Error(), "no kernel modules") {
		t.Fatalf("empty dir: error = %v; want no kernel modules", err)
	}
	if _, err := ModuleClosure(filepath.Join(empty, "missing"), GuestModules); err == nil {
		t.Fatal("missing dir: no error")
	}
	dir := fakeModuleTree(t)
	writeFile(t, dir, "kernel/bad/notelf.ko", []byte("this is not an ELF file"))
	if _, err := ModuleClosure(dir, []string{"notelf"}); err == nil || !strings.Contains(err.Error(), "not an ELF") {
		t.Fatalf("non-ELF module: error = %v; want not an ELF", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kernel/bad/broken.ko.xz"), []byte("not xz"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ModuleClosure(dir, []string{"broken"}); err == nil || !strings.Contains(err.Error(), "decompress module") {
		t.Fatalf("corrupt .ko.xz: error = %v; want decompress module", err)
	}
}
