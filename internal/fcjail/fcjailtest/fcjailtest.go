// Package fcjailtest helps tests stand in for Firecracker's jailer: the test binary, copied
// into place with CopyFile, is run as the jailer and enters the jail as the jailer does
// (Parse, then Jailer.Enter), before it plays Firecracker.
package fcjailtest

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Jailer is what a jailer command line (as fcjail.Args writes it) asks for.
type Jailer struct {
	ID, ExecFile, Base, NetNS string
	UID, GID                  int
	// Args are the arguments after the jailer's own, for Firecracker.
	Args []string
}

// Parse reads the jailer's flags from args.
func Parse(args []string) (Jailer, error) {
	fs := flag.NewFlagSet("fake-jailer", flag.ContinueOnError)
	var j Jailer
	fs.StringVar(&j.ID, "id", "", "")
	fs.StringVar(&j.ExecFile, "exec-file", "", "")
	fs.IntVar(&j.UID, "uid", -1, "")
	fs.IntVar(&j.GID, "gid", -1, "")
	fs.StringVar(&j.Base, "chroot-base-dir", "", "")
	fs.StringVar(&j.NetNS, "netns", "", "")
	if err := fs.Parse(args); err != nil {
		return Jailer{}, err
	}
	j.Args = fs.Args()
	return j, nil
}

// Root is the jail's root directory: <base>/<exec file's name>/<id>/root.
func (j Jailer) Root() string {
	return filepath.Join(j.Base, filepath.Base(j.ExecFile), j.ID, "root")
}

// Enter moves into the jail's root and drops to its uid and gid, in the jailer's order (the
// jail base is root's: it is entered before privileges go). Without a chroot.
func (j Jailer) Enter() error {
	if err := os.Chdir(j.Root()); err != nil {
		return err
	}
	if err := syscall.Setgroups(nil); err != nil {
		return err
	}
	if err := syscall.Setgid(j.GID); err != nil {
		return err
	}
	return syscall.Setuid(j.UID)
}

// CopyFile copies src to a new file dst with mode.
func CopyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
