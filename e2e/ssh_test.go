package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/banger-dev/banger/internal/sshkeys"
)

// outside runs name with the harness environment in a network namespace of its own that has
// only loopback and no route at all: nothing run there can send a packet to a guest's
// address (or anywhere else), so whatever works there reaches guests through banger's daemon
// socket and the VMs' agents. It stands for "the CLI outside the namespace that holds the
// bridge" without risking a packet on the host's routes.
func outside(t *testing.T, stdin io.Reader, name string, args ...string) result {
	t.Helper()
	ns := fmt.Sprintf("banger-e2e-out-%d", os.Getpid())
	if _, err := os.Stat("/run/netns/" + ns); err != nil {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
		}
		_ = exec.Command("ip", "-n", ns, "link", "set", "lo", "up").Run()
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	cmd := inNamespaceAsUser(ns, name, args...)
	cmd.Env = h.env
	cmd.Stdin = stdin
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
	defer mustBanger(t, "vm", "delete", "-f", "sshd")
	bin := filepath.Join(h.bin, "banger")

	r := outside(t, nil, bin, "vm", "ssh", "sshd", "--", "echo", "hello over ssh from", "$(hostname)")
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
	giveToUser(t, kh) // replaced by this (root) process
	r = outside(t, nil, bin, "vm", "ssh", "sshd", "--", "true")
	if r.code != 255 || !strings.Contains(r.stderr, "Host key verification failed") {
		t.Errorf("with a wrong known host key: exit %d stderr %q; want ssh's refusal", r.code, r.stderr)
	}
	_ = os.WriteFile(kh, orig, 0o600)
	giveToUser(t, kh)

	// banger's ssh_config makes plain `ssh sshd.vm`, scp and sftp work, through banger.
	cfg := filepath.Join(h.home, ".config", "banger", "ssh_config")
	if r := outside(t, nil, "ssh", "-F", cfg, "sshd.vm", "hostname"); r.code != 0 || strings.TrimSpace(r.stdout) != "sshd" {
		t.Errorf("ssh -F ssh_config sshd.vm: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	dir := userDir(t)
	in := filepath.Join(dir, "in.bin")
	payload := bytes.Repeat([]byte("banger scp \x00\xff\n"), 64<<10) // 1 MiB with every kind of byte
	if err := os.WriteFile(in, payload, 0o644); err != nil {
		t.Fatal(err)
	}
	giveToUser(t, in)
	if r := outside(t, nil, "scp", "-q", "-F", cfg, in, "sshd.vm:/root/in.bin"); r.code != 0 {
		t.Fatalf("scp in: exit %d %q", r.code, r.stderr)
	}
	if got := guest(t, "sshd", "sha256sum", "/root/in.bin"); !strings.HasPrefix(got, sha(t, in)) {
		t.Errorf("scp in: the guest has %q, want %s", got, sha(t, in))
	}
	back := filepath.Join(dir, "back.bin")
	if r := outside(t, nil, "scp", "-q", "-F", cfg, "sshd.vm:/root/in.bin", back); r.code != 0 {
		t.Fatalf("scp out: exit %d %q", r.code, r.stderr)
	}
	if sha(t, back) != sha(t, in) {
		t.Errorf("scp out: the copy differs from what went in")
	}
}

// TestShellModeRunOverAPty opens vm run's interactive shell on a real terminal, from outside
// the bridge's namespace: the prompt comes, a command runs in the shipped repository, and
// the shell's exit status is banger's.
func TestShellModeRunOverAPty(t *testing.T) {
	ensureWarm(t)
	repo := testRepo(t)
	ns := fmt.Sprintf("banger-e2e-out-%d", os.Getpid())
	outside(t, nil, "true") // makes the route-less namespace
	cmd := inNamespaceAsUser(ns, filepath.Join(h.bin, "banger"), "vm", "run", "--rm", repo)
	cmd.Env = append(append([]string{}, h.env...), "TERM=dumb")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 120})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var screen safeBuffer
	go func() { _, _ = io.Copy(&screen, f) }()
	deadline := time.Now().Add(4 * time.Minute)
	// The shell is up when it answers: type until the marker's computed value comes back.
	for !strings.Contains(screen.String(), "marker-42") {
		if time.Now().After(deadline) {
			t.Fatalf("no shell on the pty after 4 minutes; screen:\n%s", screen.String())
		}
		_, _ = f.Write([]byte("echo marker-$((6*7)) $(pwd)\n"))
		time.Sleep(2 * time.Second)
	}
	_, _ = f.Write([]byte("exit 7\n"))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("vm run did not end after the shell's exit; screen:\n%s", screen.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 7 || !strings.Contains(screen.String(), "marker-42 /root/proj") {
		t.Errorf("shell over a pty: exit %d; screen:\n%s", code, screen.String())
	}
	assertNothingLeft(t)
}

// safeBuffer is a bytes.Buffer safe for one writer and one reader.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPortsAndForward(t *testing.T) {
	ensureWarm(t)
	mustBanger(t, "vm", "create", "--name", "fwd", "--memory", "768M", "--no-nat")
	defer mustBanger(t, "vm", "delete", "-f", "fwd")
	// A service on the guest's loopback only: forwarding reaches it, the network would not.
	hello := "while IFS= read -r l; do l=${l%$(printf '\\r')}; [ -n \"$l\" ] || break; done\n" +
		"printf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nforwarded\\n'\n"
	// The same service on every address: vm ports offers its URL (it answers HTTP), where sshd
	// gets its address alone.
	if r, err := bangerStdin(strings.NewReader(hello), nil, "vm", "exec", "fwd", "--", "sh", "-c",
		"cat > /usr/local/bin/http-hello; for l in 127.0.0.1:9090 0.0.0.0:9091; do setsid systemd-socket-activate -l $l -a --inetd sh /usr/local/bin/http-hello >/dev/null 2>&1 </dev/null & done"); err != nil || r.code != 0 {
		t.Fatalf("start server: %v %+v", err, r)
	}

	waitFor(t, func() bool {
		r := mustBanger(t, "vm", "ports", "fwd")
		return strings.Contains(r.stdout, "9090") && strings.Contains(r.stdout, "9091") && strings.Contains(r.stdout, "fwd.vm:22")
	}, "ports 9090, 9091 and 22 (sshd starts late in the boot) in vm ports")
	r := mustBanger(t, "vm", "ports", "fwd")
	if !strings.Contains(r.stdout, " fwd.vm:22") || strings.Contains(r.stdout, "http://fwd.vm:22") || !strings.Contains(r.stdout, "sshd") {
		t.Errorf("vm ports: sshd must be listed with fwd.vm:22 and no URL:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "http://fwd.vm:9091") || strings.Contains(r.stdout, "fwd.vm:9090") {
		t.Errorf("vm ports: the HTTP service on every address must have its URL, the loopback one nothing:\n%s", r.stdout)
	}

	cmd := bangerCommand("vm", "forward", "fwd", "18090:9090")
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
