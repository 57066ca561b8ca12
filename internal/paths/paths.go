// Package paths owns where banger keeps things on the host: the XDG config, state and cache
// directories, the files and directories derived from them, the daemon's unix socket, and the
// banger-agent binary that bangerd uses (Agent). The directories are computed from a Layout,
// which, like Agent, reads an injected environment so that tests never read or change the
// real one.
package paths

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// App is the directory name banger uses inside each XDG base directory.
const App = "banger"

// LookupFunc reads an environment variable, like os.LookupEnv.
type LookupFunc func(key string) (string, bool)

// Layout is the resolved set of banger's host directories. Build it with New or FromEnv; the
// zero value is not usable.
type Layout struct {
	// Home is the user's home directory ("" if unknown and not needed).
	Home string
	// UID is the user banger runs as.
	UID int
	// ConfigDir holds config.toml: $XDG_CONFIG_HOME/banger, default ~/.config/banger.
	ConfigDir string
	// StateDir holds the database, log, kernels, images and VMs: $XDG_STATE_HOME/banger,
	// default ~/.local/state/banger.
	StateDir string
	// CacheDir holds re-downloadable data: $XDG_CACHE_HOME/banger, default ~/.cache/banger.
	CacheDir string
	// Socket is the daemon's unix socket; see New for how it is chosen.
	Socket string
	// SocketFromEnv reports whether Socket came from $BANGER_SOCKET.
	SocketFromEnv bool
}

// New resolves the layout from lookup (an environment), the user's uid and home directory.
//
// Each base directory is taken from its XDG variable ($XDG_CONFIG_HOME, $XDG_STATE_HOME,
// $XDG_CACHE_HOME) when that is set to an absolute path; an empty or relative value is ignored,
// as the XDG Base Directory spec requires, and the default under home is used instead. root is
// treated like any other user.
//
// The daemon socket is, in order: $BANGER_SOCKET (must be absolute); or
// $XDG_RUNTIME_DIR/banger/bangerd.sock when $XDG_RUNTIME_DIR is absolute; or
// /run/banger/bangerd.sock for uid 0; or /tmp/banger-<uid>/bangerd.sock.
//
// New fails only when a default is needed and home is empty or relative, or when
// $BANGER_SOCKET is relative. It does not check the socket's length; see CheckSocketPath.
func New(lookup LookupFunc, uid int, home string) (Layout, error) {
	l := Layout{Home: home, UID: uid}
	var err error
	if l.ConfigDir, err = xdgDir(lookup, "XDG_CONFIG_HOME", home, ".config"); err != nil {
		return Layout{}, err
	}
	if l.StateDir, err = xdgDir(lookup, "XDG_STATE_HOME", home, filepath.Join(".local", "state")); err != nil {
		return Layout{}, err
	}
	if l.CacheDir, err = xdgDir(lookup, "XDG_CACHE_HOME", home, ".cache"); err != nil {
		return Layout{}, err
	}
	if l.Socket, l.SocketFromEnv, err = socketPath(lookup, uid); err != nil {
		return Layout{}, err
	}
	return l, nil
}

// FromEnv resolves the layout of the current process from the real environment, uid and home
// directory ($HOME, or the passwd entry when $HOME is unset or relative).
func FromEnv() (Layout, error) {
	uid := os.Getuid()
	home := os.Getenv("HOME")
	if !filepath.IsAbs(home) {
		home = ""
		if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && filepath.IsAbs(u.HomeDir) {
			home = u.HomeDir
		}
	}
	return New(os.LookupEnv, uid, home)
}

// xdgDir returns $key/banger when $key is absolute, else home/fallback/banger.
func xdgDir(lookup LookupFunc, key, home, fallback string) (string, error) {
	if v, ok := lookup(key); ok && filepath.IsAbs(v) {
		return filepath.Join(v, App), nil
	}
	if !filepath.IsAbs(home) {
		if home == "" {
			return "", fmt.Errorf("cannot place banger's files: home directory unknown and $%s not set; set HOME or %s to an absolute path", key, key)
		}
		return "", fmt.Errorf("cannot place banger's files: home directory %q is not absolute and $%s not set; set HOME or %s to an absolute path", home, key, key)
	}
	return filepath.Join(home, fallback, App), nil
}
