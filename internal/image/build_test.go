package image

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/progress"
)

// requireBuildHost skips tests that run a real bootstrap unless they can work here.
func requireBuildHost(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping a real image build in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping a real image build: needs root")
	}
	for _, tool := range []string{"mmdebstrap", "mkfs.ext4", "e2fsck", "debugfs"} {
		if _, err := lookTool(tool); err != nil {
			t.Skipf("skipping a real image build: %v", err)
		}
	}
}

// hostMirror is the Debian mirror the host's apt uses ($BANGER_TEST_MIRROR overrides it).
func hostMirror() string {
	if m := os.Getenv("BANGER_TEST_MIRROR"); m != "" {
		return m
	}
	uri := regexp.MustCompile(`(?m)^(?:URIs:|deb)\s+(?:\[[^]]*\]\s+)?(https?://\S+/debian)/?(?:\s|$)`)
	for _, p := range []string{"/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"} {
		if data, err := os.ReadFile(p); err == nil {
			if m := uri.FindSubmatch(data); m != nil {
				return string(m[1])
			}
		}
	}
	return "http://deb.debian.org/debian"
}

func TestBuildDebianBookworm(t *testing.T) {
	requireBuildHost(t)
	recipe, err := BuiltinRecipe(DefaultRecipe)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	work := filepath.Join(tmp, "work")
	dest := filepath.Join(tmp, "images", DefaultRecipe)
	for _, d := range []string{work, filepath.Dir(dest)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var stages []string
	report := func(u progress.Update) {
		mu.Lock()
		defer mu.Unlock()
		if len(stages) == 0 || stages[len(stages)-1] != u.Stage {
			stages = append(stages, u.Stage)
		}
		if u.Total == 0 {
			t.Logf("progress %s: %s", u.Stage, u.Message)
		}
	}

	m, err := Build(context.Background(), BuildOptions{
		Recipe: recipe, Mirror: hostMirror(), Dest: dest, WorkDir: work, Progress: report,
	})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Logf("built %s with %s %s in %.1fs: stages %v", m.Name, m.Tool, m.ToolVersion, m.BuildSeconds, m.StageSeconds)
	t.Logf("rootfs %d MiB (tree %d MiB, %d inodes; %d inodes created), %d packages",
		m.RootfsSize/mib, m.TreeBytes/mib, m.TreeInodes, m.RootfsInodes, len(m.Packages))

	wantStages := []string{StageBootstrap, StageCustomize, StageMkfs, StageChecksum}
	if strings.Join(stages, ",") != strings.Join(wantStages, ",") {
		t.Errorf("progress stages = %v, want %v", stages, wantStages)
	}
	entries, _ := os.ReadDir(work)
	if len(entries) != 0 {
		t.Errorf("work dir not cleaned up: %v", entries)
	}
	entries, _ = os.ReadDir(filepath.Dir(dest))
	if len(entries) != 1 {
		t.Errorf("images dir holds %v, want only %s", entries, DefaultRecipe)
	}

	loaded, err := Load(dest)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if loaded.RootfsSHA256 != m.RootfsSHA256 || loaded.RecipeSHA256 != recipe.Hash() || loaded.Mirror != hostMirror() {
		t.Errorf("loaded manifest %+v differs from the build's", loaded)
	}
	for _, name := range []string{"systemd", "openssh-server", "systemd-sysv", "dbus", "docker.io", "containerd", "apparmor", "build-essential", "jq", "wget", "sudo", "vim-tiny"} {
		if p, ok := loaded.Package(name); !ok || p.Version == "" {
			t.Errorf("manifest lacks package %s with a version (%+v)", name, p)
		}
	}
	if len(loaded.SkippedPackages) != 1 || loaded.SkippedPackages[0].Name != "mise" || !strings.Contains(loaded.SkippedPackages[0].Reason, "not in Debian bookworm") {
		t.Errorf("skipped packages = %+v; want mise, not in Debian bookworm", loaded.SkippedPackages)
	}
	if _, ok := loaded.Package("ifupdown"); ok {
		t.Errorf("image contains ifupdown")
	}
	start := time.Now()
	if err := Verify(dest); err != nil {
		t.Errorf("Verify: %v", err)
	}
	t.Logf("Verify took %v", time.Since(start).Round(time.Millisecond))

	rootfs := filepath.Join(dest, RootfsFile)
	fi, err := os.Stat(rootfs)
	if err != nil || fi.Mode().Perm() != 0o444 {
		t.Fatalf("rootfs mode = %v (%v), want 0444", fi.Mode(), err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		t.Logf("rootfs.ext4: %d MiB apparent, %d MiB allocated", fi.Size()/mib, st.Blocks*512/mib)
	}
	log, err := os.ReadFile(filepath.Join(dest, BuildLogFile))
	if err != nil || !strings.Contains(string(log), "I: success") {
		t.Errorf("build.log missing or without mmdebstrap's output (%v)", err)
	}
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, "exit status") {
			t.Logf("build.log: %s", line)
		}
	}

	start = time.Now()
	out, err := exec.Command("e2fsck", "-fn", rootfs).CombinedOutput()
	if err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
	t.Logf("e2fsck -fn took %v", time.Since(start).Round(time.Millisecond))

	checkImageContents(t, rootfs)
	checkReadOnlyMount(t, rootfs, m.RootfsSHA256)
}

