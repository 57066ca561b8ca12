package e2e

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/sshkeys"
)

// bangerInNetns runs the CLI inside the test's network namespace, where the VMs' addresses
// are reachable (ssh needs that; everything else goes through the daemon's socket).
func bangerInNetns(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.netns, filepath.Join(h.bin, "banger")}, args...)...)
	cmd.Env = h.env
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSSHWithoutPromptsAndAMismatchIsRefused(t *testing.T) {
	ensureWarm(t)
	mustBanger(t, "vm", "create", "--name", "sshd", "--memory", "768M")
	defer mustBanger(t, "vm", "delete", "sshd")

	r := bangerInNetns(t, "vm", "ssh", "sshd", "--", "echo", "hello over ssh from", "$(hostname)")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "hello over ssh from sshd" {
		t.Fatalf("vm ssh: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	// Password logins are off; root logs in by key only.
	if got := guest(t, "sshd", "sshd", "-T"); !strings.Contains(got, "passwordauthentication no") || !strings.Contains(got, "permitrootlogin without-password") {
		t.Errorf("sshd settings:\n%s", got)
	}
	// The recorded host key is the one the guest serves: swap it for another, ssh refuses.
	kh := filepath.Join(stateDir(), "ssh", "known_hosts")
	orig, err := os.ReadFile(kh)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := sshkeys.Generate("")
	line, _ := sshkeys.HostKeyLine([]string{"sshd.vm"}, other.Public)
	if err := sshkeys.SetKnownHost(kh, "sshd.vm", line); err != nil {
		t.Fatal(err)
	}
	r = bangerInNetns(t, "vm", "ssh", "sshd", "--", "true")
	if r.code != 255 || !strings.Contains(r.stderr, "Host key verification failed") {
		t.Errorf("with a wrong known host key: exit %d stderr %q; want ssh's refusal", r.code, r.stderr)
	}
	_ = os.WriteFile(kh, orig, 0o600)

	// banger's ssh_config makes plain `ssh sshd.vm` work.
	cfg := filepath.Join(h.home, ".config", "banger", "ssh_config")
	out, err := exec.Command("ip", "netns", "exec", h.netns, "ssh", "-F", cfg, "sshd.vm", "hostname").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "sshd" {
		t.Errorf("ssh -F ssh_config sshd.vm: %v %s", err, out)
	}
}

func TestPortsAndForward(t *testing.T) {
	ensureWarm(t)
	mustBanger(t, "vm", "create", "--name", "fwd", "--memory", "768M", "--no-nat")
	defer mustBanger(t, "vm", "delete", "fwd")
	// A service on the guest's loopback only: forwarding reaches it, the network would not.
	hello := "while IFS= read -r l; do l=${l%$(printf '\\r')}; [ -n \"$l\" ] || break; done\n" +
		"printf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nforwarded\\n'\n"
	if r, err := bangerStdin(strings.NewReader(hello), nil, "vm", "exec", "fwd", "--", "sh", "-c",
		"cat > /usr/local/bin/http-hello; setsid systemd-socket-activate -l 127.0.0.1:9090 -a --inetd sh /usr/local/bin/http-hello >/dev/null 2>&1 </dev/null &"); err != nil || r.code != 0 {
		t.Fatalf("start server: %v %+v", err, r)
	}

	waitFor(t, func() bool {
		r := mustBanger(t, "vm", "ports", "fwd")
		return strings.Contains(r.stdout, "9090") && strings.Contains(r.stdout, "http://fwd.vm:22")
	}, "ports 9090 and 22 (sshd starts late in the boot) in vm ports")
	r := mustBanger(t, "vm", "ports", "fwd")
	if !strings.Contains(r.stdout, "http://fwd.vm:22") || !strings.Contains(r.stdout, "sshd") {
		t.Errorf("vm ports lacks sshd with its URL:\n%s", r.stdout)
	}

	cmd := exec.Command(filepath.Join(h.bin, "banger"), "vm", "forward", "fwd", "18090:9090")
	cmd.Env = h.env
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }()
	line, _ := bufio.NewReader(stderr).ReadString('\n')
	if !strings.Contains(line, "forwarding 127.0.0.1:18090") {
		t.Fatalf("vm forward said %q", line)
	}
	go io.Copy(io.Discard, stderr)
	for i := 0; i < 3; i++ { // several connections through one forward
		resp, err := http.Get("http://127.0.0.1:18090/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.TrimSpace(string(body)) != "forwarded" {
			t.Errorf("through the forward: %q", body)
		}
	}
}
