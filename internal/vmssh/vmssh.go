// Package vmssh keeps what lets banger (and its users) ssh into VMs: each VM's host key, made
// before the guest first boots so that known_hosts is right from the first connection;
// banger's known_hosts and ssh_config; banger's client key; and the files a guest needs for
// its sshd to accept that key and present that host key.
package vmssh

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/sshkeys"
)

// Host key files in a VM's directory.
const (
	hostKeyFile = "ssh_host_ed25519_key"
	hostPubFile = "ssh_host_ed25519_key.pub"
)

// sshdSettings harden sshd (keys only, root by key only) and point it at banger's key files.
// Debian's sshd_config includes sshd_config.d/*.conf first, and the first value wins.
const sshdSettings = `# Written by banger at every boot.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/banger_authorized_keys
HostKey /etc/ssh/ssh_host_ed25519_key
`

// VM is a VM as its ssh access sees it.
type VM struct {
	Name string // ssh knows it as <Name>.vm
	Dir  string // the VM's directory, where its host key is kept
	IP   string // its address, also recorded in known_hosts; "" when it has none
}

// HostAlias is the name ssh knows a VM by: <name>.vm.
func HostAlias(name string) string { return name + ".vm" }

// Options configure Keys.
type Options struct {
	Layout paths.Layout
	Config func() (config.Config, error) // re-read for ssh_key_path
	// CLIPath is the banger CLI that ssh_config runs as ProxyCommand (`banger vm ssh-proxy
	// VM`); "banger" (found on PATH) when empty.
	CLIPath string
}

// Keys manages banger's ssh files: its own state, never the user's ~/.ssh. Its methods touch
// only local files and return when they are written.
type Keys struct {
	layout  paths.Layout
	config  func() (config.Config, error)
	cliPath string
}

// New returns Keys.
func New(o Options) *Keys {
	k := &Keys{layout: o.Layout, config: o.Config, cliPath: o.CLIPath}
	if k.cliPath == "" {
		k.cliPath = "banger"
	}
	return k
}

// KnownHostsFile is banger's own known_hosts.
func (k *Keys) KnownHostsFile() string { return filepath.Join(k.layout.SSHDir(), "known_hosts") }

// ConfigFile is banger's ssh_config, for users to include.
func (k *Keys) ConfigFile() string { return filepath.Join(k.layout.ConfigDir, "ssh_config") }

// ClientKeyFile is the client key banger authorizes in every guest: ssh_key_path, or
// banger's own key.
func (k *Keys) ClientKeyFile() string {
	if k.config != nil {
		if cfg, err := k.config(); err == nil && cfg.SSHKeyPath != "" {
			return cfg.SSHKeyPath
		}
	}
	return filepath.Join(k.layout.SSHDir(), "id_ed25519")
}

// EnsureHostKey makes the VM's host key in its directory (once) and records it in
// known_hosts under the names ssh checks: <name>.vm and the VM's address.
func (k *Keys) EnsureHostKey(vm VM) error {
	priv, pub := filepath.Join(vm.Dir, hostKeyFile), filepath.Join(vm.Dir, hostPubFile)
	pubData, err := os.ReadFile(pub)
	if errors.Is(err, os.ErrNotExist) {
		kp, gerr := sshkeys.Generate("root@" + vm.Name)
		if gerr != nil {
			return gerr
		}
		if err := os.WriteFile(priv, kp.Private, 0o600); err != nil {
			return fmt.Errorf("write host key: %w", err)
		}
		if err := os.WriteFile(pub, kp.Public, 0o644); err != nil {
			return fmt.Errorf("write host key: %w", err)
		}
		pubData = kp.Public
	} else if err != nil {
		return err
	}
	names := []string{HostAlias(vm.Name)}
	if vm.IP != "" {
		names = append(names, vm.IP)
	}
	line, err := sshkeys.HostKeyLine(names, pubData)
	if err != nil {
		return err
	}
	return sshkeys.SetKnownHost(k.KnownHostsFile(), HostAlias(vm.Name), line)
}

// GuestFiles are the files that let banger ssh into vm, as the guest gets them: its host key
// (EnsureHostKey made it), banger's client key as an authorized key (made when missing), and
// the sshd settings.
func (k *Keys) GuestFiles(vm VM) ([]agent.File, error) {
	userPub, err := sshkeys.EnsureUserKey(k.ClientKeyFile())
	if err != nil {
		return nil, err
	}
	priv, err := os.ReadFile(filepath.Join(vm.Dir, hostKeyFile))
	if err != nil {
		return nil, err
	}
	pub, err := os.ReadFile(filepath.Join(vm.Dir, hostPubFile))
	if err != nil {
		return nil, err
	}
	return []agent.File{
		{Path: "/etc/ssh/ssh_host_ed25519_key", Mode: 0o600, Data: priv},
		{Path: "/etc/ssh/ssh_host_ed25519_key.pub", Mode: 0o644, Data: pub},
		{Path: "/etc/ssh/banger_authorized_keys", Mode: 0o644, Data: userPub},
		{Path: "/etc/ssh/sshd_config.d/banger.conf", Mode: 0o644, Data: []byte(sshdSettings)},
	}, nil
}

// Seed stages the guest files for a new VM disk in a directory under the VM's, laid out as
// the guest's overlay upper layer (root/…), so they are in place before anything in the guest
// starts: no provisioning round trip and no sshd restart on the first boot. It returns the
// directory, for the caller to remove, or "" when the disk is not seeded: only a daemon running
// as root seeds disks, as mkfs.ext4 -d copies owners and sshd refuses a host key root does
// not own. On failure nothing is left.
func (k *Keys) Seed(vm VM) (dir string, err error) {
	if os.Geteuid() != 0 {
		return "", nil
	}
	files, err := k.GuestFiles(vm)
	if err != nil {
		return "", err
	}
	if dir, err = os.MkdirTemp(vm.Dir, ".seed-"); err != nil {
		return "", fmt.Errorf("stage the VM disk's files: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
			dir = ""
		}
	}()
	upper := filepath.Join(dir, "root") // the guest init's upper directory on the VM disk
	for _, f := range files {
		path := filepath.Join(upper, f.Path)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return "", fmt.Errorf("stage %s for the VM disk: %w", f.Path, err)
		}
		if err := os.WriteFile(path, f.Data, os.FileMode(f.Mode)); err != nil {
			return "", fmt.Errorf("stage %s for the VM disk: %w", f.Path, err)
		}
		if err := os.Chmod(path, os.FileMode(f.Mode)); err != nil { // past the umask
			return "", fmt.Errorf("stage %s for the VM disk: %w", f.Path, err)
		}
	}
	// The upper directories become the merged ones' attributes: make them what an image has.
	err = filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		return os.Chmod(p, 0o755)
	})
	return dir, err
}

// WriteConfig rewrites banger's ssh_config with a host entry for each of names.
func (k *Keys) WriteConfig(names []string) error {
	hosts := make([]sshkeys.Host, 0, len(names))
	for _, n := range names {
		hosts = append(hosts, sshkeys.Host{Name: n})
	}
	return sshkeys.WriteConfig(k.ConfigFile(), k.ClientKeyFile(), k.KnownHostsFile(), k.cliPath, hosts)
}

// Forget removes a deleted VM's host key from known_hosts.
func (k *Keys) Forget(name string) error {
	return sshkeys.RemoveKnownHost(k.KnownHostsFile(), HostAlias(name))
}