// checkImageContents inspects the image with debugfs, without mounting it.
func checkImageContents(t *testing.T, rootfs string) {
	debugfs := func(cmd string) string {
		out, err := exec.Command("debugfs", "-R", cmd, rootfs).CombinedOutput()
		if err != nil {
			t.Fatalf("debugfs -R %q: %v\n%s", cmd, err, out)
		}
		return string(out)
	}
	features := debugfs("features")
	if strings.Contains(features, "has_journal") {
		t.Errorf("image has a journal: %s", features)
	}
	t.Logf("image %s", strings.TrimSpace(features))
	stats := debugfs("stats")
	for _, want := range []string{"Filesystem volume name:   banger-root", "Inode size:\t          256", "Reserved block count:     0"} {
		if !strings.Contains(stats, want) {
			t.Errorf("superblock lacks %q", want)
		}
	}

	if out := debugfs("stat /sbin/init"); !strings.Contains(out, "Type: symlink") || !strings.Contains(out, `"/lib/systemd/systemd"`) {
		t.Errorf("/sbin/init is not a symlink to /lib/systemd/systemd:\n%s", out)
	}
	if out := debugfs("stat /usr/lib/systemd/systemd"); !strings.Contains(out, "Type: regular") {
		t.Errorf("/usr/lib/systemd/systemd is not a regular file:\n%s", out)
	}
	if out := debugfs("stat /etc/hostname"); !strings.Contains(out, "File not found") {
		t.Errorf("/etc/hostname exists:\n%s", out)
	}
	if out := debugfs("stat /etc/resolv.conf"); !strings.Contains(out, "File not found") {
		t.Errorf("/etc/resolv.conf (the build host's) exists:\n%s", out)
	}
	if out := debugfs("stat /etc/machine-id"); !regexp.MustCompile(`Type: regular[^\n]*\n(?:[^\n]*\n)?[^\n]*Size: 0\n`).MatchString(out) {
		t.Errorf("/etc/machine-id is not an empty file:\n%s", out)
	}
	if out := debugfs("ls /etc/ssh"); strings.Contains(out, "ssh_host_") || !strings.Contains(out, "sshd_config") {
		t.Errorf("/etc/ssh holds host keys (or no sshd_config):\n%s", out)
	}
	if out := debugfs("cat /etc/systemd/system/ssh.service.d/banger-hostkeys.conf"); !strings.Contains(out, "ssh-keygen -q -t ed25519") {
		t.Errorf("ssh host key drop-in missing:\n%s", out)
	}
	// Docker starts on first use: its socket is enabled, the services are not started at boot.
	if out := debugfs("ls /etc/systemd/system/multi-user.target.wants"); strings.Contains(out, "docker.service") || strings.Contains(out, "containerd.service") {
		t.Errorf("docker or containerd starts at every boot:\n%s", out)
	}
	if out := debugfs("ls /etc/systemd/system/sockets.target.wants"); !strings.Contains(out, "docker.socket") {
		t.Errorf("docker.socket is not enabled:\n%s", out)
	}
	// Early commands keep /tmp, and find Docker's socket listening.
	if out := debugfs("cat /etc/tmpfiles.d/tmp.conf"); !strings.Contains(out, "d /tmp 1777 root root -") {
		t.Errorf("/tmp is emptied at boot:\n%s", out)
	}
	if out := debugfs("cat /etc/systemd/system/docker.socket.d/banger-early.conf"); !strings.Contains(out, "DefaultDependencies=no") {
		t.Errorf("docker.socket waits for sysinit.target:\n%s", out)
	}
	for _, unit := range []string{"getty@tty1.service", "serial-getty@ttyS0.service", "apparmor.service", "systemd-journal-flush.service", "modprobe@loop.service"} {
		if out := debugfs("stat /etc/systemd/system/" + unit); !strings.Contains(out, `"/dev/null"`) {
			t.Errorf("%s is not masked:\n%s", unit, out)
		}
	}
	if out := debugfs("cat /etc/shadow"); !strings.Contains(out, "root:!") {
		t.Errorf("root's password is not locked")
	}
	if out := debugfs("stat /usr/bin/passwd"); !strings.Contains(out, "Mode:  04755") || !regexp.MustCompile(`User:\s+0\s+Group:\s+0`).MatchString(out) {
		t.Errorf("/usr/bin/passwd lost its setuid bit or root ownership:\n%s", out)
	}
	if out := debugfs("stat /etc/shadow"); !strings.Contains(out, "Mode:  0640") || !regexp.MustCompile(`Group:\s+42\b`).MatchString(out) {
		t.Errorf("/etc/shadow is not 0640 root:shadow:\n%s", out)
	}
	if out := debugfs("ea_list /usr/bin/ping"); !strings.Contains(out, "security.capability") {
		t.Errorf("/usr/bin/ping lost its file capability xattr:\n%s", out)
	}
	if out := debugfs("stat /"); !strings.Contains(out, "Mode:  0755") {
		t.Errorf("image root is not 0755:\n%s", out)
	}
}

