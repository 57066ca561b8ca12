package userns_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/banger-dev/banger/internal/userns"
	"github.com/banger-dev/banger/internal/userns/usernstest"
)

func TestMain(m *testing.M) {
	userns.Init()
	os.Exit(m.Run())
}

func init() {
	// Makes files with the ownership an image needs: root's setuid file, a file of uid 1000,
	// group 42.
	userns.Register("userns.test-make", func(args []string) error {
		dir := args[0]
		if os.Getuid() != 0 {
			return fmt.Errorf("uid %d inside, want 0", os.Getuid())
		}
		for _, f := range []struct {
			name     string
			uid, gid int
			mode     os.FileMode
		}{{"suid", 0, 0, 0o4755 | os.ModeSetuid}, {"user", 1000, 1000, 0o640}, {"shadow", 0, 42, 0o640}} {
			p := filepath.Join(dir, f.name)
			if err := os.WriteFile(p, []byte(f.name), 0o600); err != nil {
				return err
			}
			if err := os.Chown(p, f.uid, f.gid); err != nil {
				return err
			}
			if err := os.Chmod(p, f.mode); err != nil {
				return err
			}
		}
		return nil
	})
}

// As an ordinary user with subordinate ids, code inside the namespace creates files owned by
// any id, with setuid bits; on the host they are owned by the caller (inside root) and by its
// subordinate ids; a tool run inside sees them as the image should record them.
func TestNamespaceOwnership(t *testing.T) {
	if dir, ok := usernstest.InChild(); ok {
		childOwnership(t, dir)
		return
	}
	u := usernstest.User(t)
	dir := usernstest.Dir(t, u)
	out, ok := usernstest.Run(t, u, "TestNamespaceOwnership", dir)
	t.Logf("as %s:\n%s", u.Username, out)
	if !ok {
		t.Fatal("failed as the test user")
	}
	uid, gid := usernstest.IDs(u)
	m := usernstest.Subordinate(t, u.Username, uint32(uid))
	for _, f := range []struct {
		name     string
		uid, gid int
		mode     os.FileMode
	}{{"suid", uid, gid, 0o755 | os.ModeSetuid}, {"user", int(m.SubUID.Start) + 999, int(m.SubGID.Start) + 999, 0o640}, {"shadow", uid, int(m.SubGID.Start) + 41, 0o640}} {
		fi, err := os.Lstat(filepath.Join(dir, "tree", f.name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Uid) != f.uid || int(st.Gid) != f.gid || fi.Mode() != f.mode {
			t.Errorf("%s on the host: %d:%d %v, want %d:%d %v", f.name, st.Uid, st.Gid, fi.Mode(), f.uid, f.gid, f.mode)
		}
	}
}

func childOwnership(t *testing.T, dir string) {
	m, err := userns.ForCaller()
	if err != nil {
		t.Fatalf("ForCaller: %v", err)
	}
	t.Logf("mapping: %v", m)
	tree := filepath.Join(dir, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.Func(context.Background(), "userns.test-make", tree).Run(); err != nil {
		t.Fatalf("userns.test-make: %v", err)
	}
	// Outside, the caller cannot give files away.
	if err := os.Chown(filepath.Join(tree, "suid"), 1000, 1000); err == nil {
		t.Errorf("chown outside the namespace worked")
	}
	out, err := m.Command("stat", "-c", "%n %u %g %a", filepath.Join(tree, "suid"), filepath.Join(tree, "user"), filepath.Join(tree, "shadow")).Output()
	if err != nil {
		t.Fatalf("stat inside: %v", err)
	}
	want := fmt.Sprintf("%[1]s/suid 0 0 4755\n%[1]s/user 1000 1000 640\n%[1]s/shadow 0 42 640\n", tree)
	if string(out) != want {
		t.Errorf("stat inside:\n%s\nwant\n%s", out, want)
	}
	// An external program's exit status comes through.
	var ee *exec.ExitError
	if err := m.Command("sh", "-c", "exit 7").Run(); !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Errorf("exit 7 inside: %v", err)
	}
	// Mounting proc and tmpfs works inside (its own mount and PID namespaces).
	if out, err := m.Command("sh", "-c", "mount -t tmpfs none "+tree+" && mount -t proc proc "+tree+" && cat "+tree+"/1/cmdline | tr '\\0' ' '").Output(); err != nil || !strings.Contains(string(out), "banger-userns-init") {
		t.Errorf("mount proc inside: %q %v", out, err)
	}
	// Cancelling kills everything the namespace holds, grandchildren included.
	ctx, cancel := context.WithCancel(context.Background())
	c := m.CommandContext(ctx, "sh", "-c", "sleep 3141 & sleep 3141 & wait")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	cancel()
	_ = c.Wait()
	// The kernel kills a PID namespace's processes when its init dies; wait for the reaping
	// by asking the kernel whether any is left, a bounded number of times.
	for i := 0; ; i++ {
		left := sleepers()
		if len(left) == 0 {
			break
		}
		if i == 1000 {
			t.Fatalf("processes left after cancel: %v", left)
		}
		syscall.Nanosleep(&syscall.Timespec{Nsec: 1e6}, nil)
	}
}

func sleepers() []string {
	var found []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		data, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err == nil && strings.Contains(string(data), "sleep\x003141") {
			if stat, _ := os.ReadFile(filepath.Join(d, "stat")); !strings.Contains(string(stat), ") Z ") {
				found = append(found, filepath.Base(d))
			}
		}
	}
	return found
}

// Without subordinate ids the mapping holds the caller alone and the error says the fix.
func TestForCallerWithoutSubordinateIDs(t *testing.T) {
	if _, ok := usernstest.InChild(); ok {
		m, err := userns.ForCaller()
		if !errors.Is(err, userns.ErrNoSubordinate) || m.HasSubordinate() || !strings.Contains(err.Error(), "usermod --add-subuids") {
			t.Fatalf("ForCaller = %v, %v; want ErrNoSubordinate with the fix", m, err)
		}
		t.Logf("error: %v", err)
		if m.UID != uint32(os.Getuid()) {
			t.Errorf("UID = %d", m.UID)
		}
		// The caller alone still maps to root inside.
		out, err := m.Command("id", "-u").Output()
		if err != nil || strings.TrimSpace(string(out)) != "0" {
			t.Errorf("id -u inside = %q, %v", out, err)
		}
		return
	}
	usernstest.User(t)
	u, err := lookupNobodyLike()
	if err != nil {
		t.Skip(err)
	}
	out, ok := usernstest.Run(t, u, "TestForCallerWithoutSubordinateIDs", "")
	t.Logf("as %s:\n%s", u.Username, out)
	if !ok {
		t.Fatal("failed")
	}
}

// lookupNobodyLike returns a user with a home and no subordinate ids: daemon (uid 1), which
// every Debian system has.
func lookupNobodyLike() (*user.User, error) {
	u, err := user.Lookup("daemon")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	for _, f := range []string{userns.SubUIDFile} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		r, _ := userns.ParseSubIDs(fh, u.Username, uint32(uid))
		fh.Close()
		if len(r) > 0 {
			return nil, fmt.Errorf("user daemon has subordinate ids")
		}
	}
	return u, nil
}
