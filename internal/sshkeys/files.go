package sshkeys

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/banger-dev/banger/internal/durable"
)

// fileMu serializes banger's edits of its own files (known_hosts, ssh_config) in this process.
var fileMu sync.Mutex

// writeAtomic replaces path with content through a temporary file and a rename, fsynced so
// that a crash leaves the old content or the new, never an empty file. A path that is a
// symlink (a ~/.ssh/config kept in a dotfiles repository, say) stays one: its target is
// replaced, in the target's directory.
func writeAtomic(path string, content []byte, mode os.FileMode) error {
	path, err := resolveLinks(path)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return durable.WriteFile(path, content, mode)
}

// maxLinks bounds the symlinks followed from one path, as the kernel does (ELOOP).
const maxLinks = 40

// resolveLinks follows path while it is a symlink and returns the file it finally names,
// which need not exist yet (a dangling link is written through, creating its target).
func resolveLinks(path string) (string, error) {
	for range maxLinks {
		st, err := os.Lstat(path)
		if os.IsNotExist(err) || (err == nil && st.Mode()&os.ModeSymlink == 0) {
			return path, nil
		}
		if err != nil {
			return "", err
		}
		target, err := os.Readlink(path)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(path), target)
		}
		path = target
	}
	return "", fmt.Errorf("%s: more than %d levels of symbolic links; point it at a file", path, maxLinks)
}

// SetKnownHost makes known_hosts hold exactly one entry for name: line (from HostKeyLine),
// whose first field must name it. Other entries are kept as they are.
func SetKnownHost(path, name, line string) error {
	fileMu.Lock()
	defer fileMu.Unlock()
	lines, err := readLines(path)
	if err != nil {
		return err
	}
	out := dropHost(lines, name)
	out = append(out, line)
	return writeAtomic(path, []byte(strings.Join(out, "\n")+"\n"), 0o600)
}

// RemoveKnownHost deletes the entries for name; a missing file is fine.
func RemoveKnownHost(path, name string) error {
	fileMu.Lock()
	defer fileMu.Unlock()
	lines, err := readLines(path)
	if err != nil {
		return err
	}
	out := dropHost(lines, name)
	if len(out) == len(lines) {
		return nil
	}
	return writeAtomic(path, []byte(strings.Join(out, "\n")+"\n"), 0o600)
}

// dropHost removes the lines whose host list names name.
func dropHost(lines []string, name string) []string {
	var out []string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 0 {
			hosts := strings.Split(f[0], ",")
			drop := false
			for _, h := range hosts {
				if h == name {
					drop = true
				}
			}
			if drop {
				continue
			}
		}
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

func readLines(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out, sc.Err()
}

// Host is one VM in banger's ssh_config.
type Host struct {
	Name string // VM name; the entry is for <name>.vm
}

// WriteConfig replaces banger's ssh_config (path) with one Host block per VM, using the given
// client key and known_hosts file. Every block reaches its VM through ProxyCommand(cli, name):
// the connection goes through banger's daemon and the VM's agent, never to the guest's
// address, so `ssh <name>.vm` works from any terminal and any network namespace once the file
// is included from ~/.ssh/config.
func WriteConfig(path, keyPath, knownHosts, cli string, hosts []Host) error {
	fileMu.Lock()
	defer fileMu.Unlock()
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].Name < hosts[j].Name })
	var b strings.Builder
	b.WriteString("# Written by bangerd; changes are overwritten. Include it from ~/.ssh/config with\n")
	b.WriteString("# `banger ssh-config --install`.\n")
	for _, h := range hosts {
		fmt.Fprintf(&b, "\nHost %s.vm\n", h.Name)
		b.WriteString("  User root\n")
		fmt.Fprintf(&b, "  ProxyCommand %s\n", ProxyCommand(cli, h.Name))
		fmt.Fprintf(&b, "  IdentityFile %s\n", quote(keyPath))
		b.WriteString("  IdentitiesOnly yes\n")
		fmt.Fprintf(&b, "  UserKnownHostsFile %s\n", quote(knownHosts))
		fmt.Fprintf(&b, "  HostKeyAlias %s.vm\n", h.Name)
		b.WriteString("  StrictHostKeyChecking yes\n")
		b.WriteString("  CheckHostIP no\n")
	}
	return writeAtomic(path, []byte(b.String()), 0o644)
}