// checkReadOnlyMount mounts the image the way the agent does (ro,noload) when loop devices are
// available, reads it and checks that the mount did not change a byte of it.
func checkReadOnlyMount(t *testing.T, rootfs, sum string) {
	mnt := t.TempDir()
	out, err := exec.Command("mount", "-t", "ext4", "-o", "loop,ro,noload", rootfs, mnt).CombinedOutput()
	if err != nil {
		t.Logf("not checking a read-only mount (loop mount unavailable: %v: %s)", err, strings.TrimSpace(string(out)))
		return
	}
	defer exec.Command("umount", mnt).Run()
	t.Logf("mounted the image with -o loop,ro,noload")
	if target, err := os.Readlink(filepath.Join(mnt, "sbin/init")); err != nil || target != "/lib/systemd/systemd" {
		t.Errorf("mounted /sbin/init -> %q (%v)", target, err)
	}
	if fi, err := os.Stat(filepath.Join(mnt, "usr/bin/passwd")); err != nil || fi.Mode()&os.ModeSetuid == 0 {
		t.Errorf("mounted /usr/bin/passwd: %v (%v), want setuid", fi, err)
	}
	if err := exec.Command("umount", mnt).Run(); err != nil {
		t.Fatalf("umount: %v", err)
	}
	got, err := fileSHA256(context.Background(), rootfs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got != sum {
		t.Errorf("image sha256 changed by a read-only mount: %s, want %s", got, sum)
	}
}

// Cancelling a build mid-bootstrap leaves nothing behind but the log: no tree, no staging
// directory, no mounts, no bootstrap processes.
func TestBuildCancelledLeavesNothingBehind(t *testing.T) {
	requireBuildHost(t)
	recipe, err := BuiltinRecipe(DefaultRecipe)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	work := filepath.Join(tmp, "work")
	images := filepath.Join(tmp, "images")
	for _, d := range []string{work, images} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	report := func(u progress.Update) {
		// Cancel while packages are being installed inside the chroot: /proc, /sys and /dev
		// are mounted in the tree then, and dpkg is running.
		if u.Stage == StageBootstrap && strings.Contains(u.Message, "installing") {
			once.Do(func() { t.Logf("cancelling at %q", u.Message); cancel() })
		}
	}
	start := time.Now()
	_, err = Build(ctx, BuildOptions{
		Recipe: recipe, Mirror: hostMirror(), Dest: filepath.Join(images, "x"), WorkDir: work, Progress: report,
	})
	t.Logf("Build returned after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Build error = %v, want context.Canceled", err)
	}
	if !strings.Contains(err.Error(), "full log: "+work) {
		t.Errorf("error %q does not name the log in %s", err, work)
	}
	entries, _ := os.ReadDir(images)
	if len(entries) != 0 {
		t.Errorf("images dir holds %v after a cancelled build", entries)
	}
	entries, _ = os.ReadDir(work)
	if len(entries) != 1 || !strings.HasSuffix(entries[0].Name(), ".log") {
		t.Errorf("work dir holds %v, want only the build log", entries)
	} else {
		log, _ := os.ReadFile(filepath.Join(work, entries[0].Name()))
		lines := strings.Split(strings.TrimSpace(string(log)), "\n")
		t.Logf("end of the build log:\n%s", strings.Join(lines[max(0, len(lines)-8):], "\n"))
	}
	if mounts, err := mountsUnder(tmp); err != nil || len(mounts) > 0 {
		t.Errorf("mounts left under %s: %v (%v)", tmp, mounts, err)
	}
	if procs := processesMentioning(tmp); len(procs) > 0 {
		t.Errorf("processes still running on the build tree: %v", procs)
	}
}

