package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/zstd"
)

// Images, kernels and bundles end to end: a real OCI registry (Debian's docker-registry) on
// loopback serving images this test builds from busybox-static, pulled, booted and run; the
// golden image running Docker; bundles exported, deleted, imported and booted, and tampered
// ones refused; a catalog entry pinned by sha256; a kernel imported from files.

// entry is one file of a test image layer.
type entry struct {
	name, link, data string
	typ              byte
	mode             int64
}

func layerOf(t *testing.T, entries ...entry) v1.Layer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, ModTime: time.Unix(1700000000, 0)}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.data))
	}
	tw.Close()
	data := b.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// busyboxLayer is a root with a static busybox and its applets: no systemd, no sshd, no
// package manager.
func busyboxLayer(t *testing.T) v1.Layer {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("busybox-static is not installed (apt-get install busybox-static): %v", err)
	}
	es := []entry{{name: "bin/", typ: tar.TypeDir, mode: 0o755}, {name: "bin/busybox", typ: tar.TypeReg, mode: 0o755, data: string(bb)},
		{name: "etc/", typ: tar.TypeDir, mode: 0o755}, {name: "etc/passwd", typ: tar.TypeReg, mode: 0o644, data: "root:x:0:0:root:/root:/bin/sh\n"},
		{name: "root/", typ: tar.TypeDir, mode: 0o700}}
	for _, applet := range []string{"sh", "ls", "cat", "echo", "stat", "ps", "sleep", "grep", "id", "uname", "hostname", "wc", "head", "find", "test"} {
		es = append(es, entry{name: "bin/" + applet, link: "busybox", typ: tar.TypeSymlink, mode: 0o777})
	}
	return layerOf(t, es...)
}

func imageOf(t *testing.T, cmd []string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigFile()
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.Cmd = cmd
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	return img
}

// withEnv sets the environment of an image's config, as a Dockerfile's ENV does.
func withEnv(t *testing.T, img v1.Image, env ...string) v1.Image {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.Config.Env = env
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	return img
}

// registry runs Debian's docker-registry on a free loopback port for the test.
func registry(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatalf("docker-registry is not installed (apt-get install docker-registry; make deps does): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), addr)
	os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o644)
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("docker-registry log:\n%s", log.String())
		}
	})
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	}, "docker-registry to answer on "+addr)
	return addr
}

