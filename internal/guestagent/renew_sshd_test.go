package guestagent

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHelperFakeSshd is not a test: run by the tests below as a child process, it behaves
// as sshd does on SIGHUP (BANGER_FAKE_SSHD=reexec: it says "hup", and when its stdin gives it
// a line, closes its listener and listens anew) or dies of it (BANGER_FAKE_SSHD=die). It
// listens on loopback only and ends when stdin closes.
func TestHelperFakeSshd(t *testing.T) {
	mode := os.Getenv("BANGER_FAKE_SSHD")
	if mode == "" {
		t.Skip("a helper process for the sshd reload tests")
	}
	hup := make(chan os.Signal, 1)
	if mode == "reexec" {
		signal.Notify(hup, syscall.SIGHUP)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for {
		select {
		case <-hup:
			fmt.Println("hup")
			if _, ok := <-lines; !ok {
				os.Exit(0)
			}
			ln.Close()
			if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
				os.Exit(1)
			}
		case _, ok := <-lines:
			if !ok {
				os.Exit(0)
			}
		}
	}
}

func startFakeSshd(t *testing.T, mode string) (*exec.Cmd, io.Writer, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperFakeSshd$")
	cmd.Env = append(os.Environ(), "BANGER_FAKE_SSHD="+mode)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	out := bufio.NewReader(stdout)
	if line, _ := out.ReadString('\n'); line != "ready\n" {
		t.Fatalf("fake sshd: %q", line)
	}
	return cmd, stdin, out
}

// Reloading sshd returns once it listens on new sockets, i.e. once it has read its files
// again, not while it still holds its old ones.
func TestReloadSshdWaitsForNewListeners(t *testing.T) {
	cmd, stdin, out := startFakeSshd(t, "reexec")
	pid := cmd.Process.Pid
	before := listeners("/proc", pid)
	if len(before) != 1 {
		t.Fatalf("listeners before: %v", before)
	}
	done := make(chan error, 1)
	// The wait is a guard against hanging the suite, not a timing check.
	go func() { done <- reloadSshd("/proc", pid, time.Minute) }()
	hup := make(chan string, 1)
	go func() { line, _ := out.ReadString('\n'); hup <- line }()
	select {
	case line := <-hup:
		if line != "hup\n" {
			t.Fatalf("fake sshd: %q, want hup", line)
		}
	case err := <-done:
		t.Fatalf("reloadSshd returned (%v) before sshd had its signal", err)
	}
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("reloadSshd: %v", err)
	}
	after := listeners("/proc", pid)
	if len(after) != 1 {
		t.Fatalf("listeners after: %v", after)
	}
	for inode := range after {
		if before[inode] {
			t.Errorf("reloadSshd returned while sshd held its old listener %s", inode)
		}
	}
}

// An sshd that dies of the reload (a broken host key) is an error, found without waiting for
// the deadline.
func TestReloadSshdReportsAnSshdThatDied(t *testing.T) {
	cmd, _, _ := startFakeSshd(t, "die")
	err := reloadSshd("/proc", cmd.Process.Pid, time.Minute) // a guard, not a timing check
	if err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("reloadSshd = %v, want an error saying sshd exited", err)
	}
}

// The reload is over only when sshd listens on sockets that are all new: not while it holds
// its old ones, nor between closing them and opening new ones.
func TestSshdReloadWaitsUntilEveryListenerIsNew(t *testing.T) {
	seen := []map[string]bool{
		{"1": true, "2": true}, // before the signal
		{"1": true, "2": true}, // the signal not handled yet
		{"2": true, "3": true}, // half done
		{},                     // between its exec and its new listeners
		{"3": true, "4": true},
		{"5": true}, // never read: the reload is over
	}
	calls, signalled := 0, false
	r := sshdReload{
		pid:    7,
		signal: func() error { signalled = true; return nil },
		listeners: func() map[string]bool {
			calls++
			return seen[calls-1]
		},
		alive: func() bool { return true },
	}
	if err := r.run(time.Hour); err != nil || !signalled || calls != 5 {
		t.Fatalf("run = %v after %d looks (signalled %v), want nil after 5", err, calls, signalled)
	}
	gone := sshdReload{pid: 7, signal: func() error { return syscall.ESRCH },
		listeners: func() map[string]bool { return nil }, alive: func() bool { return false }}
	if err := gone.run(time.Hour); err != nil {
		t.Errorf("an sshd gone before the signal: %v, want nothing to do", err)
	}
}

// An sshd that re-executes itself per connection reads the host keys anew each time: it
// needs no reload (under emulation a reload costs seconds). One told not to (-r), or an
// OpenSSH with sshd-session (9.8 on), does.
func TestReadsKeysPerConnection(t *testing.T) {
	root, proc := t.TempDir(), t.TempDir()
	cmdline := func(pid string, args ...string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(proc, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, pid, "cmdline"), []byte(strings.Join(args, "\x00")+"\x00"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmdline("10", "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups")
	cmdline("11", "/usr/sbin/sshd", "-D", "-r")
	if !readsKeysPerConnection(root, proc, 10) {
		t.Error("an sshd re-executing per connection was said to need a reload")
	}
	if readsKeysPerConnection(root, proc, 11) {
		t.Error("an sshd run with -r was said to read keys per connection")
	}
	if readsKeysPerConnection(root, proc, 12) {
		t.Error("an sshd whose command line cannot be read was said to need no reload")
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/lib/openssh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/lib/openssh/sshd-session"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if readsKeysPerConnection(root, proc, 10) {
		t.Error("an OpenSSH with sshd-session was said to read keys per connection")
	}
}