// processesMentioning lists processes whose command line contains s.
func processesMentioning(s string) []string {
	var found []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		data, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(string(data), "\x00", " ")
		if strings.Contains(cmdline, s) {
			stat, _ := os.ReadFile(filepath.Join(d, "stat"))
			if !strings.Contains(string(stat), ") Z ") {
				found = append(found, filepath.Base(d)+": "+cmdline)
			}
		}
	}
	return found
}

// The debootstrap fallback is slow (a minute or more), so it runs only when asked for.
func TestBuildWithDebootstrap(t *testing.T) {
	requireBuildHost(t)
	if os.Getenv("BANGER_TEST_DEBOOTSTRAP") == "" {
		t.Skip("set BANGER_TEST_DEBOOTSTRAP=1 to build an image with the debootstrap fallback")
	}
	if _, err := lookTool("debootstrap"); err != nil {
		t.Skip(err)
	}
	recipe, err := BuiltinRecipe(DefaultRecipe)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	dest := filepath.Join(tmp, "image")
	m, err := Build(context.Background(), BuildOptions{
		Recipe: recipe, Mirror: hostMirror(), Dest: dest, WorkDir: tmp, Bootstrapper: Debootstrap,
	})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Logf("built with %s in %.1fs: stages %v, rootfs %d MiB, %d packages", m.ToolVersion, m.BuildSeconds, m.StageSeconds, m.RootfsSize/mib, len(m.Packages))
	if out, err := exec.Command("e2fsck", "-fn", filepath.Join(dest, RootfsFile)).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
	checkImageContents(t, filepath.Join(dest, RootfsFile))
}

// A failing bootstrap (here: a mirror nobody listens on) reports the tool's last lines and the
// log path, and leaves only the log behind.
func TestBuildFailureNamesTheLog(t *testing.T) {
	requireBuildHost(t)
	recipe, err := BuiltinRecipe(DefaultRecipe)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	work := filepath.Join(tmp, "work")
	images := filepath.Join(tmp, "images")
	for _, d := range []string{work, images} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, err = Build(context.Background(), BuildOptions{
		Recipe: recipe, Mirror: "http://127.0.0.1:9/debian", Dest: filepath.Join(images, "x"), WorkDir: work,
	})
	if err == nil {
		t.Fatal("Build from a dead mirror succeeded")
	}
	msg := err.Error()
	for _, want := range []string{"image debian-bookworm: mmdebstrap failed (exit ", "127.0.0.1:9", "; full log: " + work} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	entries, _ := os.ReadDir(images)
	if len(entries) != 0 {
		t.Errorf("images dir holds %v after a failed build", entries)
	}
	entries, _ = os.ReadDir(work)
	if len(entries) != 1 || !strings.HasSuffix(entries[0].Name(), ".log") {
		t.Errorf("work dir holds %v, want only the build log", entries)
	}
}
