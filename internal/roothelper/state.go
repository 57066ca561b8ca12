package roothelper

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// maxStateFile bounds the state file the helper reads back.
const maxStateFile = 4 << 20

// savedState is a network's guest sets as the helper keeps them across its restarts.
type savedState struct {
	Namespace string              `json:"namespace"` // namespaceID of where they are
	Sets      map[string]savedSet `json:"sets"`      // by caller uid
}

type savedSet struct {
	Guests    []Guest  `json:"guests"`
	OpenPorts []uint16 `json:"open_ports"`
}

// namespaceID names the namespace h (the helper's own for None) by device and inode, which
// change when a namespace of the same name is made anew.
func namespaceID(h netns.NsHandle) (string, error) {
	var st unix.Stat_t
	var err error
	if h.IsOpen() {
		err = unix.Fstat(int(h), &st)
	} else {
		err = unix.Stat("/proc/self/ns/net", &st)
	}
	if err != nil {
		return "", fmt.Errorf("identify the network namespace: %w", err)
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino), nil
}

// save writes n's guest sets (atomically: a crash leaves the old file or the new).
func (n *network) save() error {
	st := savedState{Namespace: n.nsID, Sets: map[string]savedSet{}}
	for uid, set := range n.sets {
		ss := savedSet{OpenPorts: set.ports}
		for _, g := range set.guests {
			ss.Guests = append(ss.Guests, Guest{Tap: g.Tap, MAC: g.MAC.String(), IP: g.IP.String(), NAT: g.NAT})
		}
		st.Sets[strconv.Itoa(uid)] = ss
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := n.stateFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, n.stateFile)
}

// restore reads n's guest sets back, checked as set_guests checks them, and applies them: the
// filter then admits what it did before the helper restarted, and follows the uplinks again.
// Sets of another namespace of the same name, or that do not pass the checks, are dropped.
func (s *Server) restore(n *network) {
	f, err := os.Open(n.stateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var st savedState
	if err == nil {
		defer f.Close()
		dec := json.NewDecoder(&limitedReader{f, maxStateFile})
		dec.DisallowUnknownFields()
		err = dec.Decode(&st)
	}
	if err == nil && st.Namespace != n.nsID {
		err = errors.New("they were in another namespace of that name")
	}
	sets := map[int]callerSet{}
	seen := map[string]bool{}
	for k, set := range st.Sets {
		if err != nil {
			break
		}
		uid, cerr := strconv.Atoi(k)
		gs, gerr := n.cfg.guests(set.Guests)
		ports, perr := s.cfg.openPorts(set.OpenPorts)
		switch {
		case cerr != nil || uid < 0:
			err = fmt.Errorf("uid %q", k)
		case gerr != nil:
			err = gerr
		case perr != nil:
			err = perr
		}
		for _, g := range gs {
			if seen[g.Tap] || seen[g.IP.String()] {
				err = fmt.Errorf("guest %s (%s) in two sets", g.Tap, g.IP)
			}
			seen[g.Tap], seen[g.IP.String()] = true, true
		}
		if len(gs) > 0 {
			sets[uid] = callerSet{guests: gs, ports: ports}
		}
	}
	if err != nil {
		s.log.Warn("dropping the saved guest sets", "file", n.stateFile, "err", err)
		os.Remove(n.stateFile)
		return
	}
	n.sets = sets
	if err := n.apply(); err != nil {
		s.log.Warn("re-apply the saved guest sets", "bridge", n.cfg.Bridge, "netns", n.ns, "err", err)
		return
	}
	uids := make([]int, 0, len(sets))
	for uid := range sets {
		uids = append(uids, uid)
	}
	slices.Sort(uids)
	s.log.Info("restored the guest sets", "bridge", n.cfg.Bridge, "netns", n.ns, "uids", uids, "dir", filepath.Dir(n.stateFile))
	s.watch(n)
}

type limitedReader struct {
	f *os.File
	n int64
}

func (r *limitedReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, fmt.Errorf("longer than %d bytes", maxStateFile)
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	n, err := r.f.Read(p)
	r.n -= int64(n)
	return n, err
}
