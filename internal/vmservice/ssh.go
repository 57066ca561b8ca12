package vmservice

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/sshkeys"
	"github.com/banger-dev/banger/internal/steps"
	"github.com/banger-dev/banger/internal/store"
)

// StepProvision is the start step that gives the guest banger's ssh setup.
const StepProvision = "provision"

// Host key files in a VM's directory: banger makes them, so it knows them before the first
// connection.
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

// KnownHostsFile is banger's own known_hosts.
func (s *Service) KnownHostsFile() string { return filepath.Join(s.layout.SSHDir(), "known_hosts") }

// SSHConfigFile is banger's ssh_config, for users to include.
func (s *Service) SSHConfigFile() string { return filepath.Join(s.layout.ConfigDir, "ssh_config") }

// SSHKeyFile is the client key banger authorizes in every guest.
func (s *Service) SSHKeyFile() string {
	if cfg, err := s.config(); err == nil && cfg.SSHKeyPath != "" {
		return cfg.SSHKeyPath
	}
	return filepath.Join(s.layout.SSHDir(), "id_ed25519")
}

func hostAlias(name string) string { return name + ".vm" }

// ensureHostKey makes the VM's host key (once) and records it in known_hosts, under the
// names ssh will check: <name>.vm and the VM's address.
func (s *Service) ensureHostKey(vm *store.VM) error {
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
	names := []string{hostAlias(vm.Name)}
	if vm.IP != "" {
		names = append(names, vm.IP)
	}
	line, err := sshkeys.HostKeyLine(names, pubData)
	if err != nil {
		return err
	}
	return sshkeys.SetKnownHost(s.KnownHostsFile(), hostAlias(vm.Name), line)
}

// provisionStep puts banger's client key, the VM's host key and the sshd settings into the
// guest as soon as its agent answers, and restarts sshd if it is up already. A VM whose new
// disk was seeded with them (see diskSeed) skips it on that first boot; later starts
// provision again, so a changed client key reaches the guest. A guest where
// that fails still runs (agent commands work); ssh then says why it cannot connect.
func (s *Service) provisionStep(b *boot) steps.Step {
	vm := b.vm
	return steps.Step{
		Name: StepProvision,
		Do: func(ctx context.Context) error {
			if b.seeded {
				return nil // the files came with the disk
			}
			if err := s.provision(ctx, vm, b.cli); err != nil {
				s.log.Warn("ssh provisioning", "vm", vm.Name, "err", err)
				b.obs.notice(fmt.Sprintf("ssh into %s will not work: %v", vm.Name, err))
			}
			return nil
		},
	}
}

func (s *Service) provision(ctx context.Context, vm *store.VM, c *agent.Client) error {
	if err := s.ensureHostKey(vm); err != nil {
		return err
	}
	files, err := s.sshFiles(vm)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return c.Provision(pctx, agent.Provision{Files: files, RestartUnits: []string{"ssh.service"}})
}

