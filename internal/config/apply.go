package config

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/banger-dev/banger/internal/bytesize"
	"github.com/banger-dev/banger/internal/paths"
)

// apply validates the decoded file f and overlays it on c. Errors are *keyError.
func apply(c *Config, f *file, home string) error {
	var err error
	if f.DefaultImageName != nil {
		if c.DefaultImageName, err = nonEmpty(keyDefaultImageName, *f.DefaultImageName, DefaultImageName); err != nil {
			return err
		}
	}
	if f.DefaultKernel != nil {
		if c.DefaultKernel, err = nonEmpty(keyDefaultKernel, *f.DefaultKernel, DefaultKernel); err != nil {
			return err
		}
	}
	if f.SSHKeyPath != nil {
		if c.SSHKeyPath, err = keyPath(*f.SSHKeyPath, home); err != nil {
			return err
		}
	}
	if f.FirecrackerBin != nil {
		if c.FirecrackerBin, err = binPath(keyFirecrackerBin, *f.FirecrackerBin, home); err != nil {
			return err
		}
	}
	if f.JailerEnabled != nil {
		v := *f.JailerEnabled
		c.JailerEnabled = &v
	}
	if f.JailerBin != nil {
		if c.JailerBin, err = binPath(keyJailerBin, *f.JailerBin, home); err != nil {
			return err
		}
	}
	if f.JailerChrootBase != nil {
		if c.JailerChrootBase, err = absDir(keyJailerChrootBase, *f.JailerChrootBase, home); err != nil {
			return err
		}
	}
	if f.JailerUID != nil {
		if c.JailerUID, err = jailerID(keyJailerUID, *f.JailerUID); err != nil {
			return err
		}
	}
	if f.JailerGID != nil {
		if c.JailerGID, err = jailerID(keyJailerGID, *f.JailerGID); err != nil {
			return err
		}
	}
	if f.QEMUBin != nil {
		if c.QEMUBin, err = binPath(keyQEMUBin, *f.QEMUBin, home); err != nil {
			return err
		}
	}
	if f.VMM != nil {
		switch v := VMM(*f.VMM); v {
		case VMMAuto, VMMFirecracker, VMMQEMU:
			c.VMM = v
		default:
			return badKey(keyVMM, `%q is not a VMM; use "auto", "firecracker" or "qemu"`, *f.VMM)
		}
	}
	if f.DebianMirror != nil {
		if c.DebianMirror, err = mirrorURL(*f.DebianMirror); err != nil {
			return err
		}
	}
	if f.BootTimeout != nil {
		d, perr := time.ParseDuration(*f.BootTimeout)
		if perr != nil || d <= 0 {
			return badKey(keyBootTimeout, `%q is not a positive duration; use a number with a unit, such as "3m", "90s" or "1m30s"`, *f.BootTimeout)
		}
		c.BootTimeout = d
	}
	if f.WarmStart != nil {
		c.WarmStart = *f.WarmStart
	}
	if f.WarmSpares != nil {
		if *f.WarmSpares < 0 || *f.WarmSpares > MaxWarmSpares {
			return badKey(keyWarmSpares, "%d is out of range; use 0 (no spares) to %d", *f.WarmSpares, MaxWarmSpares)
		}
		c.WarmSpares = int(*f.WarmSpares)
	}
	if f.ConsoleLogSize != nil {
		b, perr := bytesize.Parse(*f.ConsoleLogSize)
		if perr != nil {
			return badKey(keyConsoleLogSize, "%v", perr)
		}
		if b < MinConsoleLogSize || b > MaxConsoleLogSize {
			return badKey(keyConsoleLogSize, "%s is outside %s to %s", bytesize.Format(b), bytesize.Format(MinConsoleLogSize), bytesize.Format(MaxConsoleLogSize))
		}
		c.ConsoleLogSize = b
	}
	if err := applyNetwork(c, f); err != nil {
		return err
	}
	if err := applyFileSync(c, f, home); err != nil {
		return err
	}
	if f.VMDefaults != nil {
		return applyVMDefaults(&c.VMDefaults, f.VMDefaults)
	}
	return nil
}

