package vmssh

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/paths"
)

func newKeys(t *testing.T, keyPath string) (*Keys, VM) {
	t.Helper()
	dir := t.TempDir()
	l := paths.Layout{StateDir: filepath.Join(dir, "state"), ConfigDir: filepath.Join(dir, "config")}
	for _, d := range []string{l.SSHDir(), l.ConfigDir, filepath.Join(dir, "vm")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	k := New(Options{Layout: l, Config: func() (config.Config, error) { return config.Config{SSHKeyPath: keyPath}, nil }})
	return k, VM{Name: "dev", Dir: filepath.Join(dir, "vm"), IP: "172.16.0.2"}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The host key is made once and known under the VM's alias and address; the guest gets that
// key, banger's client key and the sshd settings.
func TestHostKeyKnownAndGivenToTheGuest(t *testing.T) {
	k, vm := newKeys(t, "")
	if err := k.EnsureHostKey(vm); err != nil {
		t.Fatal(err)
	}
	pub := read(t, filepath.Join(vm.Dir, hostPubFile))
	if err := k.EnsureHostKey(vm); err != nil {
		t.Fatal(err)
	}
	if again := read(t, filepath.Join(vm.Dir, hostPubFile)); again != pub {
		t.Error("a second EnsureHostKey made a new host key")
	}
	known := read(t, k.KnownHostsFile())
	if strings.Count(known, "\n") != 1 || !strings.HasPrefix(known, "dev.vm,172.16.0.2 ") {
		t.Errorf("known_hosts = %q, want one line for dev.vm and its address", known)
	}

	files, err := k.GuestFiles(vm)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]byte{}
	for _, f := range files {
		got[f.Path] = f.Data
	}
	if !bytes.Equal(got["/etc/ssh/ssh_host_ed25519_key.pub"], []byte(pub)) {
		t.Error("the guest does not get the VM's host key")
	}
	if client := read(t, k.ClientKeyFile()+".pub"); !bytes.Equal(got["/etc/ssh/banger_authorized_keys"], []byte(client)) {
		t.Errorf("authorized keys = %q, want banger's client key %q", got["/etc/ssh/banger_authorized_keys"], client)
	}
	if !strings.Contains(string(got["/etc/ssh/sshd_config.d/banger.conf"]), "PasswordAuthentication no") {
		t.Error("sshd settings missing")
	}

	if err := k.Forget(vm.Name); err != nil {
		t.Fatal(err)
	}
	if known := read(t, k.KnownHostsFile()); strings.Contains(known, "dev.vm") {
		t.Errorf("known_hosts after Forget: %q", known)
	}
}

// ssh_key_path, when set, is the client key: in ssh_config and in the guest.
func TestConfiguredClientKey(t *testing.T) {
	key := filepath.Join(t.TempDir(), "mine")
	k, _ := newKeys(t, key)
	if k.ClientKeyFile() != key {
		t.Errorf("ClientKeyFile = %s, want ssh_key_path %s", k.ClientKeyFile(), key)
	}
	if err := k.WriteConfig([]string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	cfg := read(t, k.ConfigFile())
	for _, want := range []string{"Host a.vm", "Host b.vm", key, k.KnownHostsFile(), "banger vm ssh-proxy"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("ssh_config lacks %q:\n%s", want, cfg)
		}
	}
}
