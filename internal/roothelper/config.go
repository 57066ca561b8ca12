package roothelper

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/fcjail"
	"github.com/banger-dev/banger/internal/hostnet"
	"github.com/pelletier/go-toml/v2"
)

// Defaults of the helper's configuration.
const (
	DefaultConfigPath = "/etc/banger/helper.toml"
	DefaultSocket     = "/run/banger/helper.sock"
	DefaultGroup      = "banger"
	DefaultNSPrefix   = "banger"
	DefaultStateDir   = "/run/banger-helper"
	// DefaultJailBase is where the helper builds Firecracker jails: on the filesystem of the
	// users' VM files (see JailConfig.Base).
	DefaultJailBase = "/var/lib/banger/jail"
	// DefaultJailFirstID and DefaultJailIDCount are the uids (and gids) of the jails: each
	// jail gets its own, the lowest free one. Far above login accounts (1000–60000),
	// systemd's dynamic users (61184–65519) and nobody (65534).
	DefaultJailFirstID = 900000
	DefaultJailIDCount = 100000
	// DefaultJailsPerCaller bounds the jails one uid may have: each runs a Firecracker under
	// a uid of its own, outside the caller's own process and memory limits.
	DefaultJailsPerCaller = 64
)

// Config is what the helper serves and to whom. It is root's: the helper reads it from a file
// only root can write (DefaultConfigPath), never from a request.
type Config struct {
	// Group is the group whose members (besides root) may use the helper. Key group.
	Group string `toml:"group"`
	// NamespacePrefix is what the names of the network namespaces (under /run/netns) the
	// helper works in must start with; "" allows none. Key namespace_prefix.
	NamespacePrefix string `toml:"namespace_prefix"`
	// HostNamespace allows networks in the helper's own namespace (a request's namespace "").
	// Key host_namespace.
	HostNamespace bool `toml:"host_namespace"`
	// CallersOpenPorts lets callers open host ports of 1024 or more to their guests (their
	// host_ports_open_to_guests, sent with set_guests). Key callers_open_ports.
	CallersOpenPorts bool `toml:"callers_open_ports"`
	// StateDir holds the helper's markers (that it turned IP forwarding on), one directory
	// per namespace. Key state_dir.
	StateDir string `toml:"state_dir"`
	// Networks are the bridges the helper serves. Key network, an array of tables.
	Networks []NetworkConfig `toml:"network"`
	// Jails configures starting Firecracker jails for callers. Key jails, a table.
	Jails JailConfig `toml:"jails"`
}

// JailConfig is how the helper starts Firecracker for callers that are not root. Jails are off
// until Jailer and Firecracker are set: those binaries run as root (the jailer) and as the
// jails' uids (Firecracker), so only root names them, here.
type JailConfig struct {
	// Jailer and Firecracker are the binaries (absolute paths; Firecracker's file name must
	// contain "firecracker"). Keys jailer, firecracker.
	Jailer      string `toml:"jailer"`
	Firecracker string `toml:"firecracker"`
	// Base holds the jails: <base>/<firecracker's file name>/<VM id>/root, each with the
	// helper's record of it beside root. It must be on the filesystem of the callers' VM
	// files: their disks and logs are hard-linked into the jail (a link across filesystems,
	// or from a process in another mount namespace, fails with EXDEV). Key base.
	Base string `toml:"base"`
	// FirstID and IDCount are the range of the jails' uids and gids. Keys first_id, id_count.
	FirstID int `toml:"first_id"`
	IDCount int `toml:"id_count"`
	// PerCaller is the most jails one caller uid may have at once. Key per_caller.
	PerCaller int `toml:"per_caller"`
}

// Enabled reports whether the helper starts jails.
func (j JailConfig) Enabled() bool { return j.Jailer != "" && j.Firecracker != "" }

// NetworkConfig is one bridge the helper serves.
type NetworkConfig struct {
	Bridge string `toml:"bridge"` // its name
	CIDR   string `toml:"cidr"`   // the guests' subnet; the bridge has its first address
	// OpenPorts are the host's TCP and UDP ports guests may reach besides DNS (banger's
	// host_ports_open_to_guests, decided here by root). Key host_ports_open_to_guests.
	OpenPorts []uint16 `toml:"host_ports_open_to_guests"`

	prefix netip.Prefix
}