// ProxyCommand is the ssh ProxyCommand that carries a connection to VM vm's sshd through
// banger (`banger vm ssh-proxy VM`), with cli the path of the banger CLI. ssh runs it with
// the user's shell after expanding %-tokens, so the path is shell-quoted and its % doubled.
// VM names are DNS labels and need neither.
func ProxyCommand(cli, vm string) string {
	return strings.ReplaceAll(shellQuote(cli), "%", "%%") + " vm ssh-proxy " + vm
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:,@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func quote(p string) string {
	if strings.ContainsAny(p, " \t") {
		return `"` + p + `"`
	}
	return p
}

// Markers fence the block banger adds to ~/.ssh/config.
const (
	beginMarker = "# >>> banger ssh-config >>>"
	endMarker   = "# <<< banger ssh-config <<<"
)

// IncludeBlock is what --install adds: an Include of banger's ssh_config, fenced by markers.
func IncludeBlock(sshConfig string) string { return includeBlock(sshConfig, false) }

// createdNote marks, inside the block, a config file that Install created: Uninstall then
// removes the file again when nothing else is left in it, so the user's HOME is as it was.
const createdNote = "# banger created this file; `banger ssh-config --uninstall` removes it again while nothing else is in it."

func includeBlock(sshConfig string, created bool) string {
	note := ""
	if created {
		note = createdNote + "\n"
	}
	return beginMarker + "\n# Added by `banger ssh-config --install`; remove with `banger ssh-config --uninstall`.\n" + note +
		"Include " + quote(sshConfig) + "\n" + endMarker + "\n"
}

// Install adds the Include block to the user's ssh config at userConfig (creating it 0600 if
// needed). The block goes first: ssh takes the first value it finds for each option, and an
// Include after a `Host *` section would be read as part of it. Installing twice changes
// nothing. It reports whether it changed the file.
func Install(userConfig, sshConfig string) (bool, error) {
	b, err := os.ReadFile(userConfig)
	if err != nil && !os.IsNotExist(err) {
		return false, err
	}
	content := string(b)
	// A file that did not exist (or that an earlier install created) is marked as banger's.
	created := os.IsNotExist(err) || strings.Contains(content, createdNote)
	block := includeBlock(sshConfig, created)
	if rest, had := removeBlock(content); had {
		if strings.HasPrefix(content, block) {
			return false, nil // already installed, as is
		}
		content = rest
	}
	mode := os.FileMode(0o600)
	if st, err := os.Stat(userConfig); err == nil {
		mode = st.Mode().Perm()
	}
	if err := os.MkdirAll(filepath.Dir(userConfig), 0o700); err != nil {
		return false, err
	}
	sep := ""
	if content != "" {
		sep = "\n"
	}
	return true, writeAtomic(userConfig, []byte(block+sep+content), mode)
}

// Uninstall removes exactly the block Install added and reports whether there was one.
func Uninstall(userConfig string) (bool, error) {
	b, err := os.ReadFile(userConfig)
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	rest, had := removeBlock(string(b))
	if !had {
		return false, nil
	}
	if strings.Contains(string(b), createdNote) && strings.TrimSpace(rest) == "" {
		// banger made this file and nothing else is in it: leave no empty config behind. A
		// symlinked config keeps its link; the file banger made at its end goes.
		target, err := resolveLinks(userConfig)
		if err != nil {
			return false, err
		}
		if err := os.Remove(target); err != nil {
			return false, err
		}
		return true, durable.SyncDir(filepath.Dir(target))
	}
	st, err := os.Stat(userConfig)
	if err != nil {
		return false, err
	}
	return true, writeAtomic(userConfig, []byte(rest), st.Mode().Perm())
}

// Installed reports whether the user's ssh config has banger's block.
func Installed(userConfig string) bool {
	b, err := os.ReadFile(userConfig)
	if err != nil {
		return false
	}
	_, had := removeBlock(string(b))
	return had
}

// removeBlock cuts the fenced block (and the blank line Install put after it) out of s.
func removeBlock(s string) (string, bool) {
	start := strings.Index(s, beginMarker)
	if start < 0 {
		return s, false
	}
	end := strings.Index(s[start:], endMarker)
	if end < 0 {
		return s, false // an unfinished block is not ours to guess at
	}
	end += start + len(endMarker)
	if end < len(s) && s[end] == '\n' {
		end++
	}
	if start == 0 && end < len(s) && s[end] == '\n' {
		end++ // the separator Install added
	}
	return s[:start] + s[end:], true
}
