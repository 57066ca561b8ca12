package image

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/untar"
)

func TestBuiltinRecipesListsDefault(t *testing.T) {
	names := BuiltinRecipes()
	if !slices.Contains(names, DefaultRecipe) {
		t.Fatalf("BuiltinRecipes() = %v, want it to contain %q", names, DefaultRecipe)
	}
}

func TestBuiltinRecipeDefaultIsWhatVMsNeed(t *testing.T) {
	r, err := BuiltinRecipe(DefaultRecipe)
	if err != nil {
		t.Fatalf("BuiltinRecipe(%q): %v", DefaultRecipe, err)
	}
	if r.Suite != "bookworm" || r.Variant != "minbase" {
		t.Errorf("suite/variant = %s/%s, want bookworm/minbase", r.Suite, r.Variant)
	}
	for _, p := range []string{"systemd-sysv", "systemd", "dbus", "libpam-systemd", "udev", "openssh-server", "ca-certificates", "iproute2", "git", "curl"} {
		if !slices.Contains(r.Packages, p) {
			t.Errorf("packages lack %q", p)
		}
	}
	if slices.Contains(r.Packages, "ifupdown") {
		t.Errorf("packages contain ifupdown; the agent configures the network")
	}
	want := []Step{
		{Kind: StepTruncate, Path: "/etc/machine-id"},
		{Kind: StepRemove, Path: "/etc/hostname"},
		{Kind: StepRemove, Path: "/etc/ssh/ssh_host_*"},
		{Kind: StepMask, Unit: "getty@tty1.service"},
		{Kind: StepMask, Unit: "serial-getty@ttyS0.service"},
		{Kind: StepLockPassword, User: "root"},
	}
	for _, w := range want {
		if !slices.Contains(r.Steps, w) {
			t.Errorf("steps lack %v", w)
		}
	}
	for _, path := range []string{"/etc/fstab", "/etc/hosts", "/etc/systemd/system/ssh.service.d/banger-hostkeys.conf"} {
		i := slices.IndexFunc(r.Steps, func(s Step) bool { return s.Kind == StepWrite && s.Path == path })
		if i < 0 {
			t.Errorf("no write step for %s", path)
			continue
		}
		if r.Steps[i].Mode != 0o644 {
			t.Errorf("write %s: mode %v, want 0644", path, r.Steps[i].Mode)
		}
	}
	dropIn := r.Steps[slices.IndexFunc(r.Steps, func(s Step) bool {
		return s.Path == "/etc/systemd/system/ssh.service.d/banger-hostkeys.conf"
	})].Content
	keygen := strings.Index(dropIn, "ssh-keygen -q -t ed25519")
	reset := strings.Index(dropIn, "ExecStartPre=\n")
	check := strings.Index(dropIn, "ExecStartPre=/usr/sbin/sshd -t")
	if reset < 0 || keygen < reset || check < keygen || strings.Contains(dropIn, "ssh-keygen -A") {
		t.Errorf("ssh drop-in must reset ExecStartPre, then make only a missing ed25519 key (RSA takes seconds under emulation) before sshd -t; got:\n%s", dropIn)
	}
}

func TestBuiltinRecipeUnknown(t *testing.T) {
	for _, name := range []string{"nope", "../recipes/debian-bookworm", ""} {
		_, err := BuiltinRecipe(name)
		if err == nil || !strings.Contains(err.Error(), "no such recipe") || !strings.Contains(err.Error(), DefaultRecipe) {
			t.Errorf("BuiltinRecipe(%q) error = %v, want \"no such recipe\" listing %s", name, err, DefaultRecipe)
		}
	}
}

const recipeHead = `
name = "test"
suite = "bookworm"
variant = "minbase"
packages = ["systemd", "openssh-server"]
`

