package image

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/untar"
)

// fakeTree makes a small bootstrapped-looking tree and, next to it, an "outside" directory
// that no step may touch. It returns both.
func fakeTree(t *testing.T) (root, outside string) {
	t.Helper()
	base := t.TempDir()
	root = filepath.Join(base, "root")
	outside = filepath.Join(base, "outside")
	files := map[string]string{
		"etc/hostname":                 "buildhost\n",
		"etc/resolv.conf":              "nameserver 10.0.0.1\n",
		"etc/machine-id":               "0123456789abcdef0123456789abcdef\n",
		"etc/ssh/ssh_host_rsa_key":     "secret",
		"etc/ssh/ssh_host_rsa_key.pub": "public",
		"etc/ssh/sshd_config":          "UsePAM yes\n",
		"etc/shadow":                   "root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\n",
		"etc/fstab":                    "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n",
		"etc/hosts":                    "127.0.0.1 localhost buildhost\n",
		"etc/systemd/system/getty.target.wants/getty@tty1.service": "",
	}
	for name, content := range files {
		writeTestFile(t, filepath.Join(root, name), content, 0o644)
	}
	if err := os.Chmod(filepath.Join(root, "etc/shadow"), 0o640); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(outside, "precious"), "keep me", 0o644)
	return root, outside
}

