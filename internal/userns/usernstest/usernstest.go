// Package usernstest lets tests that run as root check banger's rootless paths for real: it
// re-runs one test of the current test binary as an ordinary user with subordinate ids (the
// test user, BANGER_TEST_ROOTLESS_USER or bh-rootless), which the host has to provide:
//
//	useradd -m bh-rootless
//	usermod --add-subuids 165536-231071 --add-subgids 165536-231071 bh-rootless
//
// (with a range no other user has; `useradd` usually allots one itself).
package usernstest

import (
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/banger-dev/banger/internal/userns"
)

// childEnv marks the re-run test; its value is passed to the child as Arg.
const childEnv = "BANGER_TEST_ROOTLESS_CHILD"

// DefaultUser is the test user when BANGER_TEST_ROOTLESS_USER is not set.
const DefaultUser = "bh-rootless"

// InChild reports whether this process is the re-run test (running as the test user), and
// the argument the parent gave it.
func InChild() (string, bool) {
	v, ok := os.LookupEnv(childEnv)
	return v, ok
}

// User returns the test user, or skips the test with the reason it cannot run here: not
// root, no such user, newuidmap missing, or no subordinate ids for the user.
func User(t testing.TB) *user.User {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: running a test as the rootless test user needs root")
	}
	name := os.Getenv("BANGER_TEST_ROOTLESS_USER")
	if name == "" {
		name = DefaultUser
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Skipf("skipping: no test user %s (useradd -m %s; usermod --add-subuids 165536-231071 --add-subgids 165536-231071 %s): %v", name, name, name, err)
	}
	for _, tool := range []string{"newuidmap", "newgidmap"} {
		if _, err := userns.LookTool(tool); err != nil {
			t.Skipf("skipping: %s not installed (apt-get install uidmap)", tool)
		}
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	for _, f := range []string{userns.SubUIDFile, userns.SubGIDFile} {
		data, err := os.Open(f)
		if err != nil {
			t.Skipf("skipping: %v", err)
		}
		ranges, err := userns.ParseSubIDs(data, name, uint32(uid))
		data.Close()
		if err != nil || len(ranges) == 0 {
			t.Skipf("skipping: test user %s has no subordinate ids in %s (usermod --add-subuids 165536-231071 --add-subgids 165536-231071 %s): %v", name, f, name, err)
		}
	}
	return u
}

// IDs returns a user's uid and gid.
func IDs(u *user.User) (uid, gid int) {
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

// Dir makes a directory owned by the user (mode 0755) that the test removes at the end, as
// root.
func Dir(t testing.TB, u *user.User) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "banger-rootless-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	uid, gid := IDs(u)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Run re-runs the test called name of the current test binary as u, with arg (InChild's
// value) and the extra environment; it returns the child's output and whether it passed.
// The binary is copied where the user can execute it (go test keeps it in a directory only
// root can read).
func Run(t testing.TB, u *user.User, name, arg string, env ...string) (string, bool) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := Dir(t, u)
	bin := filepath.Join(dir, filepath.Base(self))
	if err := copyFile(self, bin); err != nil {
		t.Fatal(err)
	}
	uid, gid := IDs(u)
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(tmp, uid, gid); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^"+name+"$", "-test.v", "-test.count=1", "-test.timeout=20m")
	cmd.Dir = dir
	cmd.Env = append([]string{
		"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + u.HomeDir, "USER=" + u.Username, "LOGNAME=" + u.Username,
		"TMPDIR=" + tmp, childEnv + "=" + arg,
	}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, Setsid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Logf("test %s as %s: %v", name, u.Username, err)
	}
	return string(out), err == nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Subordinate returns the mapping of the user name (uid) with its first subordinate uid and
// gid ranges, read from /etc/subuid and /etc/subgid; it fails the test when either is missing.
func Subordinate(t testing.TB, name string, uid uint32) userns.Mapping {
	t.Helper()
	var m userns.Mapping
	for _, f := range []struct {
		path string
		dst  *userns.Range
	}{{userns.SubUIDFile, &m.SubUID}, {userns.SubGIDFile, &m.SubGID}} {
		fh, err := os.Open(f.path)
		if err != nil {
			t.Fatal(err)
		}
		ranges, err := userns.ParseSubIDs(fh, name, uid)
		fh.Close()
		if err != nil || len(ranges) == 0 {
			t.Fatalf("%s: %v %v", f.path, ranges, err)
		}
		*f.dst = ranges[0]
	}
	return m
}
