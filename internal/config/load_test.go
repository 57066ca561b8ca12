package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/bytesize"
	"github.com/banger-dev/banger/internal/paths"
)

// testLayout is a layout with home /home/ann and state dir /s/banger.
func testLayout(t *testing.T) paths.Layout {
	t.Helper()
	vars := map[string]string{"XDG_STATE_HOME": "/s"}
	l, err := paths.New(func(k string) (string, bool) { v, ok := vars[k]; return v, ok }, 1000, "/home/ann")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// writeConfig writes content to a config.toml in a fresh directory and returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadMissingFileGivesDefaults(t *testing.T) {
	l := testLayout(t)
	path := filepath.Join(t.TempDir(), "nope", "config.toml")
	got, err := LoadFile(path, l)
	if err != nil {
		t.Fatalf("LoadFile(missing) error: %v", err)
	}
	want := Config{
		Path:             path,
		DefaultImageName: "debian-bookworm",
		DefaultKernel:    "debian-6.1",
		SSHKeyPath:       "/s/banger/ssh/id_ed25519",
		JailerChrootBase: "/s/banger/jailer",
		VMM:              VMMAuto,
		BootTimeout:      3 * time.Minute,
		WarmStart:        true,
		WarmSpares:       1,
		ConsoleLogSize:   4 << 20,
		BridgeName:       "banger0",
		BridgeCIDR:       netip.MustParsePrefix("172.16.0.0/24"),
		DNSPort:          53530,
		HelperSocket:     "/run/banger/helper.sock",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadFile(missing) =\n %+v\nwant\n %+v", got, want)
	}
}

