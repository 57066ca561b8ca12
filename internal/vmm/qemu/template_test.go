package qemu

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// envTemplateChild makes the test binary a process that starts a template, prints its pid and
// waits to be killed (TestTemplateDiesWithItsParent).
const envTemplateChild = "BANGER_TEST_TEMPLATE_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(envTemplateChild); dir != "" {
		sh := shape{VCPU: 1, MemoryMiB: 64, Accel: "tcg", NIC: true}
		bin, err := exec.LookPath(DefaultBinary)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		exe, err := os.Open(bin)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		t, err := startTemplate(context.Background(), exe, sh, filepath.Join(dir, memoryFile), nil)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("pid", t.pid)
		select {}
	}
	os.Exit(m.Run())
}

// TestTemplateDiesWithItsParent kills (SIGKILL) a process that has a template running, as a
// daemon killed during a snapshot is, and checks that the template goes too: nothing of a
// snapshot is left running after a kill -9, only the memory file in the staging directory the
// next daemon removes.
func TestTemplateDiesWithItsParent(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envTemplateChild+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("the child printed no pid: %v", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != "pid" {
		t.Fatalf("the child: %s", line)
	}
	pid, _ := strconv.Atoi(f[1])
	st, err := vmm.StartTime(pid)
	if err != nil {
		t.Fatalf("the template (pid %d) does not run: %v", pid, err)
	}
	proc, err := vmm.Watch(pid, st)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	select {
	case <-proc.Done():
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("the template (pid %d) still runs 30s after its parent was killed", pid)
	}
	if _, err := os.Stat(filepath.Join(dir, memoryFile)); err != nil {
		t.Errorf("the memory file: %v; want it left for the staging area's cleanup", err)
	}
}
