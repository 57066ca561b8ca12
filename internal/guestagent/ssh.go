package guestagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/agent"
)

// SSHStatusFile is where the agent records, in the guest, whether sshd runs and why not: JSON
// of agent.SSHStatus (the protocol's type: the health reply carries it). `banger vm ssh` (and anyone else) reads it through the agent to explain a
// refused connection; agent commands never need sshd.
const SSHStatusFile = "/run/banger/ssh.json"

// sshEnv is what EnsureSSH looks at and runs; tests replace it.
type sshEnv struct {
	root       string      // "/" in a guest
	systemd    bool        // systemd is PID 1
	hasRoute   func() bool // the guest has a default route
	run        func(ctx context.Context, argv ...string) (string, error)
	waitRoute  time.Duration // how long to wait for a network
	pollRoute  time.Duration
	logf       func(string, ...any)
	writeState func(agent.SSHStatus)
}

// installers are the package managers EnsureSSH knows, in the order it looks for them.
var installers = []struct {
	bin  string
	argv [][]string
}{
	{"/sbin/apk", [][]string{{"apk", "add", "--no-cache", "openssh-server"}}},
	{"/usr/bin/apt-get", [][]string{{"apt-get", "update", "-q"}, {"apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server"}}},
	{"/usr/bin/dnf", [][]string{{"dnf", "install", "-y", "openssh-server"}}},
	{"/usr/bin/microdnf", [][]string{{"microdnf", "install", "-y", "openssh-server"}}},
	{"/usr/bin/yum", [][]string{{"yum", "install", "-y", "openssh-server"}}},
}

var sshdPaths = []string{"/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"}

// hostKey is the host key sshd gets when the image's init is the agent.
const hostKey = "/etc/ssh/ssh_host_ed25519_key"

// EnsureSSH makes sure sshd runs in the guest, recording the outcome in SSHStatusFile: an
// sshd the image has is started (under systemd, its own unit does that); an image without one
// gets it from its own package manager (apk, apt-get, dnf, microdnf, yum) once the guest has
// a network, i.e. a default route, which it waits a minute for. Installed packages land on
// the VM's disk, so this happens on the first boot only. When sshd cannot be had, the status
// says why, and everything else (agent commands) works as before.
func EnsureSSH(ctx context.Context, logf func(string, ...any)) {
	b, _ := os.ReadFile("/proc/1/comm")
	env := sshEnv{
		root:      "/",
		systemd:   strings.TrimSpace(string(b)) == "systemd",
		hasRoute:  hasDefaultRoute,
		run:       runLogged,
		waitRoute: time.Minute,
		pollRoute: time.Second,
		logf:      logf,
		writeState: func(st agent.SSHStatus) {
			data, _ := json.Marshal(st)
			_ = os.MkdirAll(filepath.Dir(SSHStatusFile), 0o755)
			_ = os.WriteFile(SSHStatusFile, append(data, '\n'), 0o644)
		},
	}
	if _, err := os.Stat(SSHStatusFile); err == nil {
		return // done earlier in this boot (the agent server restarted)
	}
	env.ensure(ctx)
}

func (e sshEnv) ensure(ctx context.Context) {
	st := agent.SSHStatus{Time: time.Now().UTC()}
	sshd := e.findSshd()
	if sshd != "" && e.systemd {
		// The image's own unit starts it, ordered as the image wants.
		st.State, st.Sshd, st.Via = agent.SSHRunning, sshd, "the image's systemd unit"
		e.writeState(st)
		return
	}
	if sshd == "" {
		var via string
		var err error
		sshd, via, err = e.install(ctx)
		if err != nil {
			st.State, st.Reason = agent.SSHUnavailable, err.Error()
			e.logf("ssh: %s", st.Reason)
			e.writeState(st)
			return
		}
		st.Via = via
	}
	st.Sshd = sshd
	if err := e.start(ctx, sshd); err != nil {
		st.State, st.Reason = agent.SSHUnavailable, err.Error()
	} else {
		st.State = agent.SSHRunning
	}
	st.Time = time.Now().UTC()
	e.writeState(st)
}

