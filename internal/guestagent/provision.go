package guestagent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/banger-dev/banger/internal/agent"
)

// provision writes the host's files under root and restarts the units that run already.
func provision(p agent.Provision, root string) error {
	var errs []error
	for _, f := range p.Files {
		if !filepath.IsAbs(f.Path) || filepath.Clean(f.Path) != f.Path {
			errs = append(errs, fmt.Errorf("provision: %q is not a clean absolute path", f.Path))
			continue
		}
		dirMode := os.FileMode(f.DirMode)
		if dirMode == 0 {
			dirMode = 0o755
		}
		path := filepath.Join(root, f.Path)
		if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
			errs = append(errs, fmt.Errorf("provision %s: %w", f.Path, err))
			continue
		}
		tmp := path + ".banger-tmp"
		if err := os.WriteFile(tmp, f.Data, os.FileMode(f.Mode)); err != nil {
			errs = append(errs, fmt.Errorf("provision %s: %w", f.Path, err))
			continue
		}
		// WriteFile's mode is masked by the umask; set it exactly.
		if err := os.Chmod(tmp, os.FileMode(f.Mode)); err != nil {
			errs = append(errs, fmt.Errorf("provision %s: %w", f.Path, err))
		}
		if err := os.Rename(tmp, path); err != nil {
			os.Remove(tmp)
			errs = append(errs, fmt.Errorf("provision %s: %w", f.Path, err))
		}
	}
	if systemdRuns() {
		if units := startedUnits(filepath.Join(root, "run/systemd/units"), p.RestartUnits); len(units) > 0 {
			args := append([]string{"try-restart", "--no-block"}, units...)
			if out, err := exec.Command("systemctl", args...).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out))))
			}
		}
	}
	return errors.Join(errs...)
}

// startedUnits keeps the units systemd has started (or is starting) this boot: those have an
// invocation id, which systemd records as dir/invocation:UNIT before it forks the unit's first
// process (unit_prepare_exec). The files are written before this check, so a unit without the
// record has not run anything yet and reads the new files when it starts: it needs no restart.
// On a guest still booting under software emulation, not running systemctl saves a good part
// of a second.
func startedUnits(dir string, units []string) []string {
	var started []string
	for _, u := range units {
		if _, err := os.Lstat(filepath.Join(dir, "invocation:"+u)); err == nil {
			started = append(started, u)
		}
	}
	return started
}

// systemdRuns reports whether systemd is PID 1.
func systemdRuns() bool {
	b, err := os.ReadFile("/proc/1/comm")
	return err == nil && strings.TrimSpace(string(b)) == "systemd"
}

// dial connects to an address in the guest for a forwarded connection. Only loopback TCP
// addresses and unix sockets are reachable this way: forwarding is for what the guest does not
// serve on its network.
func dial(d agent.DialRequest) (net.Conn, error) {
	switch d.Network {
	case "tcp":
		host, _, err := net.SplitHostPort(d.Address)
		if err != nil {
			return nil, fmt.Errorf("address %q: %w", d.Address, err)
		}
		if host == "" || host == "localhost" {
			d.Address = net.JoinHostPort("127.0.0.1", d.Address[strings.LastIndexByte(d.Address, ':')+1:])
		}
		return net.Dial("tcp", d.Address)
	case "unix":
		if !filepath.IsAbs(d.Address) {
			return nil, fmt.Errorf("unix socket %q: want an absolute path", d.Address)
		}
		return net.Dial("unix", d.Address)
	}
	return nil, fmt.Errorf("network %q: want tcp or unix", d.Network)
}
