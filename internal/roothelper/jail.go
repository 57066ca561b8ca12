package roothelper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/fcjail"
	"golang.org/x/sys/unix"
)

// Bounds of the jail operations.
const (
	// jailRecordFile is the helper's record of a jail, beside its root (in the jail
	// directory, which stays root's: the jail's uid owns root only).
	jailRecordFile = "jail.json"
	// maxJailRecord bounds a record read back.
	maxJailRecord = 64 << 10
	// maxJailCopy bounds a read-only input copied into a jail (one the jail's uid could
	// not read through a link, or on another filesystem).
	maxJailCopy = 4 << 30
	// killWait bounds how long jail_remove waits for a killed Firecracker to be gone.
	killWait = 10 * time.Second
	// jailDialTimeout bounds jail_dial's connect.
	jailDialTimeout = 5 * time.Second
)

// jailRecord is what the helper keeps of a jail, in <jail dir>/jail.json: whose it is, its
// ids, its process, and what it changed outside the jail that jail_remove gives back.
type jailRecord struct {
	ID        string `json:"id"`
	Caller    int    `json:"caller"` // the uid that asked for it: only it may use or remove it
	UID       int    `json:"uid"`
	GID       int    `json:"gid"`
	PID       int    `json:"pid,omitempty"`
	StartTime uint64 `json:"start_time,omitempty"`
	// Bridge, Namespace and Tap: the caller's tap the jail's group was given (TUNSETGROUP).
	Bridge    string `json:"bridge,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Tap       string `json:"tap,omitempty"`
	// Shared are the caller's writable files linked into the jail and given to its group;
	// each is recorded before its group changes.
	Shared []sharedFile `json:"shared,omitempty"`
}

// sharedFile is one of the caller's files whose group and mode the helper changed: the inode
// (so that nothing else is given back in its place) and what it had before.
type sharedFile struct {
	Name string `json:"name"`
	Dev  uint64 `json:"dev"`
	Ino  uint64 `json:"ino"`
	GID  int    `json:"gid"`
	Mode uint32 `json:"mode"`
}

func (r jailRecord) info(running bool) JailInfo {
	return JailInfo{ID: r.ID, UID: r.UID, GID: r.GID, PID: r.PID, StartTime: r.StartTime, Running: running}
}

// jailDir is the directory of jail id.
func (s *Server) jailDir(id string) string {
	return fcjail.Dir(s.cfg.Jails.Base, s.cfg.Jails.Firecracker, id)
}

// readJailRecord reads the record of the jail in dir, checked: its id is the directory's and
// its ids are in the configured range. fs.ErrNotExist when there is none.
func (s *Server) readJailRecord(dir string) (jailRecord, error) {
	var r jailRecord
	f, err := os.OpenFile(filepath.Join(dir, jailRecordFile), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return r, err
	}
	defer f.Close()
	dec := json.NewDecoder(io.LimitReader(f, maxJailRecord))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("jail record %s: %w", dir, err)
	}
	j := s.cfg.Jails
	inRange := func(id int) bool { return id >= j.FirstID && id < j.FirstID+j.IDCount }
	if r.ID != filepath.Base(dir) || !inRange(r.UID) || !inRange(r.GID) || r.Caller < 0 || r.PID < 0 {
		return r, fmt.Errorf("jail record %s does not describe this jail", dir)
	}
	return r, nil
}

// writeJailRecord replaces the record (atomically: a crash leaves the old one or the new).
func writeJailRecord(dir string, r jailRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, jailRecordFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return failure.Wrap(failure.IO, fmt.Errorf("record jail %s: %w", r.ID, err))
	}
	if err := os.Rename(tmp, filepath.Join(dir, jailRecordFile)); err != nil {
		return failure.Wrap(failure.IO, fmt.Errorf("record jail %s: %w", r.ID, err))
	}
	return nil
}

// callersJail returns the record of the caller's jail id: NotFound when there is none,
// Conflict when it is another uid's.
func (s *Server) callersJail(cl caller, id string) (string, jailRecord, error) {
	dir := s.jailDir(id)
	r, err := s.readJailRecord(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return dir, r, failure.New(failure.NotFound, "no jail %s", id)
	case err != nil:
		return dir, r, failure.Wrap(failure.IO, err)
	case r.Caller != cl.uid:
		return dir, r, failure.New(failure.Conflict, "jail %s belongs to uid %d, not to the caller (uid %d)", id, r.Caller, cl.uid)
	}
	return dir, r, nil
}

// process opens a pidfd of the jail's Firecracker if it still runs (the same process: its
// start time matches); -1 otherwise.
func (r jailRecord) process() int {
	if r.PID <= 0 {
		return -1
	}
	fd, err := unix.PidfdOpen(r.PID, 0)
	if err != nil {
		return -1
	}
	if st, err := fcjail.StartTime(r.PID); err != nil || st != r.StartTime {
		unix.Close(fd)
		return -1
	}
	return fd
}

func (r jailRecord) running() bool {
	fd := r.process()
	if fd < 0 {
		return false
	}
	defer unix.Close(fd)
	return !exited(fd, 0)
}

// exited polls a pidfd for up to wait: true once the process has exited.
func exited(fd int, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for {
		ms := max(int(time.Until(deadline).Milliseconds()), 0)
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ms)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}

// doJail runs a validated jail operation for cl; files are the request's descriptors.
func (s *Server) doJail(cl caller, ck checked, files []*os.File) (Response, []*os.File, error) {
	switch ck.op {
	case OpJailStart:
		return s.jailStart(cl, ck, files)
	case OpJailDial:
		f, err := s.jailDial(cl, ck.jail, ck.socket)
		if err != nil {
			return Response{}, nil, err
		}
		return Response{}, []*os.File{f}, nil
	case OpJailKill:
		_, r, err := s.callersJail(cl, ck.jail)
		if err != nil {
			if errors.Is(err, failure.NotFound) {
				return Response{}, nil, nil
			}
			return Response{}, nil, err
		}
		return Response{}, nil, r.kill(0)
	case OpJailRemove:
		return Response{}, nil, s.jailRemove(cl, ck)
	case OpJailList:
		list, err := s.jailList(cl)
		return Response{JailList: list}, nil, err
	}
	return Response{}, nil, invalid("unknown operation %q", ck.op)
}

// kill sends SIGKILL to the jail's Firecracker, if it runs, and waits up to wait for it to be
// gone.
func (r jailRecord) kill(wait time.Duration) error {
	fd := r.process()
	if fd < 0 {
		return nil
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && err != unix.ESRCH {
		return fmt.Errorf("kill the Firecracker of jail %s (pid %d): %w", r.ID, r.PID, err)
	}
	if wait > 0 && !exited(fd, wait) {
		return fmt.Errorf("the Firecracker of jail %s (pid %d) is still there %s after SIGKILL", r.ID, r.PID, wait)
	}
	return nil
}

// claimWait bounds how long a request waits for another one at work on the same jail: as
// long as a client waits for an answer (a start that copies inputs may take longer; the
// waiting request then fails as a conflict).
const claimWait = clientTimeout

// claim marks the jail in dir as being worked on, once no other request is (a removal and
// the daemon's cleanup of the same machine may come at once: the second then finds the jail
// gone). It gives up after claimWait.
func (s *Server) claim(dir, id string) error {
	deadline := time.After(claimWait)
	for {
		s.jmu.Lock()
		busy, ok := s.jailBusy[dir]
		if !ok {
			s.jailBusy[dir] = make(chan struct{})
			s.jmu.Unlock()
			return nil
		}
		s.jmu.Unlock()
		select {
		case <-busy:
		case <-deadline:
			return failure.New(failure.Conflict, "another request has been at work on jail %s for %s; try again", id, claimWait)
		}
	}
}

func (s *Server) release(dir string) {
	s.jmu.Lock()
	close(s.jailBusy[dir])
	delete(s.jailBusy, dir)
	s.jmu.Unlock()
}

// jailStart makes the caller's jail ck.jail, places its files, shares its tap and starts
// Firecracker there, all or nothing: on any failure what it did is undone.
func (s *Server) jailStart(cl caller, ck checked, files []*os.File) (Response, []*os.File, error) {
	if len(files) != len(ck.files) {
		return Response{}, nil, invalid("jail_start: %d descriptors for %d files", len(files), len(ck.files))
	}
	// The files first: nothing is made for a request that brings what is not the caller's.
	var console *os.File
	for i, f := range ck.files {
		if f.Name == consoleFile {
			if err := checkPipe(files[i]); err != nil {
				return Response{}, nil, err
			}
			console = files[i]
			continue
		}
		if err := checkCallersFile(files[i], f.Name, cl.uid); err != nil {
			return Response{}, nil, err
		}
	}
	var n *network
	if ck.tap != "" || ck.ns != "" {
		var err error
		if n, err = s.network(ck); err != nil {
			return Response{}, nil, err
		}
	}
	dir := s.jailDir(ck.jail)
	if err := s.claim(dir, ck.jail); err != nil {
		return Response{}, nil, err
	}
	defer s.release(dir)
	// A jail of that id: the caller's stale one (its Firecracker gone) is replaced; a running
	// one or another uid's is not touched. A directory without a record is a start that
	// crashed before it placed anything: it goes.
	if old, err := s.readJailRecord(dir); err == nil {
		switch {
		case old.Caller != cl.uid:
			return Response{}, nil, failure.New(failure.Conflict, "jail %s belongs to uid %d, not to the caller (uid %d)", ck.jail, old.Caller, cl.uid)
		case old.running():
			return Response{}, nil, failure.New(failure.Conflict, "jail %s runs (pid %d); remove it first (jail_remove)", ck.jail, old.PID)
		}
		if err := s.removeJail(dir, old); err != nil {
			return Response{}, nil, err
		}
	} else if errors.Is(err, fs.ErrNotExist) {
		if err := os.RemoveAll(dir); err != nil {
			return Response{}, nil, fmt.Errorf("remove the remains of jail %s: %w", ck.jail, err)
		}
	} else {
		return Response{}, nil, failure.Wrap(failure.IO, fmt.Errorf("%w; remove %s by hand if no Firecracker runs there", err, dir))
	}

	rec, err := s.newJail(dir, cl, ck)
	if err != nil {
		return Response{}, nil, err
	}
	ok := false
	defer func() {
		if !ok {
			if err := s.removeJail(dir, rec); err != nil {
				s.log.Error("undo a failed jail_start", "jail", rec.ID, "err", err)
			}
		}
	}()
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o700); err != nil {
		return Response{}, nil, fmt.Errorf("create jail %s: %w", rec.ID, err)
	}
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return Response{}, nil, fmt.Errorf("open jail %s: %w", rec.ID, err)
	}
	defer unix.Close(rootFD)
	for i, f := range ck.files {
		if f.Name == consoleFile {
			continue
		}
		if err := s.place(dir, rootFD, files[i], f, &rec); err != nil {
			return Response{}, nil, err
		}
	}
	if ck.tap != "" {
		rec.Bridge, rec.Namespace, rec.Tap = ck.net.Bridge, ck.ns, ck.tap
		if err := writeJailRecord(dir, rec); err != nil {
			return Response{}, nil, err
		}
		if err := n.shareTap(ck.tap, cl.uid, rec.UID); err != nil {
			return Response{}, nil, err
		}
	}
	// Firecracker creates its sockets in /run; root and run become the jail's now, before
	// any process of its uid exists (so none can have swapped anything in).
	run := filepath.Join(root, "run")
	if err := os.Mkdir(run, 0o700); err != nil {
		return Response{}, nil, fmt.Errorf("create jail %s: %w", rec.ID, err)
	}
	for _, d := range []string{root, run} {
		if err := os.Lchown(d, rec.UID, rec.GID); err != nil {
			return Response{}, nil, fmt.Errorf("hand jail %s to uid %d: %w", rec.ID, rec.UID, err)
		}
	}
	pidfd, err := s.spawn(dir, &rec, ck.ns, console)
	if err != nil {
		return Response{}, nil, err
	}
	ok = true
	info := rec.info(true)
	return Response{Jail: &info}, []*os.File{pidfd}, nil
}

// newJail picks the jail's uid and gid (the lowest of the range that no jail uses and no
// account names) and makes its directory with the record. The caller has claimed dir.
func (s *Server) newJail(dir string, cl caller, ck checked) (jailRecord, error) {
	s.jmu.Lock() // one pick at a time: two starts must not take the same id
	defer s.jmu.Unlock()
	used, mine := s.usedJailIDs(cl.uid)
	j := s.cfg.Jails
	if mine >= j.PerCaller {
		return jailRecord{}, failure.New(failure.Conflict, "uid %d has %d jails, the most the helper's configuration allows one caller (per_caller); remove stale ones (jail_remove)", cl.uid, mine)
	}
	id := -1
	for c := j.FirstID; c < j.FirstID+j.IDCount; c++ {
		if used[c] {
			continue
		}
		if _, err := user.LookupId(strconv.Itoa(c)); err == nil {
			continue
		}
		if _, err := user.LookupGroupId(strconv.Itoa(c)); err == nil {
			continue
		}
		id = c
		break
	}
	if id < 0 {
		return jailRecord{}, failure.New(failure.Conflict, "no free jail uid in %d–%d (%d jails exist under %s)", j.FirstID, j.FirstID+j.IDCount-1, len(used), j.Base)
	}
	// The base and the directories below it are root's and private: the jailer enters the
	// chroot before it drops privileges, and the jail's uid owns only root.
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return jailRecord{}, failure.Wrap(failure.IO, fmt.Errorf("create the jail base %s: %w", j.Base, err))
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return jailRecord{}, failure.Wrap(failure.IO, fmt.Errorf("create jail %s: %w", ck.jail, err))
	}
	rec := jailRecord{ID: ck.jail, Caller: cl.uid, UID: id, GID: id}
	if err := writeJailRecord(dir, rec); err != nil {
		os.RemoveAll(dir)
		return jailRecord{}, err
	}
	return rec, nil
}

// usedJailIDs are the uids and gids of the jails under the base (those in records and those
// that own a jail's root), and the number of the jails of caller.
func (s *Server) usedJailIDs(caller int) (map[int]bool, int) {
	used := map[int]bool{}
	mine := 0
	dirs, _ := filepath.Glob(filepath.Join(s.cfg.Jails.Base, "*", "*"))
	for _, d := range dirs {
		if r, err := s.readJailRecord(d); err == nil {
			used[r.UID], used[r.GID] = true, true
			if r.Caller == caller {
				mine++
			}
		}
		var st unix.Stat_t
		if unix.Lstat(filepath.Join(d, "root"), &st) == nil {
			used[int(st.Uid)], used[int(st.Gid)] = true, true
		}
	}
	return used, mine
}

// checkCallersFile refuses a descriptor that is not a regular file of the caller's.
func checkCallersFile(f *os.File, name string, uid int) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return invalid("jail_start: %s: %v", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return invalid("jail_start: %s is not a regular file", name)
	}
	if int(st.Uid) != uid {
		return failure.New(failure.Conflict, "jail_start: %s belongs to uid %d, not to the caller (uid %d)", name, st.Uid, uid)
	}
	if st.Nlink == 0 {
		return invalid("jail_start: %s has been deleted", name)
	}
	return nil
}

// checkPipe refuses a console that is not a pipe.
func checkPipe(f *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return invalid("jail_start: the console is not a pipe")
	}
	return nil
}

// place puts the caller's file f in the jail at /<name>. A writable file is hard-linked and
// stays the caller's: it is given to the jail's group (g+rw), which jail_remove undoes. A
// read-only one is linked when the jail's uid may read it anyway (world-readable), else
// copied (at most maxJailCopy bytes), never changed: it may be shared by other VMs.
func (s *Server) place(dir string, rootFD int, f *os.File, jf JailFile, rec *jailRecord) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("jail_start: %s: %w", jf.Name, err)
	}
	proc := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	link := func() error {
		return unix.Linkat(unix.AT_FDCWD, proc, rootFD, jf.Name, unix.AT_SYMLINK_FOLLOW)
	}
	if jf.Writable {
		if err := link(); err != nil {
			if errors.Is(err, unix.EXDEV) {
				return failure.New(failure.Invalid, "jail_start: cannot hard-link %s into the jail: it is on another filesystem than the jail base %s (or the helper runs in another mount namespace), and a copy would not keep the VM's writes; put [jails] base on the filesystem of banger's state", jf.Name, s.cfg.Jails.Base)
			}
			return fmt.Errorf("jail_start: link %s into the jail: %w", jf.Name, err)
		}
		rec.Shared = append(rec.Shared, sharedFile{Name: jf.Name, Dev: st.Dev, Ino: st.Ino, GID: int(st.Gid), Mode: st.Mode & 0o7777})
		if err := writeJailRecord(dir, *rec); err != nil {
			return err
		}
		if err := unix.Fchownat(unix.AT_FDCWD, proc, -1, rec.GID, 0); err != nil {
			return fmt.Errorf("jail_start: give %s to the jail's group %d: %w", jf.Name, rec.GID, err)
		}
		if err := unix.Fchmodat(unix.AT_FDCWD, proc, st.Mode&0o777|0o060, 0); err != nil {
			return fmt.Errorf("jail_start: let the jail's group write %s: %w", jf.Name, err)
		}
		return nil
	}
	if st.Mode&0o004 != 0 && link() == nil {
		return nil
	}
	if st.Size > maxJailCopy {
		return invalid("jail_start: %s cannot be linked into the jail (on another filesystem, or not readable by all) and is larger than the %d bytes the helper copies", jf.Name, int64(maxJailCopy))
	}
	fd, err := unix.Openat(rootFD, jf.Name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o400)
	if err != nil {
		return fmt.Errorf("jail_start: copy %s into the jail: %w", jf.Name, err)
	}
	out := os.NewFile(uintptr(fd), jf.Name)
	defer out.Close()
	if _, err := io.Copy(out, io.NewSectionReader(f, 0, st.Size)); err != nil {
		return fmt.Errorf("jail_start: copy %s into the jail (is it open for reading?): %w", jf.Name, err)
	}
	if err := out.Chown(rec.UID, rec.GID); err != nil {
		return fmt.Errorf("jail_start: %s: %w", jf.Name, err)
	}
	return out.Close()
}

// spawn starts the jailer for rec with the console as its stdout and stderr, records the
// process and returns a pidfd of it. The helper reaps it; it lives on its own (a session of
// its own) when the helper stops.
func (s *Server) spawn(dir string, rec *jailRecord, ns string, console *os.File) (*os.File, error) {
	j := s.cfg.Jails
	netns := ""
	if ns != "" {
		netns = filepath.Join("/run/netns", ns)
	}
	pidfd := -1
	cmd := &exec.Cmd{
		Path:   j.Jailer,
		Args:   append([]string{j.Jailer}, fcjail.Args(rec.ID, j.Firecracker, j.Base, rec.UID, rec.GID, netns)...),
		Env:    []string{},
		Dir:    "/",
		Stdout: console,
		Stderr: console,
		SysProcAttr: &syscall.SysProcAttr{
			Setsid: true,
			PidFD:  &pidfd,
		},
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("jail_start: start the jailer %s: %w", j.Jailer, err)
	}
	pf := os.NewFile(uintptr(pidfd), "pidfd")
	// Read before the process is waited for: until then it is at least a zombie.
	st, err := fcjail.StartTime(cmd.Process.Pid)
	if err == nil {
		rec.PID, rec.StartTime = cmd.Process.Pid, st
		err = writeJailRecord(dir, *rec)
	}
	go func() {
		werr := cmd.Wait()
		s.log.Info("jail's Firecracker exited", "jail", rec.ID, "pid", cmd.Process.Pid, "status", fmt.Sprint(werr))
	}()
	if err != nil || pidfd < 0 {
		_ = cmd.Process.Kill()
		if pidfd >= 0 {
			pf.Close()
		}
		return nil, fmt.Errorf("jail_start: record the jailer's process: %v", err)
	}
	return pf, nil
}

// removeJail kills the jail's Firecracker, gives the caller's files and tap back and removes
// the jail. The record goes last: a failure leaves it for the next attempt.
func (s *Server) removeJail(dir string, r jailRecord) error {
	if err := r.kill(killWait); err != nil {
		return err
	}
	var errs []error
	if len(r.Shared) > 0 {
		errs = append(errs, giveBack(filepath.Join(dir, "root"), r, s))
	}
	if r.Tap != "" {
		if err := s.unshareTap(r); err != nil {
			s.log.Warn("give the tap back", "jail", r.ID, "tap", r.Tap, "err", err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return failure.Wrap(failure.IO, fmt.Errorf("remove jail %s: %w", r.ID, err))
	}
	return nil
}

// giveBack restores the group and mode of the caller's files linked into the jail at root.
// Only the recorded inode, still the caller's, found at its name without following a
// symlink, is changed; one the jail's uid moved or removed is left to its owner (the daemon
// restores its own files, see firecracker's helper path).
func giveBack(root string, r jailRecord, s *Server) error {
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open jail %s: %w", r.ID, err)
	}
	defer unix.Close(rootFD)
	var errs []error
	for _, sf := range r.Shared {
		fd, err := unix.Openat(rootFD, sf.Name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			s.log.Warn("a file of the jail is not where it was put: its owner restores it", "jail", r.ID, "file", sf.Name, "err", err)
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Dev != sf.Dev || st.Ino != sf.Ino || int(st.Uid) != r.Caller {
			unix.Close(fd)
			s.log.Warn("a file of the jail was replaced: left alone, its owner restores the original", "jail", r.ID, "file", sf.Name)
			continue
		}
		proc := "/proc/self/fd/" + strconv.Itoa(fd)
		if err := unix.Fchownat(unix.AT_FDCWD, proc, -1, sf.GID, 0); err != nil {
			errs = append(errs, fmt.Errorf("give %s of jail %s back to group %d: %w", sf.Name, r.ID, sf.GID, err))
		} else if err := unix.Fchmodat(unix.AT_FDCWD, proc, sf.Mode, 0); err != nil {
			errs = append(errs, fmt.Errorf("restore the mode of %s of jail %s: %w", sf.Name, r.ID, err))
		}
		unix.Close(fd)
	}
	return errors.Join(errs...)
}

// unshareTap gives the caller's tap back to the caller (TUNSETOWNER), if it is still there
// and the jail's.
func (s *Server) unshareTap(r jailRecord) error {
	ck := checked{ns: r.Namespace}
	for i := range s.cfg.Networks {
		if s.cfg.Networks[i].Bridge == r.Bridge {
			ck.net = &s.cfg.Networks[i]
		}
	}
	if ck.net == nil || !tapNameRE.MatchString(r.Tap) || (r.Namespace != "" && s.cfg.checkNamespace(r.Namespace) != nil) {
		return fmt.Errorf("the jail's network (%q in %q) is not served any more", r.Bridge, r.Namespace)
	}
	n, err := s.network(ck)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errors.New("the network was released meanwhile")
	}
	err = n.setTapOwner(r.Tap, r.UID, r.Caller)
	if errors.Is(err, failure.NotFound) {
		return nil
	}
	return err
}

// shareTap lends the caller's tap to the jail's uid (TUNSETOWNER) for as long as the jail
// lives: Firecracker opens it by name, and the kernel lets only a tap's owner (and members of
// its group, when it has one, and only those) attach to it. The helper's other operations still
// treat the tap as the caller's (network.owns).
func (n *network) shareTap(name string, uid, jailUID int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return fmt.Errorf("network namespace %s was replaced while the request waited; send it again", n.ns)
	}
	return n.setTapOwner(name, uid, jailUID)
}

// setTapOwner hands tap name from uid from to uid to. The caller holds n.mu.
func (n *network) setTapOwner(name string, from, to int) error {
	return n.net.Do(func() error {
		t, err := tapLink(name)
		if err != nil {
			return err
		}
		if t == nil {
			return failure.New(failure.NotFound, "no tap %s", name)
		}
		if int(t.Owner) != from && !(from == 0 && t.Owner == ^uint32(0)) {
			return failure.New(failure.Conflict, "tap %s belongs to uid %d, not to uid %d", name, t.Owner, from)
		}
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		ifr.SetUint16(tapFlags)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return failure.New(failure.Conflict, "tap %s is open elsewhere (a queue of it is held): close it before the jail starts", name)
			}
			return fmt.Errorf("attach to tap %s: %w", name, err)
		}
		if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, to); err != nil {
			return fmt.Errorf("hand tap %s to uid %d (TUNSETOWNER): %w", name, to, err)
		}
		return nil
	})
}

// jailCaller returns the uid whose jail runs as uid owner, or -1.
func (s *Server) jailCaller(owner int) int {
	j := s.cfg.Jails
	if !j.Enabled() || owner < j.FirstID || owner >= j.FirstID+j.IDCount {
		return -1
	}
	dirs, _ := filepath.Glob(filepath.Join(j.Base, "*", "*"))
	for _, d := range dirs {
		if r, err := s.readJailRecord(d); err == nil && r.UID == owner {
			return r.Caller
		}
	}
	return -1
}

// jailRemove removes the caller's jail; a missing one is fine.
func (s *Server) jailRemove(cl caller, ck checked) error {
	dir := s.jailDir(ck.jail)
	if err := s.claim(dir, ck.jail); err != nil {
		return err
	}
	defer s.release(dir)
	_, r, err := s.callersJail(cl, ck.jail)
	if errors.Is(err, failure.NotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.removeJail(dir, r)
}

// jailDial connects to the socket of the caller's jail (never following a symlink in it,
// and only to a socket its uid owns and serves) and returns the connection.
func (s *Server) jailDial(cl caller, id, socket string) (*os.File, error) {
	dir, r, err := s.callersJail(cl, id)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), jailDialTimeout)
	defer cancel()
	conn, err := fcjail.DialSocket(ctx, filepath.Join(dir, "root"), fcjail.Sockets[socket], r.UID)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) {
			return nil, failure.Wrap(failure.NotFound, err)
		}
		return nil, failure.Wrap(failure.Conflict, err)
	}
	defer conn.Close()
	return conn.(*net.UnixConn).File()
}

// jailList lists the caller's jails, sorted by id.
func (s *Server) jailList(cl caller) ([]JailInfo, error) {
	dirs, err := filepath.Glob(filepath.Join(s.cfg.Jails.Base, "*", "*"))
	if err != nil {
		return nil, err
	}
	out := []JailInfo{}
	for _, d := range dirs {
		r, err := s.readJailRecord(d)
		if err != nil || r.Caller != cl.uid || filepath.Dir(d) != filepath.Dir(s.jailDir(r.ID)) {
			continue
		}
		out = append(out, r.info(r.running()))
	}
	slices.SortFunc(out, func(a, b JailInfo) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out, nil
}