func applyNetwork(c *Config, f *file) error {
	if f.BridgeName != nil {
		n := *f.BridgeName
		if n == "" || len(n) > 15 || strings.ContainsAny(n, " /:") {
			return badKey(keyBridgeName, "%q is not an interface name; use 1-15 characters without spaces, '/' or ':'", n)
		}
		c.BridgeName = n
	}
	if f.BridgeCIDR != nil {
		p, err := netip.ParsePrefix(*f.BridgeCIDR)
		switch {
		case err != nil || !p.Addr().Is4():
			return badKey(keyBridgeCIDR, "%q is not an IPv4 network; use e.g. \"172.16.0.0/24\"", *f.BridgeCIDR)
		case p.Bits() < 16 || p.Bits() > 29:
			return badKey(keyBridgeCIDR, "%s: use a prefix between /16 and /29", p)
		case p.Masked() != p:
			return badKey(keyBridgeCIDR, "%s has host bits set; did you mean %q?", p, p.Masked().String())
		}
		c.BridgeCIDR = p
	}
	if f.NetworkNamespace != nil {
		c.NetworkNamespace = *f.NetworkNamespace
	}
	if f.DNSUpstreams != nil {
		for i, u := range f.DNSUpstreams {
			host := u
			if h, _, err := net.SplitHostPort(u); err == nil {
				host = h
			}
			if _, err := netip.ParseAddr(host); err != nil {
				return badKey(keyDNSUpstreams, "entry %d, %q: want an IP address, optionally with :port", i+1, u)
			}
		}
		c.DNSUpstreams = f.DNSUpstreams
	}
	if f.DNSPort != nil {
		if *f.DNSPort < 1 || *f.DNSPort > 65535 {
			return badKey(keyDNSPort, "%d is not a port; use 1-65535", *f.DNSPort)
		}
		c.DNSPort = int(*f.DNSPort)
	}
	if f.HostPorts != nil {
		if len(f.HostPorts) > 256 {
			return badKey(keyHostPorts, "%d ports; list at most 256", len(f.HostPorts))
		}
		ports := make([]uint16, 0, len(f.HostPorts))
		for i, p := range f.HostPorts {
			if p < 1 || p > 65535 {
				return badKey(keyHostPorts, "entry %d, %d, is not a port; use 1-65535", i+1, p)
			}
			ports = append(ports, uint16(p))
		}
		c.HostPortsOpenToGuests = ports
	}
	if f.HelperSocket != nil {
		p := *f.HelperSocket
		switch {
		case !filepath.IsAbs(p):
			return badKey(keyHelperSocket, "%q is not an absolute path; use the path of the root helper's socket, such as %q", p, DefaultHelperSocket)
		case len(p) > paths.MaxSocketPathLen:
			return badKey(keyHelperSocket, "%q is %d bytes, longer than a unix socket path may be (%d)", p, len(p), paths.MaxSocketPathLen)
		}
		c.HelperSocket = filepath.Clean(p)
	}
	return nil
}

func nonEmpty(key, v, def string) (string, error) {
	if strings.TrimSpace(v) == "" {
		return "", badKey(key, "must not be empty; remove the key to use the default %q", def)
	}
	return v, nil
}

// expandHome expands a leading "~/" against home. Other "~" forms are errors.
func expandHome(key, p, home string) (string, error) {
	if !strings.HasPrefix(p, "~") {
		return p, nil
	}
	if p != "~" && !strings.HasPrefix(p, "~/") {
		return "", badKey(key, `%q: only "~/" (your home directory) is expanded, not "~user/"; use an absolute path`, p)
	}
	if !filepath.IsAbs(home) {
		return "", badKey(key, `%q: cannot expand "~": home directory unknown; use an absolute path`, p)
	}
	return filepath.Join(home, strings.TrimPrefix(p, "~")), nil
}

func keyPath(p, home string) (string, error) {
	if p == "" {
		return "", badKey(keySSHKeyPath, "must not be empty; remove the key to use the default under the state directory")
	}
	exp, err := expandHome(keySSHKeyPath, p, home)
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(exp) {
		return "", badKey(keySSHKeyPath, `%q is a relative path; use an absolute path or one starting with "~/"`, p)
	}
	return filepath.Clean(exp), nil
}

// binPath accepts an absolute path (after "~/" expansion) or a bare command name; "" means unset.
func binPath(key, p, home string) (string, error) {
	if p == "" {
		return "", nil
	}
	exp, err := expandHome(key, p, home)
	if err != nil {
		return "", err
	}
	if filepath.IsAbs(exp) {
		return filepath.Clean(exp), nil
	}
	if strings.ContainsRune(exp, '/') {
		return "", badKey(key, `%q is a relative path; use an absolute path, one starting with "~/", or a bare command name found in $PATH`, p)
	}
	return exp, nil
}

// absDir accepts an absolute directory path (after "~/" expansion).
func absDir(key, p, home string) (string, error) {
	if p == "" {
		return "", badKey(key, "must not be empty; remove the key to use the default")
	}
	exp, err := expandHome(key, p, home)
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(exp) {
		return "", badKey(key, `%q is a relative path; use an absolute path or one starting with "~/"`, p)
	}
	return filepath.Clean(exp), nil
}

// jailerID accepts a uid or gid for jailed Firecracker processes: not root, and within the
// range Linux ids have (the top values are reserved).
func jailerID(key string, n int64) (int, error) {
	if n == 0 {
		return 0, badKey(key, "0 is root, which would defeat the jailer; use an unprivileged id, or remove the key for a separate id per VM")
	}
	if n < 0 || n > math.MaxInt32 {
		return 0, badKey(key, "%d is not a valid id; use 1 to %d", n, math.MaxInt32)
	}
	return int(n), nil
}

