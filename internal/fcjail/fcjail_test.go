package fcjail

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// Jail ids are the jailer's: letters, digits and hyphens, at most 64; never a path.
func TestCheckID(t *testing.T) {
	for _, ok := range []string{"a", "vm-1", strings.Repeat("A", 64), "0123456789abcdef"} {
		if err := CheckID(ok); err != nil {
			t.Errorf("CheckID(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "../x", "a/b", "a b", "a_b", "a.b", strings.Repeat("a", 65), "a\x00"} {
		if err := CheckID(bad); err == nil {
			t.Errorf("CheckID(%q) accepted", bad)
		}
	}
}

func TestDiskNames(t *testing.T) {
	for i := range MaxDisks {
		if !IsDiskName(DiskName(i)) {
			t.Errorf("%s is not a disk name", DiskName(i))
		}
	}
	for _, bad := range []string{"disk16", "disk01", "disk", "disk-1", "/disk0", "disk0/"} {
		if IsDiskName(bad) {
			t.Errorf("IsDiskName(%q)", bad)
		}
	}
}

// The jailer's command line: Firecracker as the jail's uid in the jail of id, in the network
// namespace when one is given, serving its API inside the jail.
func TestArgs(t *testing.T) {
	got := Args("vm-1", "/usr/bin/firecracker", "/var/lib/banger/jail", 900001, 900002, "/run/netns/banger")
	want := []string{"--id", "vm-1", "--exec-file", "/usr/bin/firecracker", "--uid", "900001", "--gid", "900002",
		"--chroot-base-dir", "/var/lib/banger/jail", "--netns", "/run/netns/banger", "--", "--api-sock", "/run/api.sock", "--level", "Warning"}
	if !slices.Equal(got, want) {
		t.Errorf("Args = %q\nwant %q", got, want)
	}
	if got := Args("vm-1", "/f/firecracker", "/b", 1, 1, ""); slices.Contains(got, "--netns") {
		t.Errorf("Args without a namespace = %q", got)
	}
	if Dir("/b", "/usr/bin/firecracker", "vm-1") != "/b/firecracker/vm-1" {
		t.Error(Dir("/b", "/usr/bin/firecracker", "vm-1"))
	}
	if CheckExec("/usr/bin/sh") == nil || CheckExec("/opt/firecracker-v1.14") != nil {
		t.Error("CheckExec")
	}
}

// StartTime reads this process's start time, whatever its command name holds.
func TestStartTime(t *testing.T) {
	st, err := StartTime(os.Getpid())
	if err != nil || st == 0 {
		t.Fatalf("StartTime(self) = %d, %v", st, err)
	}
	if _, err := StartTime(-1); err == nil {
		t.Error("StartTime(-1) succeeded")
	}
}
