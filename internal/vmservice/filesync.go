package vmservice

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/steps"
)

// StepFiles is the create step that copies [[file_sync]] entries into the guest.
const StepFiles = "files"

// fileSyncStep copies the configured host files and directories into a new VM, through its
// agent. A missing host path is told and skipped; symlinks, named pipes, sockets and devices
// inside a directory are told and skipped (never followed nor read); files get the entry's
// mode, 0600 by default.
func (s *Service) fileSyncStep(b *boot) steps.Step {
	return steps.Step{
		Name: StepFiles,
		Do: func(ctx context.Context) error {
			cfg, err := s.config()
			if err != nil || len(cfg.FileSync) == 0 || !b.creating {
				return nil // copied when the VM is made, not at every start
			}
			b.obs.Progress.Stage("vm.files", fmt.Sprintf("copying %d file_sync entries", len(cfg.FileSync)))
			pr, pw := io.Pipe()
			go func() { pw.CloseWithError(writeFileSync(pw, cfg.FileSync, b.obs.notice)) }()
			_, err = b.cli.Upload(ctx, agent.UntarRequest{Dest: "/root"}, pr)
			pr.Close()
			if err != nil {
				return fmt.Errorf("file_sync: %w", err)
			}
			return nil
		},
	}
}

// writeFileSync writes the entries as a tar stream relative to /root.
//
// A configured host path is the user's own and may be a symlink (~/.gitconfig into a dotfiles
// repository). Inside a synced directory nothing is followed: every entry is opened relative
// to its directory (os.Root), checked to be the file the listing named (a symlink or anything
// else swapped in after the listing is skipped), and only regular files and directories are
// copied; named pipes, sockets and devices are told and skipped, never opened for reading.
func writeFileSync(w io.Writer, entries []config.FileSync, warn func(string)) error {
	tw := tar.NewWriter(w)
	for i, e := range entries {
		rel := strings.TrimPrefix(e.Guest, "/root/")
		mode := e.Mode
		if mode == 0 {
			mode = 0o600
		}
		syncer := &fileSync{tw: tw, mode: mode, warn: func(msg string) { warn(fmt.Sprintf("file_sync[%d]: %s", i+1, msg)) }}
		if err := syncer.entry(e.Host, rel); err != nil {
			return fmt.Errorf("file_sync[%d]: %w", i+1, err)
		}
	}
	return tw.Close()
}

// fileSyncBeforeOpen, when set (by tests), runs between listing an entry of a synced directory
// and opening it: the window in which a file can be swapped for a symlink or a named pipe.
var fileSyncBeforeOpen func(path string)

// openFlags never block on a named pipe swapped in for a file, nor make a terminal ours.
const openFlags = os.O_RDONLY | syscall.O_NONBLOCK | syscall.O_NOCTTY

type fileSync struct {
	tw   *tar.Writer
	mode os.FileMode
	warn func(string)
}

// entry copies one configured host path (followed if it is a symlink) to name.
func (s *fileSync) entry(host, name string) error {
	f, err := os.OpenFile(host, openFlags, 0)
	if err != nil {
		s.warn(fmt.Sprintf("%s: %v; skipped", host, err))
		return nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	switch {
	case st.Mode().IsRegular():
		return s.copyFile(f, st, host, name)
	case st.IsDir():
		root, err := os.OpenRoot(host)
		if err != nil {
			return err
		}
		defer root.Close()
		if rst, err := root.Stat("."); err != nil || !os.SameFile(st, rst) {
			s.warn(fmt.Sprintf("%s changed while being copied; skipped", host))
			return nil
		}
		return s.dir(root, host, name)
	default:
		s.warn(fmt.Sprintf("%s is %s; skipped (only regular files and directories are copied)", host, kind(st.Mode())))
		return nil
	}
}

// dir copies the directory open as root (host names it in notices) to name, recursively.
func (s *fileSync) dir(root *os.Root, host, name string) error {
	if err := s.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o700}); err != nil {
		return err
	}
	d, err := root.Open(".")
	if err != nil {
		return err
	}
	list, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("list %s: %w", host, err)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name() < list[j].Name() })
	for _, de := range list {
		if err := s.child(root, filepath.Join(host, de.Name()), de.Name(), path.Join(name, de.Name())); err != nil {
			return err
		}
	}
	return nil
}

// child copies the entry base of the directory open as root, never following a symlink.
func (s *fileSync) child(root *os.Root, host, base, name string) error {
	st, err := root.Lstat(base)
	if err != nil {
		s.warn(fmt.Sprintf("%s: %v; skipped", host, err))
		return nil
	}
	switch {
	case st.Mode()&fs.ModeSymlink != 0:
		s.warn(fmt.Sprintf("%s is a symlink; skipped (links in synced directories are never followed)", host))
		return nil
	case !st.IsDir() && !st.Mode().IsRegular():
		s.warn(fmt.Sprintf("%s is %s; skipped (only regular files and directories are copied)", host, kind(st.Mode())))
		return nil
	}
	if fileSyncBeforeOpen != nil {
		fileSyncBeforeOpen(host)
	}
	changed := func() error {
		s.warn(fmt.Sprintf("%s changed while being copied (a symlink or another file put in its place); skipped", host))
		return nil
	}
	if st.IsDir() {
		sub, err := root.OpenRoot(base)
		if err != nil {
			return changed()
		}
		defer sub.Close()
		// os.Root follows a symlink that stays inside the tree; the check against the listing
		// makes sure none was.
		if sst, err := sub.Stat("."); err != nil || !os.SameFile(st, sst) {
			return changed()
		}
		return s.dir(sub, host, name)
	}
	f, err := root.OpenFile(base, openFlags, 0)
	if err != nil {
		return changed()
	}
	defer f.Close()
	fst, err := f.Stat()
	if err != nil || !fst.Mode().IsRegular() || !os.SameFile(st, fst) {
		return changed()
	}
	return s.copyFile(f, fst, host, name)
}

func (s *fileSync) copyFile(f *os.File, st os.FileInfo, host, name string) error {
	if err := s.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(s.mode), Size: st.Size(), ModTime: st.ModTime()}); err != nil {
		return err
	}
	if _, err := io.CopyN(s.tw, f, st.Size()); err != nil {
		return fmt.Errorf("copy %s: %w", host, err)
	}
	return nil
}

// kind names a non-regular file for a notice.
func kind(m os.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	}
	return "not a regular file"
}
