package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/banger-dev/banger/internal/durable"
	"github.com/banger-dev/banger/internal/failure"
)

// Store keeps snapshots, each a directory under Root named after the snapshot. A Store is
// safe for concurrent use in one process (the daemon); a snapshot in use by a restore (Use)
// is not removed under it.
type Store struct {
	root string

	mu    sync.Mutex
	users map[string]*sync.RWMutex // per snapshot name: restores read-lock, Remove locks
}

// NewStore returns the store of snapshots under root, which is created when the first
// snapshot is staged.
func NewStore(root string) *Store {
	return &Store{root: root, users: map[string]*sync.RWMutex{}}
}

// Root is the directory the snapshots are in.
func (s *Store) Root() string { return s.root }

// Hidden prefixes: directories being put together, and removed ones on their way out.
const (
	stagePrefix = ".stage-"
	trashPrefix = ".trash-"
)

func (s *Store) lock(name string) *sync.RWMutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.users[name]
	if !ok {
		l = &sync.RWMutex{}
		s.users[name] = l
	}
	return l
}

// Staging is a snapshot being put together: the VMM saves into Machine, the disk is copied to
// Disk, then Publish names it. Discard (deferred) removes it unless it was published.
type Staging struct {
	store *Store
	st    *durable.Staging
}

// Dir is the staging directory.
func (st *Staging) Dir() string { return st.st.Dir }

// Machine is the (existing, empty) directory the VMM saves the machine into.
func (st *Staging) Machine() string { return filepath.Join(st.st.Dir, MachineDir) }

// Disk is where the copy of the writable disk goes.
func (st *Staging) Disk() string { return filepath.Join(st.st.Dir, DiskFile) }

// Stage starts a snapshot, in a hidden directory that Clean removes if the process dies
// before Publish or Discard.
func (s *Store) Stage(name string) (*Staging, error) {
	if err := os.MkdirAll(s.root, 0o700); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", name, err)
	}
	st, err := durable.Stage(s.root, strings.TrimPrefix(stagePrefix, ".")+name)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", name, err)
	}
	if err := os.Mkdir(filepath.Join(st.Dir, MachineDir), 0o700); err != nil {
		_ = st.Discard()
		return nil, fmt.Errorf("snapshot %s: %w", name, err)
	}
	return &Staging{store: s, st: st}, nil
}

// Publish writes m as the snapshot's description and makes the snapshot visible under
// m.Name. A snapshot of that name that exists already is a conflict (failure.Conflict); the
// staging directory is then left for Discard.
func (st *Staging) Publish(m Meta) (Info, error) {
	if err := m.Validate(); err != nil {
		return Info{}, err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Info{}, err
	}
	if err := os.WriteFile(filepath.Join(st.st.Dir, MetaFile), b, 0o600); err != nil {
		return Info{}, fmt.Errorf("snapshot %s: %w", m.Name, err)
	}
	final := filepath.Join(st.store.root, m.Name)
	if _, err := os.Lstat(final); err == nil {
		return Info{}, failure.New(failure.Conflict, "a snapshot named %q exists already; pick another name or remove it with `banger snapshot rm %s`", m.Name, m.Name)
	}
	if err := st.st.Publish(final); err != nil {
		return Info{}, fmt.Errorf("snapshot %s: %w", m.Name, err)
	}
	return st.store.Get(m.Name)
}

// Discard removes the staging directory unless Publish succeeded.
func (st *Staging) Discard() error { return st.st.Discard() }

// Get returns the snapshot named name; failure.NotFound when there is none.
func (s *Store) Get(name string) (Info, error) {
	if !validDirName(name) {
		return Info{}, failure.New(failure.NotFound, "no snapshot named %q; `banger snapshot list` shows them", name)
	}
	dir := filepath.Join(s.root, name)
	b, err := os.ReadFile(filepath.Join(dir, MetaFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, failure.New(failure.NotFound, "no snapshot named %q; `banger snapshot list` shows them", name)
	}
	if err != nil {
		return Info{}, fmt.Errorf("snapshot %s: %w", name, err)
	}
	m, err := ParseMeta(b)
	if err != nil {
		return Info{}, fmt.Errorf("snapshot %s: %w", name, err)
	}
	if m.Name != name {
		return Info{}, fmt.Errorf("snapshot %s: its description names it %q", name, m.Name)
	}
	return Info{Meta: m, Dir: dir, Bytes: usage(dir)}, nil
}

// validDirName says whether name could be a published snapshot's directory name.
func validDirName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00") && !strings.HasPrefix(name, ".")
}

// usage is the space the files in dir take on the host.
func usage(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// List returns the published snapshots, oldest first. Directories that are not snapshots
// (damaged descriptions) are skipped; Clean removes them.
func (s *Store) List() ([]Info, error) {
	entries, err := os.ReadDir(s.root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	var out []Info
	for _, e := range entries {
		if !e.IsDir() || !validDirName(e.Name()) {
			continue
		}
		if i, err := s.Get(e.Name()); err == nil {
			out = append(out, i)
		}
	}
	slices.SortFunc(out, func(a, b Info) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// Use returns the snapshot named name, kept from removal until release is called (restores
// hold it while they read its files).
func (s *Store) Use(name string) (i Info, release func(), err error) {
	l := s.lock(name)
	l.RLock()
	if i, err = s.Get(name); err != nil {
		l.RUnlock()
		return i, nil, err
	}
	return i, l.RUnlock, nil
}

// Remove removes the snapshot named name, waiting for restores that use it; failure.NotFound
// when there is none. The directory first moves aside (so it is gone at once and whole) and is
// then deleted; Clean finishes a removal a crash interrupted.
func (s *Store) Remove(name string) error {
	l := s.lock(name)
	l.Lock()
	defer l.Unlock()
	if _, err := s.Get(name); err != nil && failure.Of(err) == failure.NotFound {
		return err
	}
	trash, err := os.MkdirTemp(s.root, trashPrefix+"*")
	if err != nil {
		return fmt.Errorf("remove snapshot %s: %w", name, err)
	}
	if err := os.Rename(filepath.Join(s.root, name), filepath.Join(trash, name)); err != nil {
		_ = os.Remove(trash)
		return fmt.Errorf("remove snapshot %s: %w", name, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("remove snapshot %s: %w", name, err)
	}
	return nil
}

// Clean removes what a process that died left behind: staging and half-removed directories,
// and directories without a valid description. It returns what it removed. Call it before
// anything else uses the store (at daemon start).
func (s *Store) Clean(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(s.root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		if ctx.Err() != nil {
			return removed, ctx.Err()
		}
		name := e.Name()
		if !strings.HasPrefix(name, stagePrefix) && !strings.HasPrefix(name, trashPrefix) {
			if !e.IsDir() {
				continue
			}
			_, err := s.Get(name)
			if err == nil {
				continue
			}
			if failure.Of(err) == failure.IO {
				errs = append(errs, err) // the host failed, not the snapshot: keep it
				continue
			}
		}
		if err := os.RemoveAll(filepath.Join(s.root, name)); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}
