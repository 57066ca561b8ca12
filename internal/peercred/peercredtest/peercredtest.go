// Package peercredtest lets a test act as another user on one OS thread, to create sockets
// that really belong to that user (their file owner and SO_PEERCRED) without a helper
// process.
package peercredtest

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// Nobody is the uid and gid tests use for "another user".
const Nobody = 65534

// AsUser runs fn with the effective uid and gid of the calling OS thread set to uid and gid,
// then makes them root's again. Only that thread changes: Linux credentials are per thread,
// and the raw setresuid here does not go through Go's all-threads wrapper, so the rest of the
// test process keeps running as root. Sockets that fn binds, listens on or connects from
// belong to uid. fn runs on another goroutine: it must not call t.Fatal (return what it got
// instead). The test is skipped unless it runs as root.
func AsUser(t testing.TB, uid, gid int, fn func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("acting as another user needs root")
	}
	done := make(chan struct{})
	var fatal string
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// Unlocked only once root is back: a thread left as another user would otherwise run
		// other goroutines; a goroutine that exits locked takes its thread with it.
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), uintptr(gid), ^uintptr(0)); e != 0 {
			fatal = "setresgid: " + e.Error()
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
			fatal = "setresuid: " + e.Error()
			return
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					fatal = "panic as another user"
				}
			}()
			fn()
		}()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
			fatal = "restore uid: " + e.Error()
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
			fatal = "restore gid: " + e.Error()
			return
		}
		runtime.UnlockOSThread()
	}()
	<-done
	if fatal != "" {
		t.Fatal(fatal)
	}
}
