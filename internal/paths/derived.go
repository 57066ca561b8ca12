package paths

import (
	"path/filepath"
	"strings"
)

// ConfigFile is the user's configuration file, <config dir>/config.toml.
func (l Layout) ConfigFile() string { return filepath.Join(l.ConfigDir, "config.toml") }

// DBFile is the daemon's SQLite database, <state dir>/banger.db.
func (l Layout) DBFile() string { return filepath.Join(l.StateDir, "banger.db") }

// LogFile is the daemon's log, <state dir>/bangerd.log.
func (l Layout) LogFile() string { return filepath.Join(l.StateDir, "bangerd.log") }

// KernelsDir holds pulled kernels, <state dir>/kernels.
func (l Layout) KernelsDir() string { return filepath.Join(l.StateDir, "kernels") }

// ImagesDir holds built images, <state dir>/images.
func (l Layout) ImagesDir() string { return filepath.Join(l.StateDir, "images") }

// SnapshotsDir holds saved guests (package snapshot), <state dir>/snapshots.
func (l Layout) SnapshotsDir() string { return filepath.Join(l.StateDir, "snapshots") }

// VMsDir holds one directory per VM, <state dir>/vms.
func (l Layout) VMsDir() string { return filepath.Join(l.StateDir, "vms") }

// TmpDir is scratch space on the same filesystem as the state dir, so that work staged there
// can be published into kernels/, images/ or vms/ with an atomic rename: <state dir>/tmp.
func (l Layout) TmpDir() string { return filepath.Join(l.StateDir, "tmp") }

// SSHDir holds banger's own SSH key pair, <state dir>/ssh.
func (l Layout) SSHDir() string { return filepath.Join(l.StateDir, "ssh") }

// DownloadsDir caches downloaded artifacts, <cache dir>/downloads.
func (l Layout) DownloadsDir() string { return filepath.Join(l.CacheDir, "downloads") }

// RuntimeDir holds the daemon socket and per-VM sockets: the directory of Socket.
func (l Layout) RuntimeDir() string { return filepath.Dir(l.Socket) }

// VMRuntimeDir holds the per-VM socket directories of the daemon on Socket. It is named after
// the socket so that daemons on different sockets in one directory never share it.
func (l Layout) VMRuntimeDir() string {
	return filepath.Join(l.RuntimeDir(), strings.TrimSuffix(filepath.Base(l.Socket), ".sock")+".vms")
}
