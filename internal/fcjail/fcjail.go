// Package fcjail is what the Firecracker driver (in a root daemon) and banger's root helper
// (for a daemon that is not root) share about a jailed Firecracker: the jail's layout, the
// names of what is placed in it, the request to start one, and the safe way into its sockets.
// It holds no policy and starts nothing; it imports nothing of the daemon's, so that the root
// helper stays small.
//
// A jail is <base>/<exec name>/<id>/root, the jailer's layout (exec name is the Firecracker
// binary's file name, which must contain "firecracker"). Firecracker runs chrooted there as
// the jail's uid and gid; everything it is given is a path inside that root. The jail's uid
// owns root and everything Firecracker creates in it, so the host never follows a path or a
// symlink there (OpenSocket).
package fcjail

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Sockets Firecracker serves inside a jail, relative to its root, by the names banger uses
// for them.
var Sockets = map[string]string{
	"api":   "run/api.sock",
	"vsock": "run/vsock.sock",
}

// APISocketArg is the --api-sock argument a jailed Firecracker gets (an in-jail path).
const APISocketArg = "/run/api.sock"

// Names of the files placed in a jail (each at /<name>), besides the disks (DiskName).
const (
	Kernel  = "kernel"
	Initrd  = "initrd"
	Log     = "firecracker.log"
	Metrics = "firecracker.metrics"
)

// MaxDisks is the most disks a jail is given.
const MaxDisks = 16

// DiskName is the in-jail name of the VM's disk i (0 ≤ i < MaxDisks).
func DiskName(i int) string { return "disk" + strconv.Itoa(i) }

var (
	idRE   = regexp.MustCompile(`^[a-zA-Z0-9-]{1,64}$`)
	diskRE = regexp.MustCompile(`^disk(?:[0-9]|1[0-5])$`)
)

// CheckID refuses what cannot be a jailer id: letters, digits and hyphens, at most 64.
func CheckID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("VM id %q cannot be a jailer id (letters, digits and hyphens, at most 64)", id)
	}
	return nil
}

// IsDiskName reports whether name is a disk's in-jail name.
func IsDiskName(name string) bool { return diskRE.MatchString(name) }

// CheckExec refuses a Firecracker binary the jailer would not run: its file name must
// contain "firecracker".
func CheckExec(fcBin string) error {
	if !strings.Contains(filepath.Base(fcBin), "firecracker") {
		return fmt.Errorf("the jailer only runs binaries whose name contains \"firecracker\"; rename %s", fcBin)
	}
	return nil
}

// Dir is the jail directory of VM id for Firecracker binary fcBin under base: removed as a
// whole; its root is Dir/root.
func Dir(base, fcBin, id string) string {
	return filepath.Join(base, filepath.Base(fcBin), id)
}

// Args is the jailer's command line (without the jailer itself): Firecracker fcBin runs as
// uid:gid in the jail of id under base, in the network namespace netns (a path; "" for the
// jailer's own), serving its API on APISocketArg, logging warnings only until it is given a
// log file (its stdout is the guest console). No cgroup flags: the jailer then creates no
// cgroup and there is nothing to clean up there; no --daemonize and no --new-pid-ns: the
// process started is Firecracker's.
func Args(id, fcBin, base string, uid, gid int, netns string) []string {
	args := []string{
		"--id", id,
		"--exec-file", fcBin,
		"--uid", strconv.Itoa(uid),
		"--gid", strconv.Itoa(gid),
		"--chroot-base-dir", base,
	}
	if netns != "" {
		args = append(args, "--netns", netns)
	}
	return append(args, "--", "--api-sock", APISocketArg, "--level", "Warning")
}

// Spec is what a daemon that is not root asks the root helper for: a jail for VM ID with
// these files placed in it and Firecracker started there. The files are the daemon's own,
// open (the helper never takes a path from the daemon); the caller keeps and closes them.
type Spec struct {
	ID     string
	Kernel *os.File
	Initrd *os.File // nil: none
	Disks  []Disk
	// Log and Metrics are the empty files Firecracker logs into (PUT /logger, /metrics).
	Log, Metrics *os.File
	// Console is the write end of the pipe the guest console (Firecracker's stdout and stderr)
	// goes into.
	Console *os.File
	// Tap is the VM's tap ("" for none), which Firecracker opens by name: the caller's, given
	// to the jail's group too.
	Tap string
}

// Disk is one of the VM's disks, in order: /disk0, /disk1, … in the jail.
type Disk struct {
	File     *os.File
	Writable bool
}

// Started is a jail whose Firecracker runs.
type Started struct {
	UID, GID  int    // the jail's
	PID       int    // Firecracker's
	StartTime uint64 // its start time (/proc/<pid>/stat field 22)
	// Pidfd refers to the process (pidfd_open); the caller owns it. It tells its exit
	// (poll) and cannot be mistaken for a later process on the same pid.
	Pidfd *os.File
}

// StartTime reads field 22 of /proc/<pid>/stat: the process's start time in clock ticks since
// boot, which tells a process from a later one on the same pid.
func StartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may contain anything: count from
	// the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}
