// Package peercred says who is at the other end of a local unix socket, and whether banger
// trusts them. The kernel records the credentials of the process that called listen() or
// connect() (SO_PEERCRED); unlike a file's owner or mode they cannot be faked by whoever can
// write to the directory the socket lives in.
//
// banger's trust rule for its own sockets is: root, or the one uid that owns them (the user
// banger runs as). Everyone else is refused before a byte is sent or answered.
package peercred

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrUntrusted is the kind of every refusal: errors.Is(err, ErrUntrusted).
var ErrUntrusted = errors.New("untrusted socket peer")

// UntrustedError is a socket, or the process behind one, that banger does not trust.
type UntrustedError struct {
	What    string // "the process serving /run/banger/bangerd.sock", "socket file …", …
	Problem string // e.g. "belongs to uid 65534 (nobody), not to 0 (root)"
	UID     int    // the owner found; -1 when the problem is not the owner
	Hint    string // what to do
}

func (e *UntrustedError) Error() string {
	msg := e.What + " " + e.Problem
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrUntrusted) true.
func (e *UntrustedError) Unwrap() error { return ErrUntrusted }

func wrongOwner(what string, uid int, want []int, hint string) *UntrustedError {
	return &UntrustedError{What: what, UID: uid, Hint: hint,
		Problem: fmt.Sprintf("belongs to uid %s, not to %s", Describe(uid), describeAll(want))}
}

// Describe names a uid: "1001 (ann)", or just "1001" when the user database does not know it.
func Describe(uid int) string {
	s := strconv.Itoa(uid)
	if u, err := user.LookupId(s); err == nil && u.Username != "" {
		return s + " (" + u.Username + ")"
	}
	return s
}

func describeAll(uids []int) string {
	s := ""
	for i, u := range uids {
		switch {
		case i == 0:
		case i == len(uids)-1:
			s += " or "
		default:
			s += ", "
		}
		s += Describe(u)
	}
	return s
}

// Trusted returns the uids banger trusts on a socket owned by owner: root and owner.
func Trusted(owner int) []int {
	if owner == 0 {
		return []int{0}
	}
	return []int{0, owner}
}

// UID returns the effective uid of the process at the other end of c, which must be a unix
// socket connection.
func UID(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("cannot read the peer's credentials of a %T connection", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if serr != nil {
		return -1, fmt.Errorf("read the peer's credentials (SO_PEERCRED): %w", serr)
	}
	return int(cred.Uid), nil
}

// Check returns nil when the process at the other end of c runs as one of want, and an
// *UntrustedError naming what (e.g. "the process serving /run/banger/bangerd.sock") otherwise.
func Check(c net.Conn, what, hint string, want ...int) error {
	uid, err := UID(c)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !contains(want, uid) {
		return wrongOwner(what, uid, want, hint)
	}
	return nil
}

// CheckSocketFile returns nil when path is a unix socket (not a symlink to one) owned by one
// of want; the error of Lstat (fs.ErrNotExist when nothing is there); and an *UntrustedError
// when it is a symlink, not a socket, or owned by another uid.
func CheckSocketFile(path, hint string, want ...int) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	return CheckSocketFileInfo(path, fi, hint, want...)
}

// CheckSocketFileInfo is CheckSocketFile on what Lstat (or an fstat of an O_PATH|O_NOFOLLOW
// descriptor) returned for path.
func CheckSocketFileInfo(path string, fi os.FileInfo, hint string, want ...int) error {
	if fi.Mode()&os.ModeSymlink != 0 {
		target, _ := os.Readlink(path)
		return &UntrustedError{What: "socket " + path, UID: -1, Hint: hint,
			Problem: fmt.Sprintf("is a symlink (to %s), not a socket: banger never follows a link in place of a socket", target)}
	}
	if fi.Mode().Type() != os.ModeSocket {
		return &UntrustedError{What: "socket " + path, UID: -1, Hint: hint,
			Problem: fmt.Sprintf("is not a unix socket (mode %s)", fi.Mode())}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("cannot read the owner of socket %s", path)
	}
	if !contains(want, int(st.Uid)) {
		return wrongOwner("socket file "+path, int(st.Uid), want, hint)
	}
	return nil
}

func contains(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