func push(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

type imageInfo struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Kernel   string `json:"kernel"`
	Source   string `json:"source"`
	Versions []struct {
		Version string   `json:"version"`
		Current bool     `json:"current"`
		UsedBy  []string `json:"used_by"`
	} `json:"versions"`
	Manifest struct {
		Packages []struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"packages"`
		SkippedPackages []struct {
			Name   string `json:"name"`
			Reason string `json:"reason"`
		} `json:"skipped_packages"`
		RootfsSize int64    `json:"rootfs_size"`
		Notes      []string `json:"notes"`
	} `json:"manifest"`
}

func imageShow(t *testing.T, name string) imageInfo {
	t.Helper()
	r := mustBanger(t, "image", "show", name, "--json")
	var img imageInfo
	if err := json.Unmarshal([]byte(r.stdout), &img); err != nil {
		t.Fatalf("image show --json: %v: %q", err, r.stdout)
	}
	return img
}

func vmImage(t *testing.T, vm string) string {
	t.Helper()
	r := mustBanger(t, "vm", "show", vm, "--json")
	var v struct {
		Image string `json:"image"`
	}
	json.Unmarshal([]byte(r.stdout), &v)
	return v.Image
}

func deleteVMs(t *testing.T, names ...string) {
	t.Cleanup(func() {
		for _, n := range names {
			banger(nil, "vm", "delete", "-f", n)
		}
	})
}

// TestPullFromRegistryBootAndRun pushes a two-layer busybox image to a registry on loopback,
// pulls it, checks what flattening kept and removed, and boots it: no systemd and no sshd, so
// the agent is init, reaps orphans, powers off cleanly, and explains why there is no ssh.
func TestPullFromRegistryBootAndRun(t *testing.T) {
	ensureWarm(t)
	reg := registry(t)
	base := busyboxLayer(t)
	data := layerOf(t,
		entry{name: "srv/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "srv/doomed", typ: tar.TypeReg, mode: 0o644, data: "whited out by the next layer"},
		entry{name: "srv/cache/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "srv/cache/old", typ: tar.TypeReg, mode: 0o644, data: "hidden by an opaque dir"})
	top := layerOf(t,
		entry{name: "srv/.wh.doomed", typ: tar.TypeReg, mode: 0o644},
		entry{name: "srv/cache/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "srv/cache/.wh..wh..opq", typ: tar.TypeReg, mode: 0o644},
		entry{name: "srv/cache/new", typ: tar.TypeReg, mode: 0o644, data: "fresh"},
		entry{name: "usr/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "usr/bin/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "usr/bin/suid", typ: tar.TypeReg, mode: 0o4755, data: "#!/bin/sh\n"},
		entry{name: "usr/bin/suid-link", link: "usr/bin/suid", typ: tar.TypeLink, mode: 0o4755},
		entry{name: "opt/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "opt/tools/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "opt/tools/bin/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "opt/tools/bin/hi", typ: tar.TypeReg, mode: 0o755, data: "#!/bin/sh\necho hi from the image PATH\n"})
	ref := reg + "/e2e/busybox:1"
	// The config's ENV reaches commands, as it would in a container: its PATH finds
	// /opt/tools/bin/hi, and a value with a quote in it arrives exactly.
	push(t, ref, withEnv(t, imageOf(t, []string{"/bin/sh"}, base, data, top),
		"PATH=/opt/tools/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=it's configured"))

	r := mustBanger(t, "image", "pull", ref, "--name", "e2e-bb")
	t.Logf("pull took %s: %s", r.took, strings.TrimSpace(r.stdout))
	img := imageShow(t, "e2e-bb")
	if !strings.HasPrefix(img.Source, "oci:"+ref+"@sha256:") || len(img.Versions) != 1 {
		t.Errorf("pulled image = %+v", img)
	}

	deleteVMs(t, "e2e-pid1")
	mustBanger(t, "vm", "create", "--name", "e2e-pid1", "--image", "e2e-bb")
	for _, c := range []struct{ cmd, want string }{
		{"cat /proc/1/comm", "banger-agent"},
		{"test -e /srv/doomed && echo present || echo whited-out", "whited-out"},
		{"ls /srv/cache", "new"},
		{"stat -c '%A %h' /usr/bin/suid", "-rwsr-xr-x 2"},
		{"hostname", "e2e-pid1"},
		{"ls /lib/modules", ""}, // the kernel's release: checked below
		{"cat /run/banger/ssh.json", `"state":"unavailable"`},
		{`echo "$GREETING"`, "it's configured"},
		{"hi", "hi from the image PATH"},
	} {
		got := guest(t, "e2e-pid1", "sh", "-c", c.cmd)
		if c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("%s: %q, want %q", c.cmd, got, c.want)
		}
		if c.cmd == "ls /lib/modules" && !strings.Contains(got, "cloud-amd64") {
			t.Errorf("/lib/modules = %q; want the kernel's module tree", got)
		}
	}
	// vm ssh says at once why there is no ssh, instead of waiting for a port that never opens.
	r, _ = banger(nil, "vm", "ssh", "e2e-pid1", "--", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "has no ssh server") || r.took > 15*time.Second {
		t.Errorf("vm ssh into an image without sshd: exit %d after %s, stderr %s; want the agent's reason, fast", r.code, r.took.Round(time.Millisecond), r.stderr)
	}
	// Orphans are reaped by the agent as init: no zombie is left.
	guest(t, "e2e-pid1", "sh", "-c", "(sleep 1 &) ; true")
	time.Sleep(2 * time.Second)
	if z := guest(t, "e2e-pid1", "sh", "-c", "grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l"); z != "0" {
		t.Errorf("%s zombie processes remain", z)
	}
	// The image is pinned: it cannot be deleted while the VM exists.
	r, _ = banger(nil, "image", "delete", "e2e-bb")
	if r.code != 1 || !strings.Contains(r.stderr, "used by VM e2e-pid1") {
		t.Errorf("image delete while a VM uses it: exit %d, stderr %s", r.code, r.stderr)
	}
	// A graceful stop goes through the agent's init.
	mustBanger(t, "vm", "stop", "e2e-pid1")
	console, _ := os.ReadFile(filepath.Join(show(t, "e2e-pid1").Dir, "console.log"))
	if !strings.Contains(string(console), "banger-agent: init: poweroff") {
		t.Errorf("console does not show the agent's init powering off:\n%s", tail(console, 1500))
	}

	// Pulling again makes a new version; the stopped VM keeps booting its own.
	pinned := vmImage(t, "e2e-pid1")
	mustBanger(t, "image", "pull", ref, "--name", "e2e-bb")
	img = imageShow(t, "e2e-bb")
	if len(img.Versions) != 2 || "e2e-bb@"+img.Version == pinned {
		t.Fatalf("after a second pull: versions %+v, current %s, VM pinned to %s; want a new current version and the VM's kept", img.Versions, img.Version, pinned)
	}
	mustBanger(t, "vm", "start", "e2e-pid1")
	if got := vmImage(t, "e2e-pid1"); got != pinned {
		t.Errorf("restarted VM boots %s; want %s", got, pinned)
	}
	if got := guest(t, "e2e-pid1", "cat", "/srv/cache/new"); got != "fresh" {
		t.Errorf("restarted VM: %q", got)
	}
	mustBanger(t, "vm", "delete", "-f", "e2e-pid1")
	mustBanger(t, "image", "cache", "prune")
	if img = imageShow(t, "e2e-bb"); len(img.Versions) != 1 {
		t.Errorf("after the VM is gone and a prune: %d versions; want only the current one", len(img.Versions))
	}

	// vm run works too, and concurrent pulls of one image share the work.
	r = mustBanger(t, "vm", "run", "--rm", "--image", "e2e-bb", "--", "sh", "-c", "echo hello from $(cat /proc/1/comm)")
	if strings.TrimSpace(r.stdout) != "hello from banger-agent" {
		t.Errorf("vm run on the pulled image: %q", r.stdout)
	}
	push(t, reg+"/e2e/busybox:2", imageOf(t, []string{"/bin/sh"}, base, top))
	var wg sync.WaitGroup
	outs := make([]result, 3)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], _ = banger(nil, "image", "pull", reg+"/e2e/busybox:2", "--name", "e2e-bb2")
		}()
	}
	wg.Wait()
	for i, o := range outs {
		if o.code != 0 {
			t.Errorf("concurrent pull %d: exit %d: %s", i, o.code, o.stderr)
		}
	}
	if img := imageShow(t, "e2e-bb2"); len(img.Versions) != 1 {
		t.Errorf("3 concurrent pulls made %d versions; want them coalesced into 1", len(img.Versions))
	}
	mustBanger(t, "image", "delete", "e2e-bb2")
	assertNothingLeft(t)
}

// TestGoldenImageRunsDocker loads an image built here into the golden image's Docker and runs
// it without any registry: Docker's storage sits on the VM disk's ext4, and its kernel
// modules come from the module disk.
func TestGoldenImageRunsDocker(t *testing.T) {
	ensureWarm(t)
	img := imageShow(t, "debian-bookworm")
	have := map[string]bool{}
	for _, p := range img.Manifest.Packages {
		have[p.Name] = true
	}
	for _, want := range []string{"docker.io", "containerd", "git", "jq", "curl", "wget", "make", "build-essential", "ca-certificates", "sudo", "less", "vim-tiny", "iproute2", "procps", "openssh-server"} {
		if !have[want] {
			t.Errorf("golden image manifest lacks %s", want)
		}
	}
	if len(img.Manifest.SkippedPackages) != 1 || img.Manifest.SkippedPackages[0].Name != "mise" || !strings.Contains(img.Manifest.SkippedPackages[0].Reason, "not in Debian bookworm") {
		t.Errorf("skipped packages = %+v; want mise, with the reason", img.Manifest.SkippedPackages)
	}
	t.Logf("golden image: %d MiB, %d packages", img.Manifest.RootfsSize>>20, len(img.Manifest.Packages))

	var archive bytes.Buffer
	ref, _ := name.ParseReference("banger-e2e/hello:1")
	hello := imageOf(t, []string{"/bin/echo", "hello from a container"}, busyboxLayer(t))
	if err := tarball.Write(ref, hello, &archive); err != nil {
		t.Fatal(err)
	}
	deleteVMs(t, "e2e-docker")
	mustBanger(t, "vm", "create", "--name", "e2e-docker")
	r, err := bangerStdin(bytes.NewReader(archive.Bytes()), nil, "vm", "exec", "e2e-docker", "--", "sh", "-c", "cat > /root/hello.tar")
	if err != nil || r.code != 0 {
		t.Fatalf("copy the image in: %v %+v", err, r)
	}
	if got := guest(t, "e2e-docker", "findmnt", "-no", "FSTYPE", "/var/lib/docker"); got != "ext4" {
		t.Errorf("/var/lib/docker is on %q; want the VM disk's ext4", got)
	}
	// Commands run as soon as the agent answers, before systemd has finished booting (the agent
	// is ordered before sysinit.target): what they write to /tmp stays, and Docker's socket
	// listens already, so docker waits for dockerd instead of failing.
	mustBanger(t, "vm", "exec", "e2e-docker", "--", "sh", "-c", "echo early > /tmp/early")
	start := time.Now()
	r = mustBanger(t, "vm", "exec", "e2e-docker", "--", "sh", "-c", "docker load -i /root/hello.tar && docker run --rm --network none banger-e2e/hello:1")
	t.Logf("docker load + run right after boot (dockerd started on first use) took %s", time.Since(start).Round(time.Millisecond))
	if !strings.HasSuffix(strings.TrimSpace(r.stdout), "hello from a container") {
		t.Errorf("docker run printed %q", r.stdout)
	}
	if st := guest(t, "e2e-docker", "sh", "-c", "systemctl is-system-running --wait || true"); st != "running" {
		t.Errorf("system state after boot: %q; want running (failed units: %s)", st, guest(t, "e2e-docker", "systemctl", "--failed", "--no-legend"))
	}
	if got := guest(t, "e2e-docker", "cat", "/tmp/early"); got != "early" {
		t.Errorf("/tmp/early after the boot finished: %q; want what the early command wrote", got)
	}
	if mods := guest(t, "e2e-docker", "sh", "-c", "lsmod | cut -d' ' -f1"); !strings.Contains(mods, "overlay") || !strings.Contains(mods, "br_netfilter") {
		t.Errorf("modules loaded in the guest: %s; want overlay and br_netfilter (from the module disk)", mods)
	}
	mustBanger(t, "vm", "delete", "-f", "e2e-docker")
	assertNothingLeft(t)
}

// TestBundleRoundTrip exports a pulled image, deletes it, imports the bundle and boots it; a
// bundle with one byte of its rootfs changed is refused and installs nothing.
func TestBundleRoundTrip(t *testing.T) {
	ensureWarm(t)
	reg := registry(t)
	ref := reg + "/e2e/bundled:1"
	push(t, ref, imageOf(t, []string{"/bin/sh"}, busyboxLayer(t), layerOf(t, entry{name: "etc/motd", typ: tar.TypeReg, mode: 0o644, data: "from a bundle\n"})))
	mustBanger(t, "image", "pull", ref, "--name", "e2e-bundled", "--kernel", "debian-6.1")
	before := imageShow(t, "e2e-bundled")

	file := filepath.Join(userDir(t), "e2e-bundled.bundle")
	r := mustBanger(t, "image", "export", "e2e-bundled", "-o", file)
	t.Logf("export took %s: %s", r.took, strings.TrimSpace(r.stdout))
	mustBanger(t, "image", "delete", "e2e-bundled")
	r = mustBanger(t, "image", "import", file)
	t.Logf("import took %s: %s", r.took, strings.TrimSpace(r.stdout))
	after := imageShow(t, "e2e-bundled")
	if after.Version != before.Version || after.Kernel != "debian-6.1" || !strings.HasPrefix(after.Source, "bundle:") {
		t.Errorf("imported %+v; want version %s with kernel debian-6.1", after, before.Version)
	}
	r = mustBanger(t, "vm", "run", "--rm", "--image", "e2e-bundled", "--", "cat", "/etc/motd")
	if r.stdout != "from a bundle\n" {
		t.Errorf("booted imported image: %q", r.stdout)
	}

	bad := filepath.Join(userDir(t), "tampered.bundle")
	os.WriteFile(bad, tamperBundle(t, file), 0o644)
	giveToUser(t, bad)
	r, _ = banger(nil, "image", "import", bad, "--name", "e2e-tampered")
	if r.code != 1 || !strings.Contains(r.stderr, "rootfs.ext4 has sha256") || !strings.Contains(r.stderr, "refusing it") {
		t.Errorf("tampered bundle: exit %d, stderr %s; want it refused naming the altered member", r.code, r.stderr)
	}
	if r, _ := banger(nil, "image", "show", "e2e-tampered"); r.code == 0 {
		t.Error("a refused bundle was installed anyway")
	}
	if left, _ := filepath.Glob(filepath.Join(stateDir(), "images", ".*")); len(left) != 0 {
		t.Errorf("a refused import left %v", left)
	}

	// A catalog entry pinned by sha256 fetches the bundle (over HTTP on loopback here); a pin
	// that does not match is refused.
	raw, _ := os.ReadFile(file)
	sum := sha256.Sum256(raw)
	srv := httptest.NewServer(http.FileServer(http.Dir(filepath.Dir(file))))
	defer srv.Close()
	catalogDir := filepath.Join(h.home, ".config/banger/catalogs")
	os.MkdirAll(catalogDir, 0o700)
	defer os.RemoveAll(catalogDir)
	entryJSON := func(name, pin string) string {
		return fmt.Sprintf(`{"name": %q, "bundle": {"url": %q, "sha256": %q}, "kernel": "debian-6.1"}`, name, srv.URL+"/"+filepath.Base(file), pin)
	}
	os.WriteFile(filepath.Join(catalogDir, "e2e.json"), []byte(`{"images": [`+entryJSON("e2e-catalogued", hex.EncodeToString(sum[:]))+`, `+
		entryJSON("e2e-badpin", strings.Repeat("0", 64))+`], "kernels": []}`), 0o644)
	giveToUser(t, filepath.Join(h.home, ".config")) // the user's configuration is the user's
	if r := mustBanger(t, "image", "list", "--available"); !strings.Contains(r.stdout, "e2e-catalogued") {
		t.Errorf("list --available lacks the user's catalog entry:\n%s", r.stdout)
	}
	r = mustBanger(t, "vm", "run", "--rm", "--image", "e2e-catalogued", "--", "cat", "/etc/motd")
	if r.stdout != "from a bundle\n" {
		t.Errorf("image from a catalog bundle: %q", r.stdout)
	}
	r, _ = banger(nil, "image", "pull", "e2e-badpin")
	if r.code != 1 || !strings.Contains(r.stderr, "but the catalog pins") {
		t.Errorf("bundle with a wrong pin: exit %d: %s", r.code, r.stderr)
	}
	mustBanger(t, "image", "delete", "e2e-bundled", "e2e-catalogued")
	assertNothingLeft(t)
}

// tamperBundle re-packs a bundle with one byte of rootfs.ext4 changed and its manifest kept.
func tamperBundle(t *testing.T, path string) []byte {
	t.Helper()
	raw, _ := os.ReadFile(path)
	zr, _ := zstd.NewReader(nil)
	defer zr.Close()
	plain, err := zr.DecodeAll(raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(plain))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		if hdr.Name == "rootfs.ext4" {
			data[len(data)/2] ^= 0xff
		}
		tw.WriteHeader(hdr)
		tw.Write(data)
	}
	tw.Close()
	zw, _ := zstd.NewWriter(nil)
	return zw.EncodeAll(out.Bytes(), nil)
}

// TestKernelImportAndRemove imports the pulled Debian kernel's files as a locally built
// kernel, boots it, and checks that a kernel a VM boots cannot be removed.
func TestKernelImportAndRemove(t *testing.T) {
	ensureWarm(t)
	dir := filepath.Join(kernelsDir(), "debian-6.1")
	mods, _ := filepath.Glob(filepath.Join(dir, "lib/modules/*"))
	if len(mods) != 1 {
		t.Fatalf("modules of the pulled kernel: %v", mods)
	}
	// Both the bzImage and the ELF are accepted; the bzImage here, the release read from it.
	bz, _ := filepath.Glob(filepath.Join(dir, "boot/vmlinuz-*"))
	mustBanger(t, "kernel", "import", "e2e-local", "--vmlinux", bz[0], "--modules", mods[0])
	deleteVMs(t, "e2e-kernel")
	mustBanger(t, "vm", "create", "--name", "e2e-kernel", "--kernel", "e2e-local")
	if got := guest(t, "e2e-kernel", "uname", "-r"); got != filepath.Base(mods[0]) {
		t.Errorf("uname -r = %q; want %s", got, filepath.Base(mods[0]))
	}
	r, _ := banger(nil, "kernel", "rm", "e2e-local")
	if r.code != 1 || !strings.Contains(r.stderr, "used by VM e2e-kernel") {
		t.Errorf("kernel rm while a VM boots it: exit %d: %s", r.code, r.stderr)
	}
	mustBanger(t, "vm", "delete", "-f", "e2e-kernel")
	mustBanger(t, "kernel", "rm", "e2e-local")
	if r := mustBanger(t, "kernel", "list"); strings.Contains(r.stdout, "e2e-local") {
		t.Errorf("removed kernel still listed:\n%s", r.stdout)
	}
	assertNothingLeft(t)
}

// TestPullFromDisk pulls images that are on disk, made by the real tools: an OCI image layout
// that umoci builds from busybox-static, and the docker-archive skopeo converts it to. The
// layout is named by a relative path (the client makes it absolute: the daemon's directory
// differs); both flatten to the same files, and the archive's image boots.
func TestPullFromDisk(t *testing.T) {
	for _, tool := range []string{"umoci", "skopeo"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (apt-get install umoci skopeo; make test-deps does): %v", tool, err)
		}
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox-static is not installed (make test-deps installs it): %v", err)
	}
	work := t.TempDir()
	root := filepath.Join(work, "rootfs")
	for _, d := range []string{"bin", "etc", "root"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "bin/busybox"), bb, 0o755)
	for _, applet := range []string{"sh", "cat", "ls", "echo"} {
		os.Symlink("busybox", filepath.Join(root, "bin", applet))
	}
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/from-disk"), []byte("made by umoci\n"), 0o644)
	layout := filepath.Join(work, "e2e-disk")
	archive := filepath.Join(work, "e2e-archive.tar")
	for _, argv := range [][]string{
		{"umoci", "init", "--layout", layout},
		{"umoci", "new", "--image", layout + ":1"},
		{"umoci", "insert", "--image", layout + ":1", root, "/"},
		{"umoci", "config", "--image", layout + ":1", "--config.cmd", "/bin/sh", "--os", "linux", "--architecture", "amd64"},
		{"skopeo", "copy", "oci:" + layout + ":1", "docker-archive:" + archive + ":e2e/disk:1"},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
	giveToUser(t, work)
	cwd, _ := os.Getwd()
	rel, err := filepath.Rel(cwd, layout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		banger(nil, "image", "delete", "e2e-disk-1")
		banger(nil, "image", "delete", "e2e-archive")
	})

	// Names come from the directory and REF, and from the archive's file name.
	mustBanger(t, "image", "pull", "oci:"+rel+":1")
	fromLayout := imageShow(t, "e2e-disk-1")
	if !strings.HasPrefix(fromLayout.Source, "oci:oci:"+layout+":1@sha256:") {
		t.Errorf("image from the layout: source %q, want oci:oci:%s:1@sha256:…", fromLayout.Source, layout)
	}
	mustBanger(t, "image", "pull", "docker-archive:"+archive)
	fromArchive := imageShow(t, "e2e-archive")
	if !strings.HasPrefix(fromArchive.Source, "oci:docker-archive:"+archive+"@sha256:") {
		t.Errorf("image from the archive: source %q", fromArchive.Source)
	}
	// skopeo stored the layer uncompressed, so the digests differ; the files must not.
	if len(fromLayout.Manifest.Notes) == 0 || len(fromArchive.Manifest.Notes) == 0 || fromLayout.Manifest.Notes[0] != fromArchive.Manifest.Notes[0] ||
		!strings.Contains(fromLayout.Manifest.Notes[0], "flattened 1 layers") {
		t.Errorf("flattening notes differ: layout %q, archive %q", fromLayout.Manifest.Notes, fromArchive.Manifest.Notes)
	}

	// Refusals say what is wrong, and leave no image behind.
	for _, c := range []struct{ ref, want string }{
		{"oci:" + layout + ":2", `has no image named "2" (its names: 1)`},
		{"docker-archive:" + archive + ":e2e/other:1", "has no image tagged e2e/other:1 (its tags: docker.io/e2e/disk:1)"},
		{"oci:" + filepath.Join(work, "missing"), "no such file or directory"},
	} {
		r, _ := banger(nil, "image", "pull", c.ref, "--name", "e2e-refused")
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("image pull %s: exit %d, stderr %q; want it refused saying %q", c.ref, r.code, r.stderr, c.want)
		}
	}
	if r, _ := banger(nil, "image", "show", "e2e-refused"); r.code == 0 {
		t.Error("a refused pull left an image e2e-refused")
	}

	r := mustBanger(t, "vm", "run", "--rm", "--image", "e2e-archive", "--", "cat", "/etc/from-disk")
	if strings.TrimSpace(r.stdout) != "made by umoci" {
		t.Errorf("vm run on the image from the archive: %q", r.stdout)
	}
	assertNothingLeft(t)
}
