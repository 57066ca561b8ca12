package vmservice

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/steps"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmssh"
)

// StepProvision is the start step that gives the guest banger's ssh setup.
const StepProvision = "provision"

// SSHAccess keeps banger's ssh files; package vmssh implements it. Its methods work on local
// files only and return once they are written.
type SSHAccess interface {
	// KnownHostsFile, ConfigFile and ClientKeyFile are the paths of banger's known_hosts,
	// its ssh_config (for users to include) and the client key it authorizes in guests.
	KnownHostsFile() string
	ConfigFile() string
	ClientKeyFile() string
	// EnsureHostKey makes the VM's host key (once) and records it in known_hosts.
	EnsureHostKey(vm vmssh.VM) error
	// GuestFiles are what the guest needs for ssh: host key, authorized client key, sshd
	// settings.
	GuestFiles(vm vmssh.VM) ([]agent.File, error)
	// Seed stages GuestFiles for a new VM disk and returns the directory for the caller to
	// remove, or "" when disks are not seeded; on failure nothing is left.
	Seed(vm vmssh.VM) (dir string, err error)
	// WriteConfig rewrites ssh_config with an entry for each VM name; Forget removes a VM's
	// host key from known_hosts.
	WriteConfig(names []string) error
	Forget(name string) error
}

// sshVM is vm as its ssh access sees it.
func sshVM(vm *store.VM) vmssh.VM { return vmssh.VM{Name: vm.Name, Dir: vm.Dir, IP: vm.IP} }

// SSHConfigFile is banger's ssh_config, for users to include.
func (s *Service) SSHConfigFile() string { return s.ssh.ConfigFile() }

// provisionStep puts banger's client key, the VM's host key and the sshd settings into the
// guest as soon as its agent answers, and restarts sshd if it is up already. A VM whose new
// disk was seeded with them (SSHAccess.Seed) skips it on that first boot; later starts
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
	if err := s.ssh.EnsureHostKey(sshVM(vm)); err != nil {
		return err
	}
	files, err := s.ssh.GuestFiles(sshVM(vm))
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return c.Provision(pctx, agent.Provision{Files: files, RestartUnits: []string{"ssh.service"}})
}

// writeSSHConfig rewrites banger's ssh_config with every VM.
func (s *Service) writeSSHConfig(ctx context.Context) {
	vms, err := s.store.ListVMs(context.WithoutCancel(ctx))
	if err != nil {
		return
	}
	var names []string
	for _, vm := range notSpares(vms) {
		names = append(names, vm.Name)
	}
	if err := s.ssh.WriteConfig(names); err != nil {
		s.log.Warn("write ssh_config", "err", err)
	}
}

// forgetSSH removes a deleted VM from known_hosts and ssh_config.
func (s *Service) forgetSSH(ctx context.Context, vm store.VM) {
	if err := s.ssh.Forget(vm.Name); err != nil {
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
	t := SSHTarget{VM: vm, KeyFile: s.ssh.ClientKeyFile(), KnownHosts: s.ssh.KnownHostsFile(), HostAlias: vmssh.HostAlias(vm.Name)}
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
