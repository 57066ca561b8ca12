package vmservice

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/steps"
)

// StepFiles is the create step that copies [[file_sync]] entries into the guest.
const StepFiles = "files"

// fileSyncStep copies the configured host files and directories into a new VM, through its
// agent. A missing host path is told and skipped; symlinks inside a directory are told and
// skipped (never followed out of the tree); files get the entry's mode, 0600 by default.
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
func writeFileSync(w io.Writer, entries []config.FileSync, warn func(string)) error {
	tw := tar.NewWriter(w)
	for i, e := range entries {
		rel := strings.TrimPrefix(e.Guest, "/root/")
		st, err := os.Stat(e.Host)
		if err != nil {
			warn(fmt.Sprintf("file_sync[%d]: %s: %v; skipped", i+1, e.Host, err))
			continue
		}
		mode := e.Mode
		if mode == 0 {
			mode = 0o600
		}
		if !st.IsDir() {
			if err := addFile(tw, e.Host, rel, mode); err != nil {
				return err
			}
			continue
		}
		err = filepath.WalkDir(e.Host, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			sub, _ := filepath.Rel(e.Host, p)
			name := filepath.ToSlash(filepath.Join(rel, sub))
			switch {
			case d.IsDir():
				return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o700})
			case d.Type()&fs.ModeSymlink != 0:
				warn(fmt.Sprintf("file_sync[%d]: %s is a symlink; skipped (links in synced directories are never followed)", i+1, p))
				return nil
			case d.Type().IsRegular():
				return addFile(tw, p, name, mode)
			}
			return nil // sockets, devices: nothing to copy
		})
		if err != nil {
			return fmt.Errorf("file_sync[%d]: %w", i+1, err)
		}
	}
	return tw.Close()
}

func addFile(tw *tar.Writer, path, name string, mode os.FileMode) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(mode), Size: st.Size(), ModTime: st.ModTime()}); err != nil {
		return err
	}
	_, err = io.CopyN(tw, f, st.Size())
	return err
}
