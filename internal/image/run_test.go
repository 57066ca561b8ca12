package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

func TestToolRunLogsOutput(t *testing.T) {
	var log bytes.Buffer
	var lines []string
	tl := &tool{log: &log, env: toolEnv(t.TempDir()), onLine: func(l string) { lines = append(lines, l) }}
	if err := tl.run(context.Background(), "sh", "-c", "echo out; echo err >&2; printf 'no newline'"); err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, want := range []string{"$ sh -c", "out\n", "err\n", "no newline\n"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log %q lacks %q", log.String(), want)
		}
	}
	if len(lines) != 3 {
		t.Errorf("onLine saw %q, want 3 lines", lines)
	}
}

func TestToolRunFailureQuotesTheLastLines(t *testing.T) {
	var log bytes.Buffer
	tl := &tool{log: &log, env: toolEnv(t.TempDir())}
	err := tl.run(context.Background(), "sh", "-c", "for i in $(seq 1 30); do echo line $i; done; exit 3")
	var te *toolError
	if !errors.As(err, &te) {
		t.Fatalf("run error = %v, want a *toolError", err)
	}
	if te.Status != "exit 3" {
		t.Errorf("status = %q, want exit 3", te.Status)
	}
	if len(te.Tail) != tailLines || te.Tail[0] != "line 21" || te.Tail[tailLines-1] != "line 30" {
		t.Errorf("tail = %q, want lines 21..30", te.Tail)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "sh failed (exit 3)") || !strings.Contains(msg, "line 30") || strings.Contains(msg, "line 20\n") {
		t.Errorf("message = %q", msg)
	}
}

// Cancelling a tool kills its whole process group, including children that ignore SIGTERM.
func TestToolRunCancelKillsTheProcessGroup(t *testing.T) {
	old := termGrace
	termGrace = 200 * time.Millisecond
	defer func() { termGrace = old }()

	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	script := fmt.Sprintf(`trap "" TERM; sleep 300 & echo $! > %s; echo started; wait`, pidFile)
	ctx, cancel := context.WithCancel(context.Background())
	tl := &tool{log: &bytes.Buffer{}, env: toolEnv(dir), onLine: func(l string) {
		if l == "started" {
			cancel()
		}
	}}
	// Everything in the group ignores SIGTERM, so run returns only if the SIGKILL that
	// follows the grace period comes.
	done := make(chan error, 1)
	go func() { done <- tl.run(ctx, "sh", "-c", script) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("run error = %v, want context.Canceled", err)
		}
	case <-time.After(time.Minute): // a guard against hanging, not a timing check
		t.Fatal("run did not return after cancel: the group was not killed after the grace period")
	}
	assertDead(t, pidFile)
}

// A child left behind by a tool that exits successfully is killed too.
func TestToolRunKillsStragglers(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	tl := &tool{log: &bytes.Buffer{}, env: toolEnv(dir)}
	script := fmt.Sprintf(`sleep 300 & echo $! > %s`, pidFile)
	if err := tl.run(context.Background(), "sh", "-c", script); err != nil {
		t.Fatalf("run: %v", err)
	}
	assertDead(t, pidFile)
}

// assertDead checks that the process whose pid is in pidFile has exited, or exits: the tool
// sent it SIGKILL before returning, which takes effect at once but not synchronously. It waits
// through a pidfd, readable once the process has exited (a zombie too: a killed child of the
// exited shell is reaped by init).
func assertDead(t *testing.T, pidFile string) {
	t.Helper()
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("child never started: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return // exited and reaped
	}
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 10_000) // a guard against hanging, not a timing check
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("wait for %d: %v", pid, err)
		}
		if n == 0 {
			_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			t.Fatalf("child %d still running after the tool returned", pid)
		}
		return
	}
}

func TestLookTool(t *testing.T) {
	if _, err := lookTool("sh"); err != nil {
		t.Errorf("lookTool(sh): %v", err)
	}
	if _, err := lookTool("no-such-tool-banger"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("lookTool(missing) = %v, want not found", err)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{`/a/b`: "/a/b", `/with\040space`: "/with space", `/trail\04`: `/trail\04`, `/back\134slash`: `/back\slash`} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestShorten(t *testing.T) {
	long := strings.Repeat("é", 200) // 400 bytes
	got := shorten(long, maxTailLine)
	if len(got) > maxTailLine+len(" …") || !strings.HasSuffix(got, " …") || !utf8.ValidString(got) {
		t.Errorf("shorten gave %d bytes %q", len(got), got)
	}
	if shorten("short", 10) != "short" {
		t.Errorf("shorten changed a short line")
	}
}
