package guestagent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/agent"
)

func TestInitAction(t *testing.T) {
	tests := []struct {
		sig  os.Signal
		want string
	}{
		{syscall.SIGUSR2, actionPoweroff}, // busybox poweroff
		{syscall.SIGUSR1, actionPoweroff}, // busybox halt
		{sigRTPoweroff, actionPoweroff},   // systemctl poweroff convention; the agent's own request
		{sigHalt, actionPoweroff},
		{syscall.SIGPWR, actionPoweroff},
		{syscall.SIGTERM, actionReboot}, // busybox reboot
		{syscall.SIGINT, actionReboot},  // Ctrl-Alt-Del
		{sigReboot, actionReboot},
		{syscall.SIGHUP, actionNone},
	}
	for _, tt := range tests {
		if got := initAction(tt.sig); got != tt.want {
			t.Errorf("initAction(%v) = %q; want %q", tt.sig, got, tt.want)
		}
	}
}

func TestCmdlineValue(t *testing.T) {
	c := "console=ttyS0 banger.lower=vda systemd.hostname=dev-box quiet"
	if got := cmdlineValue(c, "systemd.hostname"); got != "dev-box" {
		t.Errorf("hostname = %q", got)
	}
	if got := cmdlineValue(c, "quiet"); got != "" {
		t.Errorf("flag without value = %q", got)
	}
}

// fakeSSH is an sshEnv over a temporary root that records what it runs.
type fakeSSH struct {
	sshEnv
	ran    []string
	states []agent.SSHStatus
}

func newFakeSSH(t *testing.T, route bool, files ...string) *fakeSSH {
	f := &fakeSSH{}
	root := t.TempDir()
	for _, p := range files {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), []byte("#!"), 0o755)
	}
	f.sshEnv = sshEnv{
		root: root, hasRoute: func() bool { return route }, waitRoute: 30 * time.Millisecond, pollRoute: 5 * time.Millisecond,
		logf:       t.Logf,
		writeState: func(st agent.SSHStatus) { f.states = append(f.states, st) },
		run: func(ctx context.Context, argv ...string) (string, error) {
			f.ran = append(f.ran, strings.Join(argv, " "))
			if argv[0] == "apk" { // the install puts sshd in place
				os.MkdirAll(filepath.Join(root, "usr/sbin"), 0o755)
				os.WriteFile(filepath.Join(root, "usr/sbin/sshd"), []byte("#!"), 0o755)
			}
			if argv[0] == "dnf" {
				return "Error: Failed to download metadata for repo\n", errors.New("exit status 1")
			}
			return "", nil
		},
	}
	return f
}

func (f *fakeSSH) last() agent.SSHStatus { return f.states[len(f.states)-1] }

func TestEnsureSSH(t *testing.T) {
	t.Run("image has sshd, agent is init: keys then sshd", func(t *testing.T) {
		f := newFakeSSH(t, false, "usr/sbin/sshd")
		f.ensure(context.Background())
		if got := strings.Join(f.ran, "; "); got != "ssh-keygen -q -t ed25519 -N  -f /etc/ssh/ssh_host_ed25519_key; /usr/sbin/sshd" || f.last().State != agent.SSHRunning {
			t.Errorf("ran %q, state %+v", got, f.last())
		}
	})
	t.Run("a host key provided by banger is kept", func(t *testing.T) {
		f := newFakeSSH(t, false, "usr/sbin/sshd", "etc/ssh/ssh_host_ed25519_key")
		f.ensure(context.Background())
		if got := strings.Join(f.ran, "; "); got != "/usr/sbin/sshd" {
			t.Errorf("ran %q; want only sshd", got)
		}
	})
	t.Run("image has sshd under systemd: its unit runs it", func(t *testing.T) {
		f := newFakeSSH(t, false, "usr/sbin/sshd")
		f.systemd = true
		f.ensure(context.Background())
		if len(f.ran) != 0 || f.last().State != agent.SSHRunning {
			t.Errorf("ran %q, state %+v; want nothing run", f.ran, f.last())
		}
	})
	t.Run("no sshd, no network: a clear reason", func(t *testing.T) {
		f := newFakeSSH(t, false, "sbin/apk")
		f.ensure(context.Background())
		st := f.last()
		if st.State != agent.SSHUnavailable || !strings.Contains(st.Reason, "no default route") || !strings.Contains(st.Reason, "apk add --no-cache openssh-server") || !strings.Contains(st.Reason, "banger vm exec") {
			t.Errorf("state %+v; want unavailable saying there is no network, what would install it and what still works", st)
		}
		if len(f.ran) != 0 {
			t.Errorf("ran %q without a network", f.ran)
		}
	})
	t.Run("no sshd, network: apk installs it, then it starts", func(t *testing.T) {
		f := newFakeSSH(t, true, "sbin/apk")
		f.ensure(context.Background())
		if got := strings.Join(f.ran, "; "); got != "apk add --no-cache openssh-server; ssh-keygen -q -t ed25519 -N  -f /etc/ssh/ssh_host_ed25519_key; /usr/sbin/sshd" {
			t.Errorf("ran %q", got)
		}
		if st := f.last(); st.State != agent.SSHRunning || st.Via != "apk add --no-cache openssh-server" || f.states[0].State != agent.SSHInstalling {
			t.Errorf("states %+v", f.states)
		}
	})
	t.Run("install fails: the package manager's words", func(t *testing.T) {
		f := newFakeSSH(t, true, "usr/bin/dnf")
		f.ensure(context.Background())
		if st := f.last(); st.State != agent.SSHUnavailable || !strings.Contains(st.Reason, "Failed to download metadata") {
			t.Errorf("state %+v", st)
		}
	})
	t.Run("no package manager", func(t *testing.T) {
		f := newFakeSSH(t, true)
		f.ensure(context.Background())
		if st := f.last(); st.State != agent.SSHUnavailable || !strings.Contains(st.Reason, "no package manager") {
			t.Errorf("state %+v", st)
		}
	})
}