func (e sshEnv) findSshd() string {
	for _, p := range sshdPaths {
		if fi, err := os.Stat(filepath.Join(e.root, p)); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// install installs openssh-server with the image's package manager, once there is a network.
func (e sshEnv) install(ctx context.Context) (sshd, via string, err error) {
	var argvs [][]string
	for _, in := range installers {
		if _, err := os.Stat(filepath.Join(e.root, in.bin)); err == nil {
			argvs = in.argv
			break
		}
	}
	if argvs == nil {
		return "", "", errors.New("the image has no sshd and no package manager (apk, apt-get, dnf, microdnf, yum) to install one; use `banger vm exec`, or add openssh-server to the image")
	}
	var words []string
	for _, a := range argvs {
		words = append(words, strings.Join(a, " "))
	}
	via = strings.Join(words, " && ")
	deadline := time.Now().Add(e.waitRoute)
	for !e.hasRoute() {
		if time.Now().After(deadline) {
			return "", "", fmt.Errorf("the image has no sshd, and installing it (%s) needs a network, but the guest has none (no default route after %s); use `banger vm exec`, or add openssh-server to the image", via, e.waitRoute)
		}
		select {
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-time.After(e.pollRoute):
		}
	}
	e.writeState(agent.SSHStatus{State: agent.SSHInstalling, Via: via, Time: time.Now().UTC()})
	e.logf("ssh: installing sshd: %s", via)
	for _, argv := range argvs {
		if out, err := e.run(ctx, argv...); err != nil {
			return "", "", fmt.Errorf("installing sshd failed: %s: %v: %s", strings.Join(argv, " "), err, lastLines(out, 3))
		}
	}
	if sshd = e.findSshd(); sshd == "" {
		return "", "", fmt.Errorf("%s succeeded but no sshd is installed", via)
	}
	return sshd, via, nil
}

// start runs sshd: through its systemd unit under systemd, else directly (it daemonizes and
// init adopts it), with host keys generated first.
func (e sshEnv) start(ctx context.Context, sshd string) error {
	if e.systemd {
		// A freshly installed sshd is enabled for the next boots and started now.
		for _, unit := range []string{"ssh.service", "sshd.service"} {
			if _, err := e.run(ctx, "systemctl", "enable", "--now", unit); err == nil {
				return nil
			}
		}
		return errors.New("sshd is installed but neither ssh.service nor sshd.service could be started")
	}
	// An ed25519 host key only, and only if banger has not provided one: RSA keys take seconds
	// to make under software emulation.
	if _, err := os.Stat(filepath.Join(e.root, hostKey)); err != nil {
		if out, err := e.run(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey); err != nil {
			return fmt.Errorf("generate an ssh host key: %v: %s", err, lastLines(out, 3))
		}
	}
	_ = os.MkdirAll(filepath.Join(e.root, "run/sshd"), 0o755) // Debian's privilege separation dir
	if out, err := e.run(ctx, sshd); err != nil {
		return fmt.Errorf("start %s: %v: %s", sshd, err, lastLines(out, 3))
	}
	return nil
}

// hasDefaultRoute reports whether the guest has an IPv4 or IPv6 default route.
func hasDefaultRoute() bool {
	if b, err := os.ReadFile("/proc/net/route"); err == nil {
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if f := strings.Fields(line); len(f) > 7 && f[1] == "00000000" && f[7] == "00000000" {
				return true
			}
		}
	}
	if b, err := os.ReadFile("/proc/net/ipv6_route"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 9 && f[0] == strings.Repeat("0", 32) && f[1] == "00" && f[9] != "lo" {
				return true
			}
		}
	}
	return false
}

// runLogged runs a command with a sane PATH and returns its combined output.
func runLogged(ctx context.Context, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=" + defaultPath, "HOME=/root", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
