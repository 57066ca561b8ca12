package paths

import (
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
	t.Run("BANGER_SOCKET directory is the user's business", func(t *testing.T) {
		base := t.TempDir()
		shared := filepath.Join(base, "shared")
		if err := os.Mkdir(shared, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(shared, 0o1777); err != nil {
			t.Fatal(err)
		}
		l, err := New(env(map[string]string{
			"XDG_STATE_HOME": filepath.Join(base, "state"),
			"XDG_CACHE_HOME": filepath.Join(base, "cache"),
			"BANGER_SOCKET":  filepath.Join(shared, "b.sock"),
		}), os.Getuid(), "/nonexistent")
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Create(); err != nil {
			t.Errorf("Create() = %v, want nil for a BANGER_SOCKET in a shared directory", err)
		}
	})
}

func TestVMRuntimeDirIsPerSocket(t *testing.T) {
	a := Layout{Socket: "/run/banger/bangerd.sock"}
	b := Layout{Socket: "/run/banger/other.sock"}
	if a.VMRuntimeDir() != "/run/banger/bangerd.vms" || b.VMRuntimeDir() != "/run/banger/other.vms" {
		t.Errorf("VMRuntimeDir = %q, %q; want one directory per socket", a.VMRuntimeDir(), b.VMRuntimeDir())
	}
}