// mirrorURL accepts an http or https URL with a host; "" means unset.
func mirrorURL(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", badKey(keyDebianMirror, `%q is not an http:// or https:// URL; use e.g. "https://deb.debian.org/debian"`, s)
	}
	return strings.TrimRight(s, "/"), nil
}

func applyVMDefaults(d *VMDefaults, f *fileVMDefs) error {
	if f.VCPU != nil {
		n := *f.VCPU
		if n < MinVCPU {
			return badKey(keyVCPU, "%d vCPUs is invalid; use at least %d, or remove the key to size by the host", n, MinVCPU)
		}
		if n > math.MaxInt32 {
			return badKey(keyVCPU, "%d vCPUs is more than any host has", n)
		}
		d.VCPU = int(n)
	}
	if f.MemoryMiB != nil {
		n := *f.MemoryMiB
		if n < MinMemoryMiB {
			return badKey(keyMemoryMiB, "%d MiB is below the minimum of %d MiB", n, MinMemoryMiB)
		}
		if n > math.MaxInt64/bytesize.MiB {
			return badKey(keyMemoryMiB, "%d MiB is more than any host has", n)
		}
		d.MemoryMiB = int(n)
	}
	if f.DiskSize != nil {
		b, err := diskSize(f.DiskSize)
		if err != nil {
			return err
		}
		if b < MinDiskBytes {
			return badKey(keyDiskSize, "%s is below the minimum of %s", bytesize.Format(b), bytesize.Format(MinDiskBytes))
		}
		d.DiskBytes = b
	}
	return nil
}

// diskSize converts a decoded disk_size: a size string, or an integer number of MiB.
func diskSize(v any) (int64, error) {
	switch v := v.(type) {
	case string:
		b, err := bytesize.Parse(v)
		if err != nil {
			return 0, badKey(keyDiskSize, "%v", err)
		}
		return b, nil
	case int64:
		if v < 0 {
			return 0, badKey(keyDiskSize, "%d MiB is negative", v)
		}
		if v > math.MaxInt64/bytesize.MiB {
			return 0, badKey(keyDiskSize, "%d MiB is too large", v)
		}
		return v * bytesize.MiB, nil
	default:
		return 0, badKey(keyDiskSize, "want %s, got %s", wantType(keyDiskSize), tomlTypeOf(v))
	}
}

// tomlTypeOf names the TOML type go-toml decoded into v.
func tomlTypeOf(v any) string {
	switch v.(type) {
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case time.Time, toml.LocalDateTime:
		return "a date-time"
	case toml.LocalDate:
		return "a date"
	case toml.LocalTime:
		return "a time"
	default:
		return fmt.Sprintf("a %T", v)
	}
}

// applyFileSync validates the [[file_sync]] entries; errors name the entry by its index
// (from 1, as they appear in the file).
func applyFileSync(c *Config, f *file, home string) error {
	for i, e := range f.FileSync {
		key := func(k string) string { return fmt.Sprintf("file_sync[%d].%s", i+1, k) }
		if e.Host == nil || strings.TrimSpace(*e.Host) == "" {
			return badKey(keyFileSync, "entry %d: host is missing or empty; give the host file or directory to copy", i+1)
		}
		if e.Guest == nil || strings.TrimSpace(*e.Guest) == "" {
			return badKey(keyFileSync, "entry %d: guest is missing or empty; give a path under ~/ or /root/", i+1)
		}
		host, err := expandHome(key("host"), *e.Host, home)
		if err != nil {
			return err
		}
		if !filepath.IsAbs(host) {
			return badKey(key("host"), "%q is a relative path; use an absolute path or one starting with \"~/\"", *e.Host)
		}
		guest := *e.Guest
		switch {
		case guest == "~" || guest == "/root":
			return badKey(key("guest"), "%q is root's home itself; name a file or directory under it", guest)
		case strings.HasPrefix(guest, "~/"):
			guest = "/root/" + strings.TrimPrefix(guest, "~/")
		case strings.HasPrefix(guest, "~"):
			return badKey(key("guest"), "%q: only \"~/\" (root's home in the guest) is expanded, not \"~user/\"", guest)
		case !strings.HasPrefix(guest, "/root/"):
			return badKey(key("guest"), "%q is not under ~/ or /root/", guest)
		}
		for _, part := range strings.Split(guest, "/") {
			if part == ".." {
				return badKey(key("guest"), "%q has a \"..\" component; give a plain path under /root/", *e.Guest)
			}
		}
		entry := FileSync{Host: filepath.Clean(host), Guest: filepath.Clean(guest)}
		if e.Mode != nil {
			m, err := strconv.ParseUint(*e.Mode, 8, 32)
			if err != nil || m == 0 || m > 0o777 {
				return badKey(key("mode"), "%q is not a file mode; use octal permissions such as \"0600\" or \"0644\"", *e.Mode)
			}
			entry.Mode = os.FileMode(m)
		}
		c.FileSync = append(c.FileSync, entry)
	}
	return nil
}