// sshFiles are the files that let banger ssh into vm: its host key (ensureHostKey made it),
// banger's client key as an authorized key, and the sshd settings.
func (s *Service) sshFiles(vm *store.VM) ([]agent.File, error) {
	userPub, err := sshkeys.EnsureUserKey(s.SSHKeyFile())
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

// diskSeed stages the ssh files for a new VM disk in a directory under the VM's, laid out as
// the guest's overlay upper layer (root/…), so they are in place before anything in the guest
// starts: no provisioning round trip and no sshd restart on the first boot. It returns the
// directory, for the caller to remove, or "" when the disk is not seeded: only a daemon running
// as root seeds disks, as mkfs.ext4 -d copies owners and sshd refuses a host key root does
// not own.
func (s *Service) diskSeed(vm *store.VM) (dir string, err error) {
	if os.Geteuid() != 0 {
		return "", nil
	}
	files, err := s.sshFiles(vm)
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

// writeSSHConfig rewrites banger's ssh_config with every VM that has an address.
func (s *Service) writeSSHConfig(ctx context.Context) {
	vms, err := s.store.ListVMs(context.WithoutCancel(ctx))
	if err != nil {
		return
	}
	var hosts []sshkeys.Host
	for _, vm := range vms {
		hosts = append(hosts, sshkeys.Host{Name: vm.Name})
	}
	if err := sshkeys.WriteConfig(s.SSHConfigFile(), s.SSHKeyFile(), s.KnownHostsFile(), s.cliPath, hosts); err != nil {
		s.log.Warn("write ssh_config", "err", err)
	}
}

// forgetSSH removes a deleted VM from known_hosts and ssh_config.
func (s *Service) forgetSSH(ctx context.Context, vm store.VM) {
	if err := sshkeys.RemoveKnownHost(s.KnownHostsFile(), hostAlias(vm.Name)); err != nil {
		s.log.Warn("known_hosts", "vm", vm.Name, "err", err)
	}
	s.writeSSHConfig(ctx)
}

// SSHTarget is what `banger vm ssh` needs to connect. The connection is carried through the
// daemon and the VM's agent (Dial with "tcp", GuestAddress), never to the guest's network
// address: that works whether or not the caller's network namespace routes to the bridge.
type SSHTarget struct {
	VM           store.VM
	GuestAddress string // where sshd listens, as the guest sees it: 127.0.0.1:22 mostly
	KeyFile      string
	KnownHosts   string
	HostAlias    string
}

// SSH returns how to reach a running VM's sshd, waiting (up to wait) until sshd listens.
func (s *Service) SSH(ctx context.Context, ref string, wait time.Duration) (SSHTarget, error) {
	vm, err := s.Resolve(ctx, ref)
	if err != nil {
		return SSHTarget{}, err
	}
	if vm.State != StateRunning {
		return SSHTarget{}, conflictf("vm %q is %s; start it first (`banger vm start %s`)", vm.Name, vm.State, vm.Name)
	}
	t := SSHTarget{VM: vm, KeyFile: s.SSHKeyFile(), KnownHosts: s.KnownHostsFile(), HostAlias: hostAlias(vm.Name)}
	deadline := time.Now().Add(wait)
	var ssh *agent.SSHStatus // what the agent recorded about sshd, once it has
	for {
		ports, err := s.Ports(ctx, vm.Name)
		if err == nil {
			if addr, ok := sshdAddress(ports); ok {
				t.GuestAddress = addr
				return t, nil
			}
		}
		if c, _, aerr := s.agentOf(ctx, vm.Name); aerr == nil {
			if h, herr := c.Health(ctx); herr == nil && h.SSH != nil {
				ssh = h.SSH
			}
		}
		if ssh != nil && ssh.State == agent.SSHUnavailable {
			// No point waiting: the agent found no sshd and could not install one.
			return t, conflictf("vm %q has no ssh server: %s; `banger vm exec %s -- COMMAND` needs none", vm.Name, ssh.Reason, vm.Name)
		}
		if time.Now().After(deadline) {
			if err != nil {
				return t, fmt.Errorf("vm %q: %w", vm.Name, err)
			}
			if ssh != nil && ssh.State == agent.SSHInstalling {
				return t, conflictf("vm %q: sshd is still being installed (%s) after %s; try again later, or use `banger vm exec %s -- COMMAND`", vm.Name, ssh.Via, wait, vm.Name)
			}
			return t, conflictf("vm %q: sshd is not listening on port 22 after %s; see `banger vm logs %s` (and `systemctl status ssh` through `banger vm exec %s`)", vm.Name, wait, vm.Name, vm.Name)
		}
		select {
		case <-ctx.Done():
			return t, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// sshdAddress is the address inside the guest to connect to sshd on port 22: loopback when
// sshd listens on every address (or on loopback), its own address otherwise.
func sshdAddress(ports []agent.Port) (string, bool) {
	found := ""
	for _, p := range ports {
		if p.Port != 22 || (p.Proto != "tcp" && p.Proto != "tcp6") {
			continue
		}
		ip := net.ParseIP(p.Addr)
		switch {
		case ip == nil:
			continue
		case ip.IsUnspecified() && p.Proto == "tcp", ip.Equal(net.IPv4(127, 0, 0, 1)):
			return "127.0.0.1:22", true // the best answer: no need to look further
		case ip.IsUnspecified(), ip.Equal(net.IPv6loopback):
			found = "[::1]:22"
		case found == "":
			found = net.JoinHostPort(p.Addr, "22")
		}
	}
	return found, found != ""
}

// Ports lists a running VM's listening sockets.
func (s *Service) Ports(ctx context.Context, ref string) ([]agent.Port, error) {
	c, vm, err := s.agentOf(ctx, ref)
	if err != nil {
		return nil, err
	}
	ports, err := c.Ports(ctx)
	if err != nil {
		return nil, fmt.Errorf("vm %q: %w", vm.Name, err)
	}
	return ports, nil
}

// ListenAddr is a TCP listening address in a guest, as Ports reports it.
type ListenAddr struct {
	Addr string // 0.0.0.0, ::, or a specific address
	Port int
}

// Bounds of SpeaksHTTP: a guest decides how many ports it lists and how slowly it answers.
const (
	httpProbeMax      = 32 // ports probed per call; the rest count as not HTTP
	httpProbeParallel = 8
	httpProbeTimeout  = 1500 * time.Millisecond
)

// SpeaksHTTP asks each listening address of a running VM, through its agent, whether an HTTP
// server answers there (a HEAD request, host as its Host header) and reports which did. A
// server that speaks first (sshd's banner), says anything but "HTTP/", or stays silent for
// httpProbeTimeout does not. At most httpProbeMax ports are probed.
func (s *Service) SpeaksHTTP(ctx context.Context, ref, host string, addrs []ListenAddr) []bool {
	out := make([]bool, len(addrs))
	sem := make(chan struct{}, httpProbeParallel)
	var wg sync.WaitGroup
	for i, a := range addrs {
		if i >= httpProbeMax {
			break
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i] = s.probeHTTP(ctx, ref, host, a)
		}()
	}
	wg.Wait()
	return out
}

func (s *Service) probeHTTP(ctx context.Context, ref, host string, a ListenAddr) bool {
	ctx, cancel := context.WithTimeout(ctx, httpProbeTimeout)
	defer cancel()
	addr := a.Addr
	if ip := net.ParseIP(addr); ip == nil {
		return false
	} else if ip.IsUnspecified() && ip.To4() != nil {
		addr = "127.0.0.1"
	} else if ip.IsUnspecified() {
		addr = "::1"
	}
	conn, _, err := s.Dial(ctx, ref, "tcp", net.JoinHostPort(addr, strconv.Itoa(a.Port)))
	if err != nil {
		return false
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() }) // bounds the write and the read
	defer stop()
	if _, err := io.WriteString(conn, "HEAD / HTTP/1.0\r\nHost: "+host+"\r\nUser-Agent: banger\r\n\r\n"); err != nil {
		return false
	}
	var b [5]byte
	_, err = io.ReadFull(conn, b[:])
	return err == nil && string(b[:]) == "HTTP/"
}

// Dial connects to network/address inside a running VM, through its agent.
func (s *Service) Dial(ctx context.Context, ref, network, address string) (net.Conn, store.VM, error) {
	c, vm, err := s.agentOf(ctx, ref)
	if err != nil {
		return nil, vm, err
	}
	conn, err := c.Dial(ctx, network, address)
	if err != nil {
		return nil, vm, fmt.Errorf("vm %q: %w", vm.Name, err)
	}
	return conn, vm, nil
}

// agentOf returns the agent session of a running VM.
func (s *Service) agentOf(ctx context.Context, ref string) (*agent.Client, store.VM, error) {
	vm, err := s.Resolve(ctx, ref)
	if err != nil {
		return nil, vm, err
	}
	in := s.instance(vm.ID)
	if vm.State != StateRunning || in == nil {
		return nil, vm, conflictf("vm %q is %s, not running", vm.Name, vm.State)
	}
	c, err := in.client(ctx)
	if err != nil {
		return nil, vm, fmt.Errorf("vm %q: %w", vm.Name, err)
	}
	return c, vm, nil
}