func TestLoadUsesLayoutConfigFile(t *testing.T) {
	dir := t.TempDir()
	vars := map[string]string{"XDG_CONFIG_HOME": dir}
	l, err := paths.New(func(k string) (string, bool) { v, ok := vars[k]; return v, ok }, 1000, "/home/ann")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(l.ConfigDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.ConfigFile(), []byte(`default_kernel = "k"`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(l)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.DefaultKernel != "k" || c.Path != l.ConfigFile() {
		t.Errorf("Load() DefaultKernel, Path = %q, %q; want %q, %q", c.DefaultKernel, c.Path, "k", l.ConfigFile())
	}
}

func TestLoadUnreadableFile(t *testing.T) {
	dir := t.TempDir() // a directory is not a readable file
	_, err := LoadFile(dir, testLayout(t))
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("LoadFile(directory) = %v, want an error naming %s", err, dir)
	}
}

func TestLoadAcceptsEveryKey(t *testing.T) {
	l := testLayout(t)
	tests := []struct {
		name    string
		content string
		edit    func(c *Config) // applied to the defaults to get the expected config
	}{
		{"empty file", "", func(*Config) {}},
		{"comments only", "# nothing\n\n", func(*Config) {}},
		{"default_image_name", `default_image_name = "ubuntu"`, func(c *Config) { c.DefaultImageName = "ubuntu" }},
		{"default_kernel", `default_kernel = "mainline-6.12"`, func(c *Config) { c.DefaultKernel = "mainline-6.12" }},
		{"ssh_key_path absolute", `ssh_key_path = "/keys/id"`, func(c *Config) { c.SSHKeyPath = "/keys/id" }},
		{"ssh_key_path cleaned", `ssh_key_path = "/keys//x/../id"`, func(c *Config) { c.SSHKeyPath = "/keys/id" }},
		{"ssh_key_path ~/", `ssh_key_path = "~/.ssh/id_ed25519"`, func(c *Config) { c.SSHKeyPath = "/home/ann/.ssh/id_ed25519" }},
		{"firecracker_bin absolute", `firecracker_bin = "/opt/fc/firecracker"`, func(c *Config) { c.FirecrackerBin = "/opt/fc/firecracker" }},
		{"firecracker_bin ~/", `firecracker_bin = "~/bin/firecracker"`, func(c *Config) { c.FirecrackerBin = "/home/ann/bin/firecracker" }},
		{"firecracker_bin command name", `firecracker_bin = "firecracker-v1.10"`, func(c *Config) { c.FirecrackerBin = "firecracker-v1.10" }},
		{"firecracker_bin empty means unset", `firecracker_bin = ""`, func(*Config) {}},
		{"jailer_enabled true", `jailer_enabled = true`, func(c *Config) { v := true; c.JailerEnabled = &v }},
		{"jailer_enabled false", `jailer_enabled = false`, func(c *Config) { v := false; c.JailerEnabled = &v }},
		{"jailer_bin", `jailer_bin = "/opt/fc/jailer"`, func(c *Config) { c.JailerBin = "/opt/fc/jailer" }},
		{"jailer_bin command name", `jailer_bin = "jailer-v1.14"`, func(c *Config) { c.JailerBin = "jailer-v1.14" }},
		{"jailer_chroot_base", `jailer_chroot_base = "/srv/jailer/"`, func(c *Config) { c.JailerChrootBase = "/srv/jailer" }},
		{"jailer_chroot_base ~/", `jailer_chroot_base = "~/jails"`, func(c *Config) { c.JailerChrootBase = "/home/ann/jails" }},
		{"jailer_uid and jailer_gid", "jailer_uid = 123\njailer_gid = 100", func(c *Config) { c.JailerUID = 123; c.JailerGID = 100 }},
		{"qemu_bin", `qemu_bin = "/usr/local/bin/qemu-system-x86_64"`, func(c *Config) { c.QEMUBin = "/usr/local/bin/qemu-system-x86_64" }},
		{"qemu_bin command name", `qemu_bin = "qemu-kvm"`, func(c *Config) { c.QEMUBin = "qemu-kvm" }},
		{"vmm auto", `vmm = "auto"`, func(c *Config) { c.VMM = VMMAuto }},
		{"vmm firecracker", `vmm = "firecracker"`, func(c *Config) { c.VMM = VMMFirecracker }},
		{"vmm qemu", `vmm = "qemu"`, func(c *Config) { c.VMM = VMMQEMU }},
		{"debian_mirror https", `debian_mirror = "https://deb.debian.org/debian"`, func(c *Config) { c.DebianMirror = "https://deb.debian.org/debian" }},
		{"debian_mirror http trailing slash", `debian_mirror = "http://mirror.local:3142/debian/"`, func(c *Config) { c.DebianMirror = "http://mirror.local:3142/debian" }},
		{"debian_mirror empty means unset", `debian_mirror = ""`, func(*Config) {}},
		{"boot_timeout", `boot_timeout = "90s"`, func(c *Config) { c.BootTimeout = 90 * time.Second }},
		{"boot_timeout compound", `boot_timeout = "1m30s"`, func(c *Config) { c.BootTimeout = 90 * time.Second }},
		{"warm_start false", `warm_start = false`, func(c *Config) { c.WarmStart = false }},
		{"warm_start true", `warm_start = true`, func(*Config) {}},
		{"warm_spares none", `warm_spares = 0`, func(c *Config) { c.WarmSpares = 0 }},
		{"warm_spares most", `warm_spares = 8`, func(c *Config) { c.WarmSpares = 8 }},
		{"console_log_size", `console_log_size = "64K"`, func(c *Config) { c.ConsoleLogSize = 64 << 10 }},
		{"bridge_name", `bridge_name = "br-sandbox"`, func(c *Config) { c.BridgeName = "br-sandbox" }},
		{"bridge_cidr", `bridge_cidr = "10.99.0.0/16"`, func(c *Config) { c.BridgeCIDR = netip.MustParsePrefix("10.99.0.0/16") }},
		{"network_namespace", `network_namespace = "sandbox"`, func(c *Config) { c.NetworkNamespace = "sandbox" }},
		{"dns_upstreams", `dns_upstreams = ["1.1.1.1", "10.0.0.2:5353", "::1"]`, func(c *Config) { c.DNSUpstreams = []string{"1.1.1.1", "10.0.0.2:5353", "::1"} }},
		{"dns_port", `dns_port = 5300`, func(c *Config) { c.DNSPort = 5300 }},
		{"host_ports_open_to_guests", `host_ports_open_to_guests = [5432, 3142]`, func(c *Config) { c.HostPortsOpenToGuests = []uint16{5432, 3142} }},
		{"helper_socket", `helper_socket = "/run/banger-test//helper.sock"`, func(c *Config) { c.HelperSocket = "/run/banger-test/helper.sock" }},
		{"file_sync", "[[file_sync]]\nhost = \"~/.gitconfig\"\nguest = \"~/.gitconfig\"\n[[file_sync]]\nhost = \"/etc/ssl/mine\"\nguest = \"/root/certs/\"\nmode = \"0644\"",
			func(c *Config) {
				c.FileSync = []FileSync{{Host: "/home/ann/.gitconfig", Guest: "/root/.gitconfig"}, {Host: "/etc/ssl/mine", Guest: "/root/certs", Mode: 0o644}}
			}},
		{"vm_defaults.vcpu", "[vm_defaults]\nvcpu = 2", func(c *Config) { c.VMDefaults.VCPU = 2 }},
		{"vm_defaults.memory_mib", "[vm_defaults]\nmemory_mib = 2048", func(c *Config) { c.VMDefaults.MemoryMiB = 2048 }},
		{"vm_defaults.disk_size string", "[vm_defaults]\ndisk_size = \"20G\"", func(c *Config) { c.VMDefaults.DiskBytes = 20 * bytesize.GiB }},
		{"vm_defaults.disk_size fractional", "[vm_defaults]\ndisk_size = \"1.5GiB\"", func(c *Config) { c.VMDefaults.DiskBytes = 1536 * bytesize.MiB }},
		{"vm_defaults.disk_size integer MiB", "[vm_defaults]\ndisk_size = 4096", func(c *Config) { c.VMDefaults.DiskBytes = 4 * bytesize.GiB }},
		{"vm_defaults inline table", `vm_defaults = { vcpu = 3, memory_mib = 1024 }`, func(c *Config) { c.VMDefaults.VCPU = 3; c.VMDefaults.MemoryMiB = 1024 }},
		{"vm_defaults dotted keys", "vm_defaults.vcpu = 4", func(c *Config) { c.VMDefaults.VCPU = 4 }},
		{"empty vm_defaults table", "[vm_defaults]", func(*Config) {}},
		{
			"everything at once",
			`
default_image_name = "img"
default_kernel = "krn"
ssh_key_path = "~/k"
firecracker_bin = "/fc"
vmm = "qemu"
qemu_bin = "/q"
debian_mirror = "https://m/debian"
boot_timeout = "5m"
warm_start = false
warm_spares = 3
console_log_size = "1M"
bridge_name = "br1"
bridge_cidr = "10.1.0.0/24"
network_namespace = "/run/netns/t"
dns_upstreams = ["9.9.9.9"]
dns_port = 5300
helper_socket = "/run/h.sock"

[vm_defaults]
vcpu = 2
memory_mib = 4096
disk_size = "16G"
`,
			func(c *Config) {
				*c = Config{
					Path:             c.Path,
					DefaultImageName: "img",
					DefaultKernel:    "krn",
					SSHKeyPath:       "/home/ann/k",
					JailerChrootBase: c.JailerChrootBase,
					FirecrackerBin:   "/fc",
					VMM:              VMMQEMU,
					QEMUBin:          "/q",
					DebianMirror:     "https://m/debian",
					BootTimeout:      5 * time.Minute,
					WarmStart:        false,
					WarmSpares:       3,
					ConsoleLogSize:   1 << 20,
					BridgeName:       "br1",
					BridgeCIDR:       netip.MustParsePrefix("10.1.0.0/24"),
					NetworkNamespace: "/run/netns/t",
					DNSUpstreams:     []string{"9.9.9.9"},
					DNSPort:          5300,
					HelperSocket:     "/run/h.sock",
					VMDefaults:       VMDefaults{VCPU: 2, MemoryMiB: 4096, DiskBytes: 16 * bytesize.GiB},
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.content)
			want := Default(l)
			want.Path = path
			tt.edit(&want)
			got, err := LoadFile(path, l)
			if err != nil {
				t.Fatalf("LoadFile error: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("LoadFile =\n %+v\nwant\n %+v", got, want)
			}
		})
	}
}

// TestLoadErrors checks exact messages; $F stands for the config file's path.
func TestLoadErrors(t *testing.T) {
	known := "known keys are default_image_name, default_kernel, ssh_key_path, firecracker_bin, " +
		"jailer_enabled, jailer_bin, jailer_chroot_base, jailer_uid, jailer_gid, vmm, qemu_bin, " +
		"debian_mirror, boot_timeout, warm_start, warm_spares, console_log_size, bridge_name, bridge_cidr, network_namespace, dns_upstreams, dns_port, host_ports_open_to_guests, helper_socket, vm_defaults.vcpu, vm_defaults.memory_mib, vm_defaults.disk_size, file_sync.host, file_sync.guest, file_sync.mode"
	tests := []struct {
		name    string
		content string
		want    string
	}{
		// file_sync entries.
		{"file_sync without host", "[[file_sync]]\nguest = \"~/x\"", `$F: file_sync: entry 1: host is missing or empty; give the host file or directory to copy`},
		{"file_sync empty guest", "[[file_sync]]\nhost = \"/etc/hosts\"\nguest = \"\"", `$F: file_sync: entry 1: guest is missing or empty; give a path under ~/ or /root/`},
		{"file_sync relative host", "[[file_sync]]\nhost = \"/a\"\nguest = \"~/a\"\n[[file_sync]]\nhost = \"dotfiles\"\nguest = \"~/b\"", `$F: file_sync[2].host: "dotfiles" is a relative path; use an absolute path or one starting with "~/"`},
		{"file_sync guest outside root", "[[file_sync]]\nhost = \"/a\"\nguest = \"/etc/a\"", `$F: file_sync[1].guest: "/etc/a" is not under ~/ or /root/`},
		{"file_sync guest with ..", "[[file_sync]]\nhost = \"/a\"\nguest = \"~/../etc/a\"", `$F: file_sync[1].guest: "~/../etc/a" has a ".." component; give a plain path under /root/`},
		{"file_sync guest ~user", "[[file_sync]]\nhost = \"/a\"\nguest = \"~bob/a\"", `$F: file_sync[1].guest: "~bob/a": only "~/" (root's home in the guest) is expanded, not "~user/"`},
		{"file_sync host ~user", "[[file_sync]]\nhost = \"~bob/a\"\nguest = \"~/a\"", `$F: file_sync[1].host: "~bob/a": only "~/" (your home directory) is expanded, not "~user/"; use an absolute path`},
		{"file_sync bad mode", "[[file_sync]]\nhost = \"/a\"\nguest = \"~/a\"\nmode = \"rw\"", `$F: file_sync[1].mode: "rw" is not a file mode; use octal permissions such as "0600" or "0644"`},
		// Network keys.
		{"bridge_name too long", `bridge_name = "a-very-long-bridge-name"`, `$F:1: bridge_name: "a-very-long-bridge-name" is not an interface name; use 1-15 characters without spaces, '/' or ':'`},
		{"bridge_cidr not a network", `bridge_cidr = "lan"`, `$F:1: bridge_cidr: "lan" is not an IPv4 network; use e.g. "172.16.0.0/24"`},
		{"bridge_cidr too wide", `bridge_cidr = "10.0.0.0/8"`, `$F:1: bridge_cidr: 10.0.0.0/8: use a prefix between /16 and /29`},
		{"bridge_cidr host bits", `bridge_cidr = "172.16.0.1/24"`, `$F:1: bridge_cidr: 172.16.0.1/24 has host bits set; did you mean "172.16.0.0/24"?`},
		{"dns_upstreams not an address", `dns_upstreams = ["1.1.1.1", "dns.google"]`, `$F:1: dns_upstreams: entry 2, "dns.google": want an IP address, optionally with :port`},
		{"dns_port out of range", `dns_port = 70000`, `$F:1: dns_port: 70000 is not a port; use 1-65535`},
		{"host port out of range", `host_ports_open_to_guests = [22, 0]`, `$F:1: host_ports_open_to_guests: entry 2, 0, is not a port; use 1-65535`},
		{"helper_socket relative", `helper_socket = "helper.sock"`, `$F:1: helper_socket: "helper.sock" is not an absolute path; use the path of the root helper's socket, such as "/run/banger/helper.sock"`},
		{"helper_socket empty", `helper_socket = ""`, `$F:1: helper_socket: "" is not an absolute path; use the path of the root helper's socket, such as "/run/banger/helper.sock"`},
		{"helper_socket too long", `helper_socket = "/` + strings.Repeat("s", 120) + `"`, `$F:1: helper_socket: "/` + strings.Repeat("s", 120) + `" is 121 bytes, longer than a unix socket path may be (107)`},
		// Unknown keys.
		{"unknown key", "colour = 1", `$F:1:1: unknown key "colour"; ` + known},
		{"misspelt key", "defalt_kernel = \"x\"", `$F:1:1: unknown key "defalt_kernel" (did you mean "default_kernel"?); ` + known},
		{"key in the wrong table", "vcpu = 2", `$F:1:1: unknown key "vcpu" (did you mean "vm_defaults.vcpu"?); ` + known},
		{"unknown key in vm_defaults", "[vm_defaults]\nvcpus = 2", `$F:2:1: unknown key "vm_defaults.vcpus" (did you mean "vm_defaults.vcpu"?); ` + known},
		{"unknown table", "[network]\nbridge = \"br0\"", `$F:1:2: unknown table "network"; ` + known},
		{
			"several unknown keys",
			"a = 1\n[vm_defaults]\nmemory = 1",
			`$F: unknown key "a" (line 1), unknown key "vm_defaults.memory" (line 3); ` + known,
		},

		// Wrong types.
		{"integer for string", "default_kernel = 6", "$F:1:18: default_kernel: want a string, got an integer"},
		{"boolean for path", "ssh_key_path = true", "$F:1:16: ssh_key_path: want a string path, got a boolean"},
		{"array for vmm", `vmm = ["qemu"]`, `$F:1:7: vmm: want a string ("auto", "firecracker" or "qemu"), got an array`},
		{"integer for duration", "boot_timeout = 180", `$F:1:16: boot_timeout: want a duration string such as "3m" or "90s", got an integer`},
		{"string for vcpu", "[vm_defaults]\nvcpu = \"2\"", "$F:2:8: vm_defaults.vcpu: want an integer, got a string"},
		{"float for memory", "[vm_defaults]\nmemory_mib = 1.5", "$F:2:14: vm_defaults.memory_mib: want an integer number of MiB, got a float"},
		{"float for disk", "[vm_defaults]\ndisk_size = 1.5", `$F:2: vm_defaults.disk_size: want a size string such as "8G" or an integer number of MiB, got a float`},
		{"boolean for disk", "[vm_defaults]\ndisk_size = true", `$F:2: vm_defaults.disk_size: want a size string such as "8G" or an integer number of MiB, got a boolean`},
		{"scalar for table", "vm_defaults = 4", "$F:1:15: vm_defaults: want a table, got an integer"},
		{"table for string", "[vmm]\nx = 1", `$F:1:2: vmm: want a string ("auto", "firecracker" or "qemu"), got a table`},
		{"array of tables for table", "[[vm_defaults]]\nvcpu = 1", "$F:1:3: vm_defaults: want a table, got an array table"},
		{"array of tables for string", "[[vmm]]", `$F:1:3: vmm: want a string ("auto", "firecracker" or "qemu"), got an array table`},
		{"integer too large", "[vm_defaults]\nvcpu = 99999999999999999999", "$F:2:8: vm_defaults.vcpu: decimal number is too large to fit in a 64-bit signed integer"},

		// Bad values.
		{"empty image name", `default_image_name = ""`, `$F:1: default_image_name: must not be empty; remove the key to use the default "debian-bookworm"`},
		{"blank kernel", `default_kernel = "  "`, `$F:1: default_kernel: must not be empty; remove the key to use the default "debian-6.1"`},
		{"relative ssh_key_path", "\nssh_key_path = \"keys/id\"", `$F:2: ssh_key_path: "keys/id" is a relative path; use an absolute path or one starting with "~/"`},
		{"empty ssh_key_path", `ssh_key_path = ""`, `$F:1: ssh_key_path: must not be empty; remove the key to use the default under the state directory`},
		{"~user ssh_key_path", `ssh_key_path = "~bob/.ssh/id"`, `$F:1: ssh_key_path: "~bob/.ssh/id": only "~/" (your home directory) is expanded, not "~user/"; use an absolute path`},
		{"string for jailer_enabled", `jailer_enabled = "yes"`, "$F:1:18: jailer_enabled: want a boolean, got a string"},
		{"string for warm_start", `warm_start = "no"`, "$F:1:14: warm_start: want a boolean, got a string"},
		{"root jailer_uid", "jailer_uid = 0", "$F:1: jailer_uid: 0 is root, which would defeat the jailer; use an unprivileged id, or remove the key for a separate id per VM"},
		{"negative jailer_gid", "jailer_gid = -5", "$F:1: jailer_gid: -5 is not a valid id; use 1 to 2147483647"},
		{"relative jailer_chroot_base", `jailer_chroot_base = "jails"`, `$F:1: jailer_chroot_base: "jails" is a relative path; use an absolute path or one starting with "~/"`},
		{"relative firecracker_bin", `firecracker_bin = "bin/firecracker"`, `$F:1: firecracker_bin: "bin/firecracker" is a relative path; use an absolute path, one starting with "~/", or a bare command name found in $PATH`},
		{"~user qemu_bin", `qemu_bin = "~root/qemu"`, `$F:1: qemu_bin: "~root/qemu": only "~/" (your home directory) is expanded, not "~user/"; use an absolute path`},
		{"unknown vmm", `vmm = "kvmtool"`, `$F:1: vmm: "kvmtool" is not a VMM; use "auto", "firecracker" or "qemu"`},
		{"vmm is case-sensitive", `vmm = "QEMU"`, `$F:1: vmm: "QEMU" is not a VMM; use "auto", "firecracker" or "qemu"`},
		{"ftp mirror", `debian_mirror = "ftp://ftp.debian.org/debian"`, `$F:1: debian_mirror: "ftp://ftp.debian.org/debian" is not an http:// or https:// URL; use e.g. "https://deb.debian.org/debian"`},
		{"mirror without scheme", `debian_mirror = "deb.debian.org/debian"`, `$F:1: debian_mirror: "deb.debian.org/debian" is not an http:// or https:// URL; use e.g. "https://deb.debian.org/debian"`},
		{"mirror without host", `debian_mirror = "https:///debian"`, `$F:1: debian_mirror: "https:///debian" is not an http:// or https:// URL; use e.g. "https://deb.debian.org/debian"`},
		{"duration without unit", `boot_timeout = "180"`, `$F:1: boot_timeout: "180" is not a positive duration; use a number with a unit, such as "3m", "90s" or "1m30s"`},
		{"console_log_size too small", `console_log_size = "1K"`, `$F:1: console_log_size: 1KiB is outside 64KiB to 1GiB`},
		{"too many warm_spares", `warm_spares = 9`, `$F:1: warm_spares: 9 is out of range; use 0 (no spares) to 8`},
		{"negative warm_spares", `warm_spares = -1`, `$F:1: warm_spares: -1 is out of range; use 0 (no spares) to 8`},
		{"zero duration", `boot_timeout = "0s"`, `$F:1: boot_timeout: "0s" is not a positive duration; use a number with a unit, such as "3m", "90s" or "1m30s"`},
		{"negative duration", `boot_timeout = "-1m"`, `$F:1: boot_timeout: "-1m" is not a positive duration; use a number with a unit, such as "3m", "90s" or "1m30s"`},
		{"zero vcpu", "[vm_defaults]\nvcpu = 0", "$F:2: vm_defaults.vcpu: 0 vCPUs is invalid; use at least 1, or remove the key to size by the host"},
		{"negative vcpu", "[vm_defaults]\nvcpu = -2", "$F:2: vm_defaults.vcpu: -2 vCPUs is invalid; use at least 1, or remove the key to size by the host"},
		{"huge vcpu", "[vm_defaults]\nvcpu = 9999999999", "$F:2: vm_defaults.vcpu: 9999999999 vCPUs is more than any host has"},
		{"memory below floor", "[vm_defaults]\nmemory_mib = 256", "$F:2: vm_defaults.memory_mib: 256 MiB is below the minimum of 512 MiB"},
		{"memory overflow", "[vm_defaults]\nmemory_mib = 9223372036854775807", "$F:2: vm_defaults.memory_mib: 9223372036854775807 MiB is more than any host has"},
		{"disk below floor", "[vm_defaults]\ndisk_size = \"512M\"", "$F:2: vm_defaults.disk_size: 512MiB is below the minimum of 1GiB"},
		{"disk integer below floor", "[vm_defaults]\ndisk_size = 100", "$F:2: vm_defaults.disk_size: 100MiB is below the minimum of 1GiB"},
		{"negative disk integer", "[vm_defaults]\ndisk_size = -5", "$F:2: vm_defaults.disk_size: -5 MiB is negative"},
		{"disk integer overflow", "[vm_defaults]\ndisk_size = 9223372036854775807", "$F:2: vm_defaults.disk_size: 9223372036854775807 MiB is too large"},
		{"garbage disk string", "[vm_defaults]\ndisk_size = \"big\"", `$F:2: vm_defaults.disk_size: invalid size "big": no number; want ` + bytesize.Accepted},
		{"bad value in inline table", "vm_defaults = { vcpu = 0 }", "$F:1: vm_defaults.vcpu: 0 vCPUs is invalid; use at least 1, or remove the key to size by the host"},

		// TOML syntax.
		{"missing value", "default_kernel = \n", "$F:1:18: invalid TOML: unexpected character U+000A at start of value"},
		{"unterminated string", "\n\ndefault_kernel = \"abc\n", "$F:3:22: invalid TOML: basic strings cannot have new lines"},
		{"duplicate key", "vmm = \"qemu\"\nvmm = \"auto\"", "$F:2:1: key vmm is already defined"},
		{"missing equals", "vmm qemu", "$F:1:5: invalid TOML: expected '=' after key"},
	}
	l := testLayout(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.content)
			got, err := LoadFile(path, l)
			if err == nil {
				t.Fatalf("LoadFile succeeded with %+v, want error %q", got, tt.want)
			}
			want := strings.ReplaceAll(tt.want, "$F", path)
			if err.Error() != want {
				t.Errorf("LoadFile error\n got: %s\nwant: %s", err, want)
			}
		})
	}
}

func TestLoadTildeNeedsHome(t *testing.T) {
	vars := map[string]string{"XDG_CONFIG_HOME": "/c", "XDG_STATE_HOME": "/s", "XDG_CACHE_HOME": "/k"}
	l, err := paths.New(func(k string) (string, bool) { v, ok := vars[k]; return v, ok }, 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, `ssh_key_path = "~/id"`)
	_, err = LoadFile(path, l)
	want := path + `:1: ssh_key_path: "~/id": cannot expand "~": home directory unknown; use an absolute path`
	if err == nil || err.Error() != want {
		t.Errorf("LoadFile error = %v, want %s", err, want)
	}
}