func writeTestFile(t *testing.T, p, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func readTestFile(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestApplyDefaultRecipeSteps(t *testing.T) {
	r, err := BuiltinRecipe(DefaultRecipe)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := fakeTree(t)
	if err := applySteps(root, r.Steps); err != nil {
		t.Fatalf("applySteps: %v", err)
	}
	for _, gone := range []string{"etc/hostname", "etc/resolv.conf", "etc/ssh/ssh_host_rsa_key", "etc/ssh/ssh_host_rsa_key.pub"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("/%s still exists (err %v), want it removed", gone, err)
		}
	}
	if got := readTestFile(t, filepath.Join(root, "etc/ssh/sshd_config")); got != "UsePAM yes\n" {
		t.Errorf("sshd_config changed to %q; only host keys should go", got)
	}
	if fi, err := os.Stat(filepath.Join(root, "etc/machine-id")); err != nil || fi.Size() != 0 || !fi.Mode().IsRegular() {
		t.Errorf("machine-id: %v, err %v; want an empty regular file", fi, err)
	}
	for _, unit := range []string{"getty@tty1.service", "serial-getty@ttyS0.service"} {
		target, err := os.Readlink(filepath.Join(root, "etc/systemd/system", unit))
		if err != nil || target != "/dev/null" {
			t.Errorf("%s -> %q (err %v), want a mask symlink to /dev/null", unit, target, err)
		}
	}
	if got := readTestFile(t, filepath.Join(root, "etc/shadow")); !strings.HasPrefix(got, "root:!*:") || !strings.Contains(got, "\ndaemon:*:") {
		t.Errorf("shadow = %q, want root locked (\"!*\") and daemon untouched", got)
	}
	if fi, _ := os.Stat(filepath.Join(root, "etc/shadow")); fi.Mode().Perm() != 0o640 {
		t.Errorf("shadow mode = %v, want 0640 kept", fi.Mode().Perm())
	}
	if got := readTestFile(t, filepath.Join(root, "etc/hosts")); strings.Contains(got, "buildhost") || !strings.Contains(got, "localhost") {
		t.Errorf("hosts = %q, want localhost entries only", got)
	}
	if got := readTestFile(t, filepath.Join(root, "etc/fstab")); strings.Contains(got, "UNCONFIGURED") {
		t.Errorf("fstab = %q, want it replaced", got)
	}
	dropIn := filepath.Join(root, "etc/systemd/system/ssh.service.d/banger-hostkeys.conf")
	if got := readTestFile(t, dropIn); !strings.Contains(got, "ssh-keygen -q -t ed25519") {
		t.Errorf("ssh drop-in = %q, want an ed25519 keygen", got)
	}
	if fi, _ := os.Stat(filepath.Dir(dropIn)); fi.Mode().Perm() != 0o755 {
		t.Errorf("created directory mode = %v, want 0755", fi.Mode().Perm())
	}
	leftovers, _ := filepath.Glob(filepath.Join(root, "etc/*/.banger-*"))
	if len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func TestApplyStepsWrite(t *testing.T) {
	root, _ := fakeTree(t)
	steps := []Step{
		{Kind: StepWrite, Path: "/usr/local/bin/tool", Content: "#!/bin/sh\n", Mode: untar.FileMode(0o4755)},
		{Kind: StepWrite, Path: "/etc/default-mode", Content: "x"},
	}
	if err := applySteps(root, steps); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(root, "usr/local/bin/tool"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("mode = %v, want setuid 0755", fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Join(root, "etc/default-mode")); fi.Mode().Perm() != 0o644 {
		t.Errorf("default mode = %v, want 0644", fi.Mode().Perm())
	}
}

// A step must never act through a symlink that leaves the tree.
func TestApplyStepsRefusesSymlinksOutOfTheTree(t *testing.T) {
	tests := []struct {
		name     string
		linkName string // symlink created in the tree
		target   func(outside string) string
		step     Step
		wantErr  bool
	}{
		{
			name:     "write through an absolute symlinked directory",
			linkName: "etc/evil",
			target:   func(o string) string { return o },
			step:     Step{Kind: StepWrite, Path: "/etc/evil/precious", Content: "pwned"},
			wantErr:  true,
		},
		{
			name:     "write through a relative symlinked directory",
			linkName: "etc/evil",
			target:   func(string) string { return "../../outside" },
			step:     Step{Kind: StepWrite, Path: "/etc/evil/precious", Content: "pwned"},
			wantErr:  true,
		},
		{
			name:     "remove through a symlinked directory",
			linkName: "etc/evil",
			target:   func(o string) string { return o },
			step:     Step{Kind: StepRemove, Path: "/etc/evil/precious"},
			wantErr:  true,
		},
		{
			name:     "glob remove through a symlinked directory",
			linkName: "etc/evil",
			target:   func(string) string { return "../../outside" },
			step:     Step{Kind: StepRemove, Path: "/etc/evil/*"},
			wantErr:  true,
		},
		{
			name:     "truncate through a symlinked directory",
			linkName: "etc/evil",
			target:   func(o string) string { return o },
			step:     Step{Kind: StepTruncate, Path: "/etc/evil/precious"},
			wantErr:  true,
		},
		{
			name:     "symlink into a symlinked directory",
			linkName: "etc/evil",
			target:   func(o string) string { return o },
			step:     Step{Kind: StepSymlink, Path: "/etc/evil/precious", Target: "/dev/null"},
			wantErr:  true,
		},
		{
			name:     "truncate a symlink to an outside file",
			linkName: "etc/machine-id",
			target:   func(o string) string { return filepath.Join(o, "precious") },
			step:     Step{Kind: StepTruncate, Path: "/etc/machine-id"},
			wantErr:  true,
		},
		{
			name:     "write replaces a symlink to an outside file instead of following it",
			linkName: "etc/hosts",
			target:   func(o string) string { return filepath.Join(o, "precious") },
			step:     Step{Kind: StepWrite, Path: "/etc/hosts", Content: "127.0.0.1 localhost\n"},
		},
		{
			name:     "remove deletes a symlink to an outside file, not the file",
			linkName: "etc/hosts",
			target:   func(o string) string { return filepath.Join(o, "precious") },
			step:     Step{Kind: StepRemove, Path: "/etc/hosts"},
		},
		{
			name:     "remove deletes a symlink to an outside directory, not its contents",
			linkName: "etc/evil",
			target:   func(o string) string { return o },
			step:     Step{Kind: StepRemove, Path: "/etc/evil"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, outside := fakeTree(t)
			link := filepath.Join(root, tt.linkName)
			os.Remove(link)
			if err := os.Symlink(tt.target(outside), link); err != nil {
				t.Fatal(err)
			}
			err := applySteps(root, []Step{{Kind: StepTruncate, Path: "/etc/fstab"}, tt.step})
			if tt.wantErr {
				if err == nil {
					t.Errorf("applySteps succeeded, want it to refuse the symlink")
				} else if !strings.Contains(err.Error(), "step 1") {
					t.Errorf("error %q does not name step 1", err)
				} else {
					t.Logf("refused: %v", err)
				}
			} else if err != nil {
				t.Errorf("applySteps: %v", err)
			}
			if got := readTestFile(t, filepath.Join(outside, "precious")); got != "keep me" {
				t.Errorf("file outside the tree now holds %q, want it untouched", got)
			}
			entries, _ := os.ReadDir(outside)
			if len(entries) != 1 {
				t.Errorf("outside directory holds %d entries, want only the original file", len(entries))
			}
			if !tt.wantErr {
				fi, err := os.Lstat(link)
				switch {
				case tt.step.Kind == StepRemove && !errors.Is(err, fs.ErrNotExist):
					t.Errorf("symlink still there (%v, %v), want it removed", fi, err)
				case tt.step.Kind == StepWrite && (err != nil || !fi.Mode().IsRegular()):
					t.Errorf("path is %v (%v), want a regular file replacing the symlink", fi, err)
				}
			}
		})
	}
}

func TestApplyStepsRemove(t *testing.T) {
	root, _ := fakeTree(t)
	writeTestFile(t, filepath.Join(root, "var/cache/x/a/b"), "b", 0o644)
	err := applySteps(root, []Step{
		{Kind: StepRemove, Path: "/var/cache/x"},
		{Kind: StepRemove, Path: "/does/not/exist"},
		{Kind: StepRemove, Path: "/no/such/dir/*"},
		{Kind: StepRemove, Path: "/etc/ssh/ssh_host_*_key"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(root, "var/cache/x")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("directory not removed recursively: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "etc/ssh/ssh_host_rsa_key")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("glob match not removed: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "etc/ssh/ssh_host_rsa_key.pub")); err != nil {
		t.Errorf("non-matching file removed: %v", err)
	}
}

func TestApplyStepsSymlinkAndTruncate(t *testing.T) {
	root, _ := fakeTree(t)
	if err := os.MkdirAll(filepath.Join(root, "etc/adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		step    Step
		wantErr string
	}{
		{name: "symlink replaces a file", step: Step{Kind: StepSymlink, Path: "/etc/hosts", Target: "/run/hosts"}},
		{name: "symlink creates parents", step: Step{Kind: StepSymlink, Path: "/new/dir/link", Target: "../x"}},
		{name: "symlink does not replace a directory", step: Step{Kind: StepSymlink, Path: "/etc/adir", Target: "/x"}, wantErr: "step 0"},
		{name: "truncate creates a missing file", step: Step{Kind: StepTruncate, Path: "/etc/new-id"}},
		{name: "truncate refuses a directory", step: Step{Kind: StepTruncate, Path: "/etc/adir"}, wantErr: "not a regular file"},
		{name: "lock a missing user", step: Step{Kind: StepLockPassword, User: "nobody"}, wantErr: `user "nobody" has no entry`},
		{name: "invalid step is refused", step: Step{Kind: StepWrite, Path: "relative"}, wantErr: "relative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := applySteps(root, []Step{tt.step})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("applySteps error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("applySteps: %v", err)
			}
			p := filepath.Join(root, tt.step.Path)
			if tt.step.Kind == StepSymlink {
				if got, err := os.Readlink(p); err != nil || got != tt.step.Target {
					t.Errorf("readlink = %q, %v; want %q", got, err, tt.step.Target)
				}
			} else if fi, err := os.Lstat(p); err != nil || fi.Size() != 0 || !fi.Mode().IsRegular() {
				t.Errorf("lstat = %v, %v; want an empty regular file", fi, err)
			}
		})
	}
}

func TestLockPasswordIsIdempotent(t *testing.T) {
	root, _ := fakeTree(t)
	step := Step{Kind: StepLockPassword, User: "root"}
	for range 2 {
		if err := applySteps(root, []Step{step}); err != nil {
			t.Fatal(err)
		}
	}
	if got := readTestFile(t, filepath.Join(root, "etc/shadow")); !strings.HasPrefix(got, "root:!*:20000:") {
		t.Errorf("shadow = %q, want root:!*: after locking twice", got)
	}
}