func TestParseRecipe(t *testing.T) {
	tests := []struct {
		name    string
		toml    string
		wantErr []string // substrings of the error; nil means success
	}{
		{name: "no steps", toml: recipeHead},
		{name: "every step kind", toml: recipeHead + `
[[steps]]
write = "/etc/a"
content = "x"
mode = "04755"
[[steps]]
write = "/etc/b"
mode = 0o600
[[steps]]
remove = "/etc/ssh/ssh_host_*"
[[steps]]
symlink = "/etc/l"
target = "/dev/null"
[[steps]]
mask = "getty@tty1.service"
[[steps]]
truncate = "/etc/machine-id"
[[steps]]
lock_password = "root"
`},
		{name: "unknown step kind names the index", toml: recipeHead + `
[[steps]]
remove = "/etc/x"
[[steps]]
chmod = "/etc/x"
`, wantErr: []string{"step 1", "unknown step kind", "chmod"}},
		{name: "relative path", toml: recipeHead + `
[[steps]]
remove = "etc/hostname"
`, wantErr: []string{"step 0", "relative"}},
		{name: "dot-dot path", toml: recipeHead + `
[[steps]]
truncate = "/etc/machine-id"
[[steps]]
write = "/etc/../../host"
`, wantErr: []string{"step 1", `".."`}},
		{name: "unclean path", toml: recipeHead + `
[[steps]]
remove = "/etc//hostname"
`, wantErr: []string{"step 0", "not clean"}},
		{name: "root path", toml: recipeHead + `
[[steps]]
remove = "/"
`, wantErr: []string{"step 0", "root"}},
		{name: "two kinds in one step", toml: recipeHead + `
[[steps]]
remove = "/a"
truncate = "/b"
`, wantErr: []string{"step 0", "more than one step kind"}},
		{name: "key not allowed for kind", toml: recipeHead + `
[[steps]]
remove = "/a"
content = "x"
`, wantErr: []string{"step 0", `unexpected key "content"`}},
		{name: "glob outside remove", toml: recipeHead + `
[[steps]]
write = "/etc/*.conf"
`, wantErr: []string{"step 0", "only allowed in remove"}},
		{name: "glob in a directory", toml: recipeHead + `
[[steps]]
remove = "/etc/*/hostname"
`, wantErr: []string{"step 0", "last element"}},
		{name: "bad mode", toml: recipeHead + `
[[steps]]
write = "/etc/a"
mode = "rw-r--r--"
`, wantErr: []string{"step 0", "octal"}},
		{name: "mode out of range", toml: recipeHead + `
[[steps]]
write = "/etc/a"
mode = 0o17777
`, wantErr: []string{"step 0", "out of range"}},
		{name: "path not a string", toml: recipeHead + `
[[steps]]
remove = 3
`, wantErr: []string{"step 0", "must be a string"}},
		{name: "symlink without target", toml: recipeHead + `
[[steps]]
symlink = "/etc/l"
`, wantErr: []string{"step 0", "needs a target"}},
		{name: "bad unit", toml: recipeHead + `
[[steps]]
mask = "../../etc/passwd"
`, wantErr: []string{"step 0", "unit name"}},
		{name: "bad user", toml: recipeHead + `
[[steps]]
lock_password = "root:x"
`, wantErr: []string{"step 0", "user name"}},
		{name: "bad package", toml: `
name = "test"
suite = "bookworm"
variant = "minbase"
packages = ["systemd", "foo bar"]
`, wantErr: []string{"not a Debian package name"}},
		{name: "duplicate package", toml: `
name = "test"
suite = "bookworm"
variant = "minbase"
packages = ["git", "git"]
`, wantErr: []string{`"git" is listed twice`}},
		{name: "missing suite", toml: `
name = "test"
variant = "minbase"
`, wantErr: []string{"suite"}},
		{name: "unknown top-level field", toml: recipeHead + `
mirror = "http://example.org"
`, wantErr: []string{"unknown field(s) mirror;", "known fields"}},
		{name: "syntax error", toml: `name = "test`, wantErr: []string{"line 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRecipe([]byte(tt.toml))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("ParseRecipe: %v, want success", err)
				}
				if r.Name != "test" {
					t.Errorf("name = %q, want test", r.Name)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseRecipe succeeded, want error containing %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseRecipeStepFields(t *testing.T) {
	r, err := ParseRecipe([]byte(recipeHead + `
[[steps]]
write = "/usr/local/bin/x"
content = "#!/bin/sh\n"
mode = "04755"
[[steps]]
symlink = "/etc/l"
target = "../usr/lib/x"
[[steps]]
write = "/etc/default-mode"
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Step{
		{Kind: StepWrite, Path: "/usr/local/bin/x", Content: "#!/bin/sh\n", Mode: untar.FileMode(0o4755)},
		{Kind: StepSymlink, Path: "/etc/l", Target: "../usr/lib/x"},
		{Kind: StepWrite, Path: "/etc/default-mode"},
	}
	if !slices.Equal(r.Steps, want) {
		t.Errorf("steps = %+v, want %+v", r.Steps, want)
	}
}

func TestRecipeHash(t *testing.T) {
	a, err := ParseRecipe([]byte(recipeHead))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseRecipe([]byte("# a comment\n" + strings.ReplaceAll(recipeHead, "\n", "\n\n")))
	if err != nil {
		t.Fatal(err)
	}
	if a.Hash() != b.Hash() {
		t.Errorf("hash changed with formatting only: %s vs %s", a.Hash(), b.Hash())
	}
	b.Packages = append(b.Packages, "git")
	if a.Hash() == b.Hash() {
		t.Errorf("hash did not change when a package was added")
	}
	if len(a.Hash()) != 64 {
		t.Errorf("hash %q is not hex sha256", a.Hash())
	}
}

func TestValidateRejectsHandBuiltSteps(t *testing.T) {
	r, err := BuiltinRecipe(DefaultRecipe)
	if err != nil {
		t.Fatal(err)
	}
	r.Steps = append(r.Steps, Step{Kind: "chmod", Path: "/etc"})
	err = r.Validate()
	want := "step " + strconv.Itoa(len(r.Steps)-1)
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "unknown step kind") {
		t.Errorf("Validate() = %v, want an unknown step kind error naming %q", err, want)
	}
}
