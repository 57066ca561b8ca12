package kernel

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"
	"github.com/klauspost/compress/gzip"
)

// cpioMember is one parsed newc member, read by rawNewc independently of newcWriter.
type cpioMember struct {
	name                 string
	mode                 uint32
	nlink                int
	mtime                int64
	rdevMajor, rdevMinor int
	data                 []byte
}

// rawNewc parses a newc archive field by field (cavaliergopher/cpio ignores device numbers).
func rawNewc(t *testing.T, b []byte) []cpioMember {
	t.Helper()
	var out []cpioMember
	pos := 0
	field := func(i int) int64 {
		v, err := strconv.ParseUint(string(b[pos+6+8*i:pos+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("bad hex field %d at offset %d", i, pos)
		}
		return int64(v)
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if pos+110 > len(b) || string(b[pos:pos+6]) != "070701" {
			t.Fatalf("bad newc header at offset %d", pos)
		}
		m := cpioMember{mode: uint32(field(1)), nlink: int(field(4)), mtime: field(5),
			rdevMajor: int(field(9)), rdevMinor: int(field(10))}
		size, nameSize := int(field(6)), int(field(11))
		m.name = string(b[pos+110 : pos+110+nameSize-1])
		pos = align(pos + 110 + nameSize)
		m.data = b[pos : pos+size]
		pos = align(pos + size)
		if m.name == "TRAILER!!!" {
			if strings.Trim(string(b[pos:]), "\x00") != "" {
				t.Fatalf("data after the trailer")
			}
			return out
		}
		out = append(out, m)
	}
}

func testAgent() []byte { return []byte("\x7fELF fake agent binary\n") }

// bootInitramfs builds k's boot initramfs with the test agent and returns its bytes.
func bootInitramfs(t *testing.T, k Manifest) []byte {
	t.Helper()
	agent := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(agent, testAgent(), 0o755); err != nil {
		t.Fatal(err)
	}
	initrd, err := k.BootInitramfs(agent)
	if err != nil {
		t.Fatalf("BootInitramfs: %v", err)
	}
	data, err := os.ReadFile(initrd)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func buildTestInitramfs(t *testing.T, dir string, gz bool) []byte {
	t.Helper()
	mods, err := ModuleClosure(dir, GuestModules)
	if err != nil {
		t.Fatalf("ModuleClosure: %v", err)
	}
	agentPath := filepath.Join(t.TempDir(), "banger-agent")
	if err := os.WriteFile(agentPath, testAgent(), 0o755); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	err = BuildInitramfs(&b, InitramfsOptions{Release: "6.1.0-test", AgentPath: agentPath, ModulesDir: dir, Modules: mods, Gzip: gz})
	if err != nil {
		t.Fatalf("BuildInitramfs: %v", err)
	}
	return b.Bytes()
}

func TestBuildInitramfsContents(t *testing.T) {
	dir := fakeModuleTree(t)
	archive := buildTestInitramfs(t, dir, false)
	members := rawNewc(t, archive)

	const m = "lib/modules/6.1.0-test/"
	wantNames := []string{
		"dev", "dev/console", "dev/null", "init", "lib", "lib/modules", "lib/modules/6.1.0-test",
		m + "banger.modules", m + "kernel", m + "kernel/crypto", m + "kernel/crypto/crc32c_generic.ko",
		m + "kernel/drivers", m + "kernel/drivers/block", m + "kernel/drivers/block/virtio_blk.ko",
		m + "kernel/drivers/net", m + "kernel/drivers/net/net_failover.ko", m + "kernel/drivers/net/virtio_net.ko",
		m + "kernel/drivers/virtio", m + "kernel/drivers/virtio/virtio.ko", m + "kernel/drivers/virtio/virtio_mmio.ko",
		m + "kernel/drivers/virtio/virtio_ring.ko", m + "kernel/fs", m + "kernel/fs/overlayfs", m + "kernel/fs/overlayfs/overlay.ko",
		m + "kernel/net", m + "kernel/net/core", m + "kernel/net/core/failover.ko", m + "kernel/net/vmw_vsock",
		m + "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko", m + "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
		m + "kernel/net/vmw_vsock/vsock.ko", "mnt", "newroot", "proc", "run", "sys",
	}
	var gotNames []string
	byName := map[string]cpioMember{}
	for _, mem := range members {
		gotNames = append(gotNames, mem.name)
		byName[mem.name] = mem
		if mem.mtime != 0 {
			t.Errorf("%s mtime = %d; want 0 for reproducible archives", mem.name, mem.mtime)
		}
	}
	if strings.Join(gotNames, "\n") != strings.Join(wantNames, "\n") {
		t.Fatalf("archive members:\n got %q\nwant %q", gotNames, wantNames)
	}

	checks := []struct {
		name         string
		mode         uint32
		major, minor int
	}{
		{"dev/console", 0o020600, 5, 1},
		{"dev/null", 0o020666, 1, 3},
		{"init", 0o100755, 0, 0},
		{"proc", 0o040755, 0, 0},
		{m + "kernel/fs/overlayfs/overlay.ko", 0o100644, 0, 0},
	}
	for _, c := range checks {
		got := byName[c.name]
		if got.mode != c.mode || got.rdevMajor != c.major || got.rdevMinor != c.minor {
			t.Errorf("%s: mode %o rdev %d:%d; want mode %o rdev %d:%d", c.name, got.mode, got.rdevMajor, got.rdevMinor, c.mode, c.major, c.minor)
		}
	}
	if !bytes.Equal(byName["init"].data, testAgent()) {
		t.Errorf("/init holds %q; want the agent binary", byName["init"].data)
	}
	wantList := "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\nkernel/drivers/virtio/virtio_mmio.ko\n" +
		"kernel/drivers/block/virtio_blk.ko\nkernel/net/core/failover.ko\nkernel/drivers/net/net_failover.ko\n" +
		"kernel/drivers/net/virtio_net.ko\nkernel/net/vmw_vsock/vsock.ko\nkernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko\n" +
		"kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko\nkernel/crypto/crc32c_generic.ko\nkernel/fs/overlayfs/overlay.ko\n"
	if got := string(byName[m+"banger.modules"].data); got != wantList {
		t.Errorf("banger.modules:\n%s\nwant:\n%s", got, wantList)
	}
	// Compressed modules are stored decompressed: a valid ELF whose .modinfo names the file.
	for _, name := range []string{"virtio_blk.ko", "virtio_net.ko", "net_failover.ko"} {
		var data []byte
		for n, mem := range byName {
			if strings.HasSuffix(n, "/"+name) {
				data = mem.data
			}
		}
		f, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s in the initramfs is not an ELF: %v", name, err)
		}
		info, _ := f.Section(".modinfo").Data()
		if !bytes.Contains(info, []byte("name="+name)) {
			t.Errorf("%s .modinfo = %q; want it to contain name=%s", name, info, name)
		}
	}

	// An independent reader agrees on names, sizes and contents.
	r := cpio.NewReader(bytes.NewReader(archive))
	n := 0
	for {
		hdr, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("cavaliergopher/cpio cannot read the archive: %v", err)
		}
		body, _ := io.ReadAll(r)
		if want := byName[hdr.Name]; !bytes.Equal(body, want.data) || uint32(hdr.Mode) != want.mode {
			t.Errorf("cpio reader: %s has %d bytes mode %o; want %d bytes mode %o", hdr.Name, len(body), hdr.Mode, len(want.data), want.mode)
		}
		n++
	}
	if n != len(members) {
		t.Errorf("cpio reader saw %d members; want %d", n, len(members))
	}
}

func TestBuildInitramfsDeterministicAndGzip(t *testing.T) {
	dir := fakeModuleTree(t)
	a := buildTestInitramfs(t, dir, false)
	b := buildTestInitramfs(t, dir, false)
	if !bytes.Equal(a, b) {
		t.Fatal("two builds from the same inputs differ")
	}
	gz1 := buildTestInitramfs(t, dir, true)
	gz2 := buildTestInitramfs(t, dir, true)
	if !bytes.Equal(gz1, gz2) {
		t.Fatal("two gzip builds from the same inputs differ")
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz1))
	if err != nil {
		t.Fatalf("gzip initramfs: %v", err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(plain, a) {
		t.Fatalf("gunzipped initramfs differs from the uncompressed build (err %v)", err)
	}
}

func TestBuildInitramfsRejects(t *testing.T) {
	dir := fakeModuleTree(t)
	mods, _ := ModuleClosure(dir, GuestModules)
	tests := []struct {
		name    string
		opts    InitramfsOptions
		wantErr string
	}{
		{"no release", InitramfsOptions{Agent: testAgent()}, "invalid kernel release"},
		{"release with slash", InitramfsOptions{Release: "../x", Agent: testAgent()}, "invalid kernel release"},
		{"no agent", InitramfsOptions{Release: "r"}, "no agent binary"},
		{"missing agent", InitramfsOptions{Release: "r", AgentPath: filepath.Join(dir, "nope")}, "read agent binary"},
		{"escaping module path", InitramfsOptions{Release: "r", Agent: testAgent(), ModulesDir: dir,
			Modules: []Module{{Name: "x", Path: "../../x.ko"}}}, "unusable path"},
		{"missing module file", InitramfsOptions{Release: "r", Agent: testAgent(), ModulesDir: t.TempDir(), Modules: mods}, "read module"},
		{"duplicate module", InitramfsOptions{Release: "r", Agent: testAgent(), ModulesDir: dir, Modules: []Module{mods[0], mods[0]}}, "listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := BuildInitramfs(io.Discard, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("BuildInitramfs error = %v; want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestInitramfsName(t *testing.T) {
	sum := sha256.Sum256([]byte("agent"))
	h := hex.EncodeToString(sum[:])
	if got, want := InitramfsName(h), "initrd-"+h[:12]+".cpio"; got != want {
		t.Fatalf("InitramfsName = %q; want %q", got, want)
	}
	if got := InitramfsName("abc"); got != "initrd-abc.cpio" {
		t.Fatalf("InitramfsName(short) = %q; want initrd-abc.cpio", got)
	}
}

// AgentInitramfsName names the file BootInitramfs makes, so boot snapshots that record one
// can be matched against the current agent build.
func TestAgentInitramfsName(t *testing.T) {
	dir := t.TempDir()
	agentPath := filepath.Join(dir, "banger-agent")
	os.WriteFile(agentPath, testAgent(), 0o755)
	got, err := AgentInitramfsName(agentPath)
	sum := sha256.Sum256(testAgent())
	if want := InitramfsName(hex.EncodeToString(sum[:])); err != nil || got != want {
		t.Fatalf("AgentInitramfsName = %q, %v; want %q", got, err, want)
	}
	if _, err := AgentInitramfsName(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("AgentInitramfsName of a missing agent: no error")
	}
}

func TestEnsureInitramfs(t *testing.T) {
	modules := fakeModuleTree(t) // <tmp>/lib/modules/6.1.0-test
	kernelDir := filepath.Dir(filepath.Dir(filepath.Dir(modules)))
	agentPath := filepath.Join(t.TempDir(), "banger-agent")
	os.WriteFile(agentPath, testAgent(), 0o755)

	path, err := EnsureInitramfs(kernelDir, "6.1.0-test", agentPath)
	if err != nil {
		t.Fatalf("EnsureInitramfs: %v", err)
	}
	sum := sha256.Sum256(testAgent())
	if want := filepath.Join(kernelDir, InitramfsName(hex.EncodeToString(sum[:]))); path != want {
		t.Fatalf("path = %s; want %s", path, want)
	}
	built, _ := os.ReadFile(path)
	if want := buildTestInitramfs(t, modules, false); !bytes.Equal(built, want) {
		t.Fatal("EnsureInitramfs wrote something other than BuildInitramfs with GuestModules")
	}

	// Present: reused as is (a marker proves it was not rebuilt).
	os.WriteFile(path, []byte("cached"), 0o644)
	again, err := EnsureInitramfs(kernelDir, "6.1.0-test", agentPath)
	if got, _ := os.ReadFile(again); err != nil || again != path || string(got) != "cached" {
		t.Fatalf("second EnsureInitramfs = %s, %v; want the existing file reused", again, err)
	}

	// Another agent build gets its own initramfs.
	os.WriteFile(agentPath, []byte("new agent build"), 0o755)
	other, err := EnsureInitramfs(kernelDir, "6.1.0-test", agentPath)
	if err != nil || other == path {
		t.Fatalf("EnsureInitramfs for a new agent = %s, %v; want a different file", other, err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the initramfs of the older agent build is still there: %v", err)
	}

	// No staging files are left behind.
	entries, _ := os.ReadDir(kernelDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("leftover staging file %s", e.Name())
		}
	}

	if _, err := EnsureInitramfs(kernelDir, "9.9.9-other", agentPath); err == nil || !strings.Contains(err.Error(), "no lib/modules/9.9.9-other") {
		t.Fatalf("EnsureInitramfs for an unknown release: error = %v; want a missing modules directory error", err)
	}
}
