package paths

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// env returns a LookupFunc over a fixed map.
func env(vars map[string]string) LookupFunc {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

func TestNewDirectories(t *testing.T) {
	tests := []struct {
		name                 string
		vars                 map[string]string
		uid                  int
		home                 string
		config, state, cache string
		socket               string
		socketFromEnv        bool
	}{
		{
			name:   "defaults under home",
			vars:   nil,
			uid:    1000,
			home:   "/home/ann",
			config: "/home/ann/.config/banger",
			state:  "/home/ann/.local/state/banger",
			cache:  "/home/ann/.cache/banger",
			socket: "/tmp/banger-1000/bangerd.sock",
		},
		{
			name: "XDG variables win",
			vars: map[string]string{
				"XDG_CONFIG_HOME": "/x/config",
				"XDG_STATE_HOME":  "/x/state",
				"XDG_CACHE_HOME":  "/x/cache",
				"XDG_RUNTIME_DIR": "/run/user/1000",
			},
			uid:    1000,
			home:   "/home/ann",
			config: "/x/config/banger",
			state:  "/x/state/banger",
			cache:  "/x/cache/banger",
			socket: "/run/user/1000/banger/bangerd.sock",
		},
		{
			name: "relative XDG values are ignored",
			vars: map[string]string{
				"XDG_CONFIG_HOME": "rel/config",
				"XDG_STATE_HOME":  "./state",
				"XDG_CACHE_HOME":  "cache",
				"XDG_RUNTIME_DIR": "run",
			},
			uid:    1000,
			home:   "/home/ann",
			config: "/home/ann/.config/banger",
			state:  "/home/ann/.local/state/banger",
			cache:  "/home/ann/.cache/banger",
			socket: "/tmp/banger-1000/bangerd.sock",
		},
		{
			name: "empty XDG values are ignored",
			vars: map[string]string{
				"XDG_CONFIG_HOME": "",
				"XDG_RUNTIME_DIR": "",
				"BANGER_SOCKET":   "",
			},
			uid:    1000,
			home:   "/home/ann",
			config: "/home/ann/.config/banger",
			state:  "/home/ann/.local/state/banger",
			cache:  "/home/ann/.cache/banger",
			socket: "/tmp/banger-1000/bangerd.sock",
		},
		{
			name:   "root uses home and /run",
			uid:    0,
			home:   "/root",
			config: "/root/.config/banger",
			state:  "/root/.local/state/banger",
			cache:  "/root/.cache/banger",
			socket: "/run/banger/bangerd.sock",
		},
		{
			name:   "root with XDG_RUNTIME_DIR uses it",
			vars:   map[string]string{"XDG_RUNTIME_DIR": "/run/user/0"},
			uid:    0,
			home:   "/root",
			config: "/root/.config/banger",
			state:  "/root/.local/state/banger",
			cache:  "/root/.cache/banger",
			socket: "/run/user/0/banger/bangerd.sock",
		},
		{
			name:          "BANGER_SOCKET wins over XDG_RUNTIME_DIR",
			vars:          map[string]string{"BANGER_SOCKET": "/srv/b//x.sock", "XDG_RUNTIME_DIR": "/run/user/1000"},
			uid:           1000,
			home:          "/home/ann",
			config:        "/home/ann/.config/banger",
			state:         "/home/ann/.local/state/banger",
			cache:         "/home/ann/.cache/banger",
			socket:        "/srv/b/x.sock",
			socketFromEnv: true,
		},
		{
			name: "no home needed when every XDG variable is set",
			vars: map[string]string{
				"XDG_CONFIG_HOME": "/c",
				"XDG_STATE_HOME":  "/s",
				"XDG_CACHE_HOME":  "/k",
			},
			uid:    1000,
			home:   "",
			config: "/c/banger",
			state:  "/s/banger",
			cache:  "/k/banger",
			socket: "/tmp/banger-1000/bangerd.sock",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := New(env(tt.vars), tt.uid, tt.home)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			check := func(what, got, want string) {
				t.Helper()
				if got != want {
					t.Errorf("%s = %q, want %q", what, got, want)
				}
			}
			check("ConfigDir", l.ConfigDir, tt.config)
			check("StateDir", l.StateDir, tt.state)
			check("CacheDir", l.CacheDir, tt.cache)
			check("Socket", l.Socket, tt.socket)
			check("RuntimeDir", l.RuntimeDir(), filepath.Dir(tt.socket))
			if l.SocketFromEnv != tt.socketFromEnv {
				t.Errorf("SocketFromEnv = %v, want %v", l.SocketFromEnv, tt.socketFromEnv)
			}
			if l.UID != tt.uid || l.Home != tt.home {
				t.Errorf("UID, Home = %d, %q; want %d, %q", l.UID, l.Home, tt.uid, tt.home)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name    string
		vars    map[string]string
		home    string
		wantSub []string
	}{
		{"no home and no XDG", nil, "", []string{"home directory unknown", "XDG_CONFIG_HOME", "set HOME"}},
		{"relative home", nil, "home/ann", []string{`home directory "home/ann" is not absolute`}},
		{
			"missing only the state dir",
			map[string]string{"XDG_CONFIG_HOME": "/c", "XDG_CACHE_HOME": "/k"},
			"",
			[]string{"XDG_STATE_HOME"},
		},
		{
			"relative BANGER_SOCKET",
			map[string]string{"BANGER_SOCKET": "b.sock"},
			"/home/ann",
			[]string{`BANGER_SOCKET="b.sock" is not an absolute path`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(env(tt.vars), 1000, tt.home)
			if err == nil {
				t.Fatalf("New succeeded, want an error containing %q", tt.wantSub)
			}
			for _, sub := range tt.wantSub {
				if !strings.Contains(err.Error(), sub) {
					t.Errorf("error %q does not contain %q", err, sub)
				}
			}
		})
	}
}

func TestDerivedPaths(t *testing.T) {
	l, err := New(env(map[string]string{
		"XDG_CONFIG_HOME": "/c",
		"XDG_STATE_HOME":  "/s",
		"XDG_CACHE_HOME":  "/k",
		"XDG_RUNTIME_DIR": "/r",
	}), 1000, "/home/ann")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, got, want string }{
		{"ConfigFile", l.ConfigFile(), "/c/banger/config.toml"},
		{"DBFile", l.DBFile(), "/s/banger/banger.db"},
		{"LogFile", l.LogFile(), "/s/banger/bangerd.log"},
		{"KernelsDir", l.KernelsDir(), "/s/banger/kernels"},
		{"ImagesDir", l.ImagesDir(), "/s/banger/images"},
		{"VMsDir", l.VMsDir(), "/s/banger/vms"},
		{"TmpDir", l.TmpDir(), "/s/banger/tmp"},
		{"SSHDir", l.SSHDir(), "/s/banger/ssh"},
		{"DownloadsDir", l.DownloadsDir(), "/k/banger/downloads"},
		{"RuntimeDir", l.RuntimeDir(), "/r/banger"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s() = %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestFromEnvUsesProcessEnvironment(t *testing.T) {
	t.Setenv("HOME", "/home/from-env")
	t.Setenv("XDG_STATE_HOME", "/from/env/state")
	t.Setenv("BANGER_SOCKET", "/from/env/b.sock")
	l, err := FromEnv()
	if err != nil {
		t.Fatalf("FromEnv: %v", err)
	}
	if l.Home != "/home/from-env" || l.StateDir != "/from/env/state/banger" || l.Socket != "/from/env/b.sock" || l.UID != os.Getuid() {
		t.Errorf("FromEnv() = %+v; want Home /home/from-env, StateDir /from/env/state/banger, Socket /from/env/b.sock, UID %d", l, os.Getuid())
	}
}

func TestCheckSocketPath(t *testing.T) {
	ok := "/" + strings.Repeat("a", MaxSocketPathLen-1)
	if err := CheckSocketPath(ok); err != nil {
		t.Errorf("CheckSocketPath(%d bytes) = %v, want nil", len(ok), err)
	}
	long := ok + "b"
	err := CheckSocketPath(long)
	if err == nil {
		t.Fatalf("CheckSocketPath(%d bytes) = nil, want an error", len(long))
	}
	for _, sub := range []string{long, "is 108 bytes", "limit of 107", "BANGER_SOCKET"} {
		if !strings.Contains(err.Error(), sub) {
			t.Errorf("error %q does not contain %q", err, sub)
		}
	}
}

func TestCreate(t *testing.T) {
	base := t.TempDir()
	l, err := New(env(map[string]string{
		"XDG_STATE_HOME":  filepath.Join(base, "state"),
		"XDG_CACHE_HOME":  filepath.Join(base, "cache"),
		"XDG_RUNTIME_DIR": filepath.Join(base, "run"),
	}), os.Getuid(), filepath.Join(base, "home"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Create(); err != nil {
		t.Fatalf("Create: %v", err)
	}
	for _, d := range []string{l.StateDir, l.KernelsDir(), l.ImagesDir(), l.VMsDir(), l.TmpDir(), l.SSHDir(), l.DownloadsDir(), l.RuntimeDir()} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Errorf("Create did not make %s: %v", d, err)
			continue
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %s, want no group/other permissions", d, fi.Mode())
		}
	}
	if _, err := os.Stat(l.ConfigDir); !os.IsNotExist(err) {
		t.Errorf("Create touched the config dir %s (stat err %v); it belongs to the user", l.ConfigDir, err)
	}
	if err := l.Create(); err != nil {
		t.Errorf("second Create: %v, want it to be idempotent", err)
	}
}

func TestCreateRejectsUnsafeRuntimeDir(t *testing.T) {
	newLayout := func(t *testing.T, base string, uid int) Layout {
		l, err := New(env(map[string]string{
			"XDG_STATE_HOME":  filepath.Join(base, "state"),
			"XDG_CACHE_HOME":  filepath.Join(base, "cache"),
			"XDG_RUNTIME_DIR": filepath.Join(base, "run"),
		}), uid, "/nonexistent")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	t.Run("open permissions", func(t *testing.T) {
		base := t.TempDir()
		l := newLayout(t, base, os.Getuid())
		if err := os.MkdirAll(l.RuntimeDir(), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(l.RuntimeDir(), 0o777); err != nil {
			t.Fatal(err)
		}
		err := l.Create()
		if err == nil || !strings.Contains(err.Error(), "mode 0777") || !strings.Contains(err.Error(), "chmod 700") {
			t.Errorf("Create() = %v, want an error about mode 0777 suggesting chmod 700", err)
		}
	})
	t.Run("symlink", func(t *testing.T) {
		base := t.TempDir()
		l := newLayout(t, base, os.Getuid())
		if err := os.MkdirAll(filepath.Dir(l.RuntimeDir()), 0o700); err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(base, "elsewhere")
		if err := os.Mkdir(target, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, l.RuntimeDir()); err != nil {
			t.Fatal(err)
		}
		err := l.Create()
		if err == nil || !strings.Contains(err.Error(), "is a symlink") {
			t.Errorf("Create() = %v, want an error saying the runtime dir is a symlink", err)
		}
	})
	t.Run("regular file", func(t *testing.T) {
		base := t.TempDir()
		l := newLayout(t, base, os.Getuid())
		if err := os.MkdirAll(filepath.Dir(l.RuntimeDir()), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(l.RuntimeDir(), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		err := l.Create()
		if err == nil || !strings.Contains(err.Error(), l.RuntimeDir()) {
			t.Errorf("Create() = %v, want an error naming %s", err, l.RuntimeDir())
		}
	})
	t.Run("other owner", func(t *testing.T) {
		base := t.TempDir()
		l := newLayout(t, base, os.Getuid()+1)
		err := l.Create()
		if err == nil || !strings.Contains(err.Error(), "is owned by uid") {
			t.Errorf("Create() = %v, want an error about the owner", err)
		}
	})
}

// nobody is the uid and gid of "another user" in these tests (they chown, so they need root).
const nobody = 65534

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to plant directories owned by another user")
	}
}

// envLayout is a layout whose socket comes from BANGER_SOCKET=socket, as the CLI always
// starts the daemon.
func envLayout(t *testing.T, base, socket string) Layout {
	t.Helper()
	l, err := New(env(map[string]string{
		"XDG_STATE_HOME": filepath.Join(base, "state"),
		"XDG_CACHE_HOME": filepath.Join(base, "cache"),
		"BANGER_SOCKET":  socket,
	}), os.Getuid(), "/nonexistent")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mkdir(t *testing.T, dir string, mode os.FileMode, uid int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(dir, uid, uid); err != nil {
		t.Fatal(err)
	}
}

func wantUnsafe(t *testing.T, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil, want a refusal containing %q", subs)
	}
	if !errors.Is(err, ErrUnsafe) {
		t.Errorf("error %v is not ErrUnsafe", err)
	}
	for _, sub := range subs {
		if !strings.Contains(err.Error(), sub) {
			t.Errorf("error %q does not contain %q", err, sub)
		}
	}
}

// TestSecureRuntimeWithBangerSocket: the CLI always starts the daemon with BANGER_SOCKET set;
// the runtime directories are checked all the same (they were not: issue 13, item 2).
func TestSecureRuntimeWithBangerSocket(t *testing.T) {
	needRoot(t)
	t.Run("socket directory planted by another user", func(t *testing.T) {
		base := t.TempDir()
		run := filepath.Join(base, "run")
		mkdir(t, run, 0o700, nobody)
		err := envLayout(t, base, filepath.Join(run, "b.sock")).Create()
		wantUnsafe(t, err, run, "owned by uid 65534", "not by uid 0", "BANGER_SOCKET")
	})
	t.Run("VM socket directory planted by another user", func(t *testing.T) {
		base := t.TempDir()
		vms := filepath.Join(base, "run", "b.vms")
		mkdir(t, filepath.Join(base, "run"), 0o700, 0)
		mkdir(t, vms, 0o700, nobody)
		err := envLayout(t, base, filepath.Join(base, "run", "b.sock")).Create()
		wantUnsafe(t, err, vms, "owned by uid 65534")
	})
	t.Run("VM socket directory is a symlink", func(t *testing.T) {
		base := t.TempDir()
		mkdir(t, filepath.Join(base, "run"), 0o700, 0)
		mkdir(t, filepath.Join(base, "elsewhere"), 0o700, 0)
		if err := os.Symlink(filepath.Join(base, "elsewhere"), filepath.Join(base, "run", "b.vms")); err != nil {
			t.Fatal(err)
		}
		err := envLayout(t, base, filepath.Join(base, "run", "b.sock")).Create()
		wantUnsafe(t, err, "b.vms is a symlink")
	})
	t.Run("VM socket directory open to the group", func(t *testing.T) {
		base := t.TempDir()
		mkdir(t, filepath.Join(base, "run"), 0o700, 0)
		mkdir(t, filepath.Join(base, "run", "b.vms"), 0o770, 0)
		err := envLayout(t, base, filepath.Join(base, "run", "b.sock")).Create()
		wantUnsafe(t, err, "mode 0770", "chmod 700")
	})
	t.Run("a VM's directory planted by another user", func(t *testing.T) {
		base := t.TempDir()
		mkdir(t, filepath.Join(base, "run", "b.vms"), 0o700, 0)
		mkdir(t, filepath.Join(base, "run", "b.vms", "vm1"), 0o700, nobody)
		l := envLayout(t, base, filepath.Join(base, "run", "b.sock"))
		wantUnsafe(t, l.Create(), "vm1 is owned by uid 65534")
		_, err := l.SecureVMRuntimeDir("vm1")
		wantUnsafe(t, err, "vm1 is owned by uid 65534")
	})
	t.Run("socket directory in a shared sticky directory", func(t *testing.T) {
		base := t.TempDir()
		shared := filepath.Join(base, "shared")
		mkdir(t, shared, os.ModeSticky|0o777, 0)
		err := envLayout(t, base, filepath.Join(shared, "b.sock")).Create()
		wantUnsafe(t, err, shared, "shared with other users")
		if _, err := os.Lstat(filepath.Join(shared, "b.vms")); err == nil {
			t.Errorf("Create made b.vms in the shared directory before refusing")
		}
	})
	t.Run("socket directory writable by others", func(t *testing.T) {
		base := t.TempDir()
		run := filepath.Join(base, "run")
		mkdir(t, run, 0o777, 0)
		wantUnsafe(t, envLayout(t, base, filepath.Join(run, "b.sock")).Create(), "mode 0777", "chmod go-w")
	})
	t.Run("directory above owned by another user", func(t *testing.T) {
		base := t.TempDir()
		evil := filepath.Join(base, "evil")
		mkdir(t, evil, 0o755, nobody)
		mkdir(t, filepath.Join(evil, "run"), 0o700, 0)
		err := envLayout(t, base, filepath.Join(evil, "run", "b.sock")).Create()
		wantUnsafe(t, err, evil, "owned by uid 65534", "must belong to root or to uid 0")
	})
	t.Run("directory above writable by others, not sticky", func(t *testing.T) {
		base := t.TempDir()
		open := filepath.Join(base, "open")
		mkdir(t, open, 0o777, 0)
		wantUnsafe(t, envLayout(t, base, filepath.Join(open, "run", "b.sock")).Create(), open, "mode 0777")
	})
	t.Run("symlink above owned by another user", func(t *testing.T) {
		base := t.TempDir()
		mkdir(t, filepath.Join(base, "real"), 0o755, 0)
		link := filepath.Join(base, "link")
		if err := os.Symlink(filepath.Join(base, "real"), link); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(link, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		wantUnsafe(t, envLayout(t, base, filepath.Join(link, "run", "b.sock")).Create(), link, "a symlink", "owned by uid 65534")
	})
	t.Run("symlink above leading to another user's directory", func(t *testing.T) {
		base := t.TempDir()
		theirs := filepath.Join(base, "theirs")
		mkdir(t, theirs, 0o755, nobody)
		link := filepath.Join(base, "link")
		if err := os.Symlink(theirs, link); err != nil {
			t.Fatal(err)
		}
		wantUnsafe(t, envLayout(t, base, filepath.Join(link, "run", "b.sock")).Create(), theirs, "owned by uid 65534")
	})
	t.Run("trusted symlink above is followed", func(t *testing.T) {
		base := t.TempDir()
		mkdir(t, filepath.Join(base, "real"), 0o755, 0)
		if err := os.Symlink("real", filepath.Join(base, "link")); err != nil {
			t.Fatal(err)
		}
		l := envLayout(t, base, filepath.Join(base, "link", "run", "b.sock"))
		if err := l.Create(); err != nil {
			t.Fatalf("Create: %v", err)
		}
		if fi, err := os.Lstat(filepath.Join(base, "real", "run", "b.vms")); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("b.vms not created 0700 through the symlink: %v %v", fi, err)
		}
	})
	t.Run("home directory with the usual 0755 is fine", func(t *testing.T) {
		base := t.TempDir()
		home := filepath.Join(base, "home")
		mkdir(t, home, 0o755, 0)
		if err := envLayout(t, base, filepath.Join(home, ".banger.sock")).Create(); err != nil {
			t.Errorf("Create: %v", err)
		}
	})
}

// TestSecureRuntimeUnderRealTmp is the layout of the end-to-end tests and of the default for
// users without XDG_RUNTIME_DIR: a directory of one's own in /tmp (root's, sticky, 1777).
func TestSecureRuntimeUnderRealTmp(t *testing.T) {
	base, err := os.MkdirTemp("/tmp", "banger-paths-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	l := envLayout(t, base, filepath.Join(base, "run", "bangerd.sock"))
	if err := l.Create(); err != nil {
		t.Fatalf("Create: %v", err)
	}
	dir, err := l.SecureVMRuntimeDir("0123abcd")
	if err != nil {
		t.Fatalf("SecureVMRuntimeDir: %v", err)
	}
	for _, d := range []string{l.RuntimeDir(), l.VMRuntimeDir(), dir} {
		fi, err := os.Lstat(d)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v; want a 0700 directory", d, fi, err)
		}
	}
	if err := l.Create(); err != nil {
		t.Errorf("second Create (VM directory present): %v", err)
	}
	if _, err := l.SecureVMRuntimeDir("../x"); err == nil {
		t.Errorf("SecureVMRuntimeDir accepted an id with a slash")
	}
}

func TestVMRuntimeDirIsPerSocket(t *testing.T) {
	a := Layout{Socket: "/run/banger/bangerd.sock"}
	b := Layout{Socket: "/run/banger/other.sock"}
	if a.VMRuntimeDir() != "/run/banger/bangerd.vms" || b.VMRuntimeDir() != "/run/banger/other.vms" {
		t.Errorf("VMRuntimeDir = %q, %q; want one directory per socket", a.VMRuntimeDir(), b.VMRuntimeDir())
	}
}
