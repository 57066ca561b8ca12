package kernel

import (
	"bytes"
	"context"
	"debug/elf"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/debian"
	"github.com/banger-dev/banger/internal/download"
	"github.com/banger-dev/banger/internal/progress"
)

// TestRealPullDebian61 pulls the real debian-6.1 kernel from the host's Debian mirror and runs
// the whole pipeline on it, logging timings and sizes. It is skipped with -short and when the
// mirror cannot be reached.
func TestRealPullDebian61(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping real kernel pull in -short mode")
	}
	if raceEnabled {
		// It took 6 of the 10 minutes go test allows a package under -race; the pull has no
		// concurrency of its own worth racing. Run it without -race.
		t.Skip("skipping real kernel pull under -race (too slow); run it without -race")
	}
	entry := Entry{Name: "debian-6.1", Suite: "bookworm", Package: "linux-image-cloud-amd64"}
	mirror := debian.DefaultMirror("/")
	client := &http.Client{Timeout: 10 * time.Minute}
	probeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(probeCtx, http.MethodHead, mirror+"/dists/"+entry.Suite+"/InRelease", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Skipf("mirror %s unreachable, skipping real kernel pull: %v", mirror, err)
	}
	resp.Body.Close()

	archive := &debian.Archive{Mirror: mirror, Suite: entry.Suite, Client: &download.Client{HTTP: client}, CacheDir: t.TempDir()}
	dst := filepath.Join(t.TempDir(), entry.Name)

	var mu sync.Mutex
	stageStart := map[string]time.Time{}
	var order []string
	report := func(u progress.Update) {
		mu.Lock()
		defer mu.Unlock()
		if _, seen := stageStart[u.Stage]; !seen {
			stageStart[u.Stage] = time.Now()
			order = append(order, u.Stage)
		}
	}
	start := time.Now()
	m, err := Pull(context.Background(), entry, archive, dst, report)
	if err != nil {
		t.Fatalf("Pull(%s): %v", entry.Name, err)
	}
	end := time.Now()
	for i, s := range order {
		next := end
		if i+1 < len(order) {
			next = stageStart[order[i+1]]
		}
		t.Logf("stage %-16s %v", s, next.Sub(stageStart[s]).Round(time.Millisecond))
	}
	t.Logf("pull total %v: %s %s (%d-byte .deb) → release %s", end.Sub(start).Round(time.Millisecond), m.Package, m.Version, m.DebSize, m.Release)

	bz, err := os.ReadFile(m.VmlinuzPath())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	vmlinux, err := ExtractVmlinux(bz)
	if err != nil {
		t.Fatalf("ExtractVmlinux on the real bzImage: %v", err)
	}
	t.Logf("ExtractVmlinux: %d-byte bzImage (%s payload) → %d-byte ELF in %v",
		len(bz), payloadCodec(t, bz), len(vmlinux), time.Since(t0).Round(time.Millisecond))
	onDisk, _ := os.ReadFile(m.VmlinuxPath())
	if !bytes.Equal(onDisk, vmlinux) {
		t.Fatal("vmlinux written by Pull differs from a fresh extraction")
	}
	f, err := elf.Open(m.VmlinuxPath())
	if err != nil {
		t.Fatalf("vmlinux is not an ELF: %v", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 || len(vmlinux) < 50<<20 {
		t.Fatalf("vmlinux is %v %v, %d bytes; want an x86-64 ELF of 50+ MB", f.Class, f.Machine, len(vmlinux))
	}

	t0 = time.Now()
	mods, err := ModuleClosure(m.ModulesPath(), GuestModules)
	if err != nil {
		t.Fatalf("ModuleClosure(GuestModules): %v", err)
	}
	var lines []string
	for _, mod := range mods {
		lines = append(lines, mod.Name+" ("+mod.Path+"; depends: "+strings.Join(mod.Depends, ",")+")")
	}
	t.Logf("closure of GuestModules (%d modules, %v):\n  %s", len(mods), time.Since(t0).Round(time.Millisecond), strings.Join(lines, "\n  "))

	agent, err := os.Executable() // any binary stands in for banger-agent
	if err != nil {
		t.Fatal(err)
	}
	for _, gz := range []bool{false, true} {
		var b bytes.Buffer
		t0 = time.Now()
		err := BuildInitramfs(&b, InitramfsOptions{Release: m.Release, AgentPath: agent, ModulesDir: m.ModulesPath(), Modules: mods, Gzip: gz})
		if err != nil {
			t.Fatalf("BuildInitramfs(gzip=%v): %v", gz, err)
		}
		fi, _ := os.Stat(agent)
		t.Logf("BuildInitramfs gzip=%-5v: %d bytes in %v (agent stand-in %d bytes)", gz, b.Len(), time.Since(t0).Round(time.Millisecond), fi.Size())
	}
	t0 = time.Now()
	path, err := EnsureInitramfs(m.Dir, m.Release, agent)
	if err != nil {
		t.Fatalf("EnsureInitramfs: %v", err)
	}
	t.Logf("EnsureInitramfs: %s in %v", filepath.Base(path), time.Since(t0).Round(time.Millisecond))

	// The real module tree goes through a kernel bundle and comes back whole.
	t0 = time.Now()
	out := filepath.Join(t.TempDir(), "k.bundle")
	res, err := ExportBundle(context.Background(), m, out, nil)
	if err != nil {
		t.Fatalf("ExportBundle: %v", err)
	}
	bf, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	back, err := ImportBundle(context.Background(), bf, "copy", filepath.Join(t.TempDir(), "copy"), nil)
	if err != nil {
		t.Fatalf("ImportBundle: %v", err)
	}
	want, _ := filepath.Glob(filepath.Join(m.ModulesPath(), "kernel", "*", "*"))
	got, _ := filepath.Glob(filepath.Join(back.Dir, filepath.FromSlash(back.ModulesDir), "kernel", "*", "*"))
	if len(got) != len(want) || len(got) == 0 {
		t.Errorf("module tree after a bundle round trip: %d entries under kernel/*/, want %d", len(got), len(want))
	}
	if _, err := os.Stat(back.ModulesDiskPath()); err != nil {
		t.Errorf("module disk after import: %v", err)
	}
	t.Logf("bundle round trip (%d bytes): %v", res.Size, time.Since(t0).Round(time.Millisecond))
}

func payloadCodec(t *testing.T, bz []byte) string {
	p, err := bzImagePayload(bz)
	if err != nil {
		t.Fatal(err)
	}
	return detectCodec(p).name
}
