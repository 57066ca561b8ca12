package durable

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// A Staging is a directory in which something (a kernel, an image) is put together before it
// is published whole under its final name in the same parent directory. Until then its name
// is hidden (it starts with a dot) and Discard removes it, so that a failure at any step
// leaves nothing behind. The usual shape:
//
//	st, err := durable.Stage(parent, name+".pull")
//	if err != nil { … }
//	defer st.Discard()
//	… fill st.Dir …
//	return st.Publish(final)
type Staging struct {
	// Dir is the staging directory.
	Dir string
	// FilesSynced tells Publish that the caller fsynced every file it put in Dir as it wrote
	// it, so that fsyncing Dir itself is enough; otherwise Publish flushes Dir's whole file
	// system (SyncTree).
	FilesSynced bool
	published   bool
}

// Stage creates an empty staging directory in parent, named "."+name+"-" and a random suffix.
func Stage(parent, name string) (*Staging, error) {
	dir, err := os.MkdirTemp(parent, "."+name+"-*")
	if err != nil {
		return nil, fmt.Errorf("create a staging directory in %s: %w", parent, err)
	}
	return &Staging{Dir: dir}, nil
}

// Publish makes what is in Dir durable (see FilesSynced) and renames Dir to final, which must
// be in the same parent and must not exist, then fsyncs the parent so that the rename
// survives a crash. On error Dir stays where it was, for Discard.
func (s *Staging) Publish(final string) error {
	sync := SyncTree
	if s.FilesSynced {
		sync = SyncDir
	}
	if err := sync(s.Dir); err != nil {
		return err
	}
	if err := rename(s.Dir, final); err != nil {
		return err
	}
	s.published = true
	return nil
}

// Discard removes Dir and everything in it unless Publish succeeded; it is meant to be
// deferred. It returns the removal's error.
func (s *Staging) Discard() error {
	if s.published {
		return nil
	}
	if err := os.RemoveAll(s.Dir); err != nil {
		return fmt.Errorf("remove the staging directory %s: %w", s.Dir, err)
	}
	return nil
}

// rename renames staged to final, which must not exist, and fsyncs final's directory.
func rename(staged, final string) error {
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("publish %s: it already exists", final)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("publish %s: %w", final, err)
	}
	if err := os.Rename(staged, final); err != nil {
		return fmt.Errorf("publish %s: %w", final, err)
	}
	return SyncDir(filepath.Dir(final))
}