// DefaultConfig is banger's defaults: bridge banger0 on 172.16.0.0/24, group banger,
// namespaces named banger*, and the helper's own namespace.
func DefaultConfig() Config {
	return Config{
		Group:            DefaultGroup,
		NamespacePrefix:  DefaultNSPrefix,
		HostNamespace:    true,
		CallersOpenPorts: true,
		StateDir:         DefaultStateDir,
		Jails:            JailConfig{Base: DefaultJailBase, FirstID: DefaultJailFirstID, IDCount: DefaultJailIDCount, PerCaller: DefaultJailsPerCaller},
		Networks:         []NetworkConfig{{Bridge: config.DefaultBridgeName, CIDR: config.DefaultBridgeCIDR}},
	}
}

// LoadConfig reads the configuration at path over the defaults. A missing file at the
// default path gives the defaults; a missing file elsewhere is an error. Networks in the file
// replace the default network.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && path == DefaultConfigPath:
		return cfg, cfg.check()
	case err != nil:
		return Config{}, fmt.Errorf("read the helper's configuration: %w", err)
	}
	nets := cfg.Networks
	cfg.Networks = nil
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	if cfg.Networks == nil {
		cfg.Networks = nets
	}
	if err := cfg.check(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// check validates the configuration and fills the parsed fields.
func (c *Config) check() error {
	if c.NamespacePrefix != "" && !nsNameRE.MatchString(c.NamespacePrefix) {
		return fmt.Errorf("namespace_prefix %q: use letters, digits, '_', '.' and '-'", c.NamespacePrefix)
	}
	if c.StateDir == "" || !strings.HasPrefix(c.StateDir, "/") {
		return fmt.Errorf("state_dir %q: want an absolute path", c.StateDir)
	}
	if len(c.Networks) == 0 {
		return fmt.Errorf("no network: add a [[network]] with bridge and cidr")
	}
	if err := c.Jails.check(); err != nil {
		return fmt.Errorf("jails: %w", err)
	}
	for i := range c.Networks {
		n := &c.Networks[i]
		if !bridgeNameRE.MatchString(n.Bridge) {
			return fmt.Errorf("network bridge %q: use 1-15 letters, digits, '_', '.' or '-'", n.Bridge)
		}
		p, err := netip.ParsePrefix(n.CIDR)
		if err != nil {
			return fmt.Errorf("network %s: cidr %q: %w", n.Bridge, n.CIDR, err)
		}
		if err := hostnet.ValidateCIDR(p); err != nil {
			return fmt.Errorf("network %s: %w", n.Bridge, err)
		}
		for j := range i {
			if c.Networks[j].Bridge == n.Bridge {
				return fmt.Errorf("network bridge %s is listed twice", n.Bridge)
			}
		}
		for _, port := range n.OpenPorts {
			if port == 0 {
				return fmt.Errorf("network %s: host_ports_open_to_guests: 0 is not a port", n.Bridge)
			}
		}
		n.prefix = p
	}
	return nil
}

var (
	bridgeNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
	nsNameRE     = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$`)
	tapNameRE    = regexp.MustCompile(`^bg[0-9a-f]{12}$`)
)

// check validates the jail settings: absolute, clean paths, a Firecracker the jailer runs,
// and an id range above the ids of accounts that cannot overflow.
func (j JailConfig) check() error {
	if (j.Jailer == "") != (j.Firecracker == "") {
		return fmt.Errorf("set both jailer and firecracker (or neither: no jails)")
	}
	for key, p := range map[string]string{"jailer": j.Jailer, "firecracker": j.Firecracker, "base": j.Base} {
		if (p != "" || key == "base") && (!filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/") {
			return fmt.Errorf("%s %q: want a clean absolute path other than /", key, p)
		}
	}
	if j.Firecracker != "" {
		if err := fcjail.CheckExec(j.Firecracker); err != nil {
			return err
		}
	}
	if j.FirstID < 65536 || j.IDCount < 1 || j.IDCount > 1<<24 || j.FirstID > 1<<30 {
		return fmt.Errorf("first_id %d, id_count %d: want first_id from 65536 to 2^30 and id_count from 1 to 2^24 (ids of no account)", j.FirstID, j.IDCount)
	}
	if j.PerCaller < 1 || j.PerCaller > j.IDCount {
		return fmt.Errorf("per_caller %d: want 1 to id_count (%d)", j.PerCaller, j.IDCount)
	}
	return nil
}
