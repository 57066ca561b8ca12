package kernel

import (
	"github.com/banger-dev/banger/internal/durable"
	"github.com/banger-dev/banger/internal/guestinit"

	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/gzip"
)

// InitramfsOptions says what goes into an initramfs.
type InitramfsOptions struct {
	Release    string   // kernel release (uname -r): modules go to /lib/modules/<Release>/
	AgentPath  string   // the banger-agent binary, installed as /init
	Agent      []byte   // the agent's contents; when nil they are read from AgentPath
	ModulesDir string   // the kernel's lib/modules/<release> directory the modules come from
	Modules    []Module // modules in load order, as returned by ModuleClosure

	// Gzip compresses the archive. It is off by default: under software emulation the guest
	// unpacks an uncompressed archive faster than it inflates a compressed one.
	Gzip bool
}

// BuildInitramfs writes a newc cpio initramfs to w: the directories /dev /proc /sys /run /mnt
// /newroot and /lib/modules/<release>, the /dev/console (5,1) and /dev/null (1,3) device
// nodes, the agent as /init (mode 0755), every module decompressed at its path under
// /lib/modules/<release>/, and guestinit.ModuleList listing them in load order. The output is
// deterministic: entries sorted by path, fixed owners and mtimes, so equal inputs give equal
// bytes.
func BuildInitramfs(w io.Writer, opts InitramfsOptions) error {
	if opts.Release == "" || strings.ContainsAny(opts.Release, "/\x00") || opts.Release == "." || opts.Release == ".." {
		return fmt.Errorf("initramfs: invalid kernel release %q", opts.Release)
	}
	agent := opts.Agent
	if agent == nil {
		if opts.AgentPath == "" {
			return errors.New("initramfs: no agent binary given (AgentPath)")
		}
		var err error
		if agent, err = os.ReadFile(opts.AgentPath); err != nil {
			return fmt.Errorf("initramfs: read agent binary: %w", err)
		}
	}
	entries, err := initramfsEntries(opts, agent)
	if err != nil {
		return err
	}

	bw := bufio.NewWriterSize(w, 1<<20)
	var out io.Writer = bw
	var gz *gzip.Writer
	if opts.Gzip {
		gz = gzip.NewWriter(bw) // zero header time and no name: deterministic
		out = gz
	}
	cw := &newcWriter{w: out}
	for _, e := range entries {
		if err := cw.write(e); err != nil {
			return fmt.Errorf("initramfs: write %s: %w", e.name, err)
		}
	}
	if err := cw.close(); err != nil {
		return fmt.Errorf("initramfs: write trailer: %w", err)
	}
	if gz != nil {
		if err := gz.Close(); err != nil {
			return fmt.Errorf("initramfs: compress: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("initramfs: write: %w", err)
	}
	return nil
}

// initramfsEntries returns every archive member, sorted by name (parents before children).
func initramfsEntries(opts InitramfsOptions, agent []byte) ([]newcEntry, error) {
	modRoot := "lib/modules/" + opts.Release
	byName := map[string]newcEntry{}
	addDir := func(p string) {
		for ; p != "." && p != ""; p = path.Dir(p) {
			if _, ok := byName[p]; ok {
				return
			}
			byName[p] = newcEntry{name: p, mode: modeDir | 0o755}
		}
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "mnt", "newroot", modRoot} {
		addDir(d)
	}
	byName["dev/console"] = newcEntry{name: "dev/console", mode: modeChar | 0o600, rdevMajor: 5, rdevMinor: 1}
	byName["dev/null"] = newcEntry{name: "dev/null", mode: modeChar | 0o666, rdevMajor: 1, rdevMinor: 3}
	byName["init"] = newcEntry{name: "init", mode: modeReg | 0o755, data: agent}

	var list strings.Builder
	for _, m := range opts.Modules {
		rel := m.LoadPath()
		if rel == "" || path.IsAbs(rel) || rel != path.Clean(rel) || strings.HasPrefix(rel, "../") || !strings.HasSuffix(rel, ".ko") {
			return nil, fmt.Errorf("initramfs: module %s has an unusable path %q", m.Name, m.Path)
		}
		data, err := ReadModuleFile(filepath.Join(opts.ModulesDir, filepath.FromSlash(m.Path)))
		if err != nil {
			return nil, fmt.Errorf("initramfs: %w", err)
		}
		name := modRoot + "/" + rel
		if _, dup := byName[name]; dup {
			return nil, fmt.Errorf("initramfs: module %s listed twice", m.Name)
		}
		addDir(path.Dir(name))
		byName[name] = newcEntry{name: name, mode: modeReg | 0o644, data: data}
		list.WriteString(rel + "\n")
	}
	listName := modRoot + "/" + guestinit.ModuleList // what the agent loads, in order
	byName[listName] = newcEntry{name: listName, mode: modeReg | 0o644, data: []byte(list.String())}

	entries := make([]newcEntry, 0, len(byName))
	for _, e := range byName {
		entries = append(entries, e)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	return entries, nil
}

// InitramfsName is the file name of the initramfs built for an agent binary with the given
// SHA-256 (hex): one initramfs per (kernel, agent build) can then live in the kernel directory.
func InitramfsName(agentSHA256 string) string {
	return "initrd-" + agentSHA256[:min(12, len(agentSHA256))] + ".cpio"
}

// AgentInitramfsName is the file name of the initramfs BootInitramfs makes for the agent
// binary at agentPath (InitramfsName of its SHA-256). It names the agent build: boot snapshots
// record it, and one made with another build cannot be restored.
func AgentInitramfsName(agentPath string) (string, error) {
	agent, err := os.ReadFile(agentPath)
	if err != nil {
		return "", fmt.Errorf("read agent binary: %w", err)
	}
	return initramfsNameOf(agent), nil
}

// initramfsNameOf is InitramfsName of an agent binary's contents.
func initramfsNameOf(agent []byte) string {
	sum := sha256.Sum256(agent)
	return InitramfsName(hex.EncodeToString(sum[:]))
}

// EnsureInitramfs returns the path of the initramfs for the agent binary at agentPath with the
// Debian kernel in kernelDir (as written by Pull), building it if it is not there yet; see
// Manifest.BootInitramfs.
func EnsureInitramfs(kernelDir, release, agentPath string) (string, error) {
	modulesDir, err := findModulesDir(kernelDir, release)
	if err != nil {
		return "", err
	}
	rel, _ := filepath.Rel(kernelDir, modulesDir)
	return Manifest{Dir: kernelDir, Release: release, Source: SourceDebian, ModulesDir: filepath.ToSlash(rel)}.BootInitramfs(agentPath)
}

// BootInitramfs returns the path of the initramfs VMs boot this kernel with, for the agent
// binary at agentPath, building it if it is not there yet: the closure of GuestModules is
// computed from the kernel's modules (for an imported kernel, wanted modules it lacks are
// taken to be built in), the archive is staged in the kernel directory and renamed into place,
// so concurrent callers and crashes never expose a partial file. An imported kernel's own
// initramfs comes first in the file, padded to 4 bytes, and banger's archive after it: the
// kernel unpacks both, later files win, so the agent is /init.
func (m Manifest) BootInitramfs(agentPath string) (string, error) {
	agent, err := os.ReadFile(agentPath)
	if err != nil {
		return "", fmt.Errorf("read agent binary: %w", err)
	}
	dst := filepath.Join(m.Dir, initramfsNameOf(agent))
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() {
		return dst, nil
	}
	var mods []Module
	modulesDir := ""
	if m.ModulesDir != "" {
		modulesDir = m.ModulesPath()
		want := GuestModules
		if m.Source == SourceImport || m.Source == SourceBundle {
			if want, err = availableModules(modulesDir, GuestModules); err != nil {
				return "", fmt.Errorf("kernel %s: %w", m.Release, err)
			}
		}
		if len(want) > 0 {
			if mods, err = ModuleClosure(modulesDir, want); err != nil {
				return "", fmt.Errorf("kernel %s: %w", m.Release, err)
			}
		}
	}
	tmp, err := os.CreateTemp(m.Dir, ".initrd-*.tmp")
	if err != nil {
		return "", fmt.Errorf("stage initramfs in %s: %w", m.Dir, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if m.Initrd != "" {
		err = prependInitrd(tmp, m.InitrdPath())
	}
	if err == nil {
		err = BuildInitramfs(tmp, InitramfsOptions{Release: m.Release, Agent: agent, ModulesDir: modulesDir, Modules: mods})
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("build initramfs for kernel %s: %w", m.Release, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", fmt.Errorf("build initramfs: %w", err)
	}
	if err := durable.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("publish initramfs: %w", err)
	}
	// Initramfs files of older agent builds are not needed any more: a VM reads its initramfs
	// when its VMM starts (a jailed one holds its own link).
	if old, _ := filepath.Glob(filepath.Join(m.Dir, InitramfsName("*"))); len(old) > 1 {
		for _, p := range old {
			if p != dst {
				os.Remove(p)
			}
		}
	}
	return dst, nil
}

// prependInitrd copies a kernel's own initramfs to w, padded with zeros to a multiple of 4
// bytes (the kernel skips zero padding between concatenated archives).
func prependInitrd(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, f)
	if err != nil {
		return fmt.Errorf("copy %s: %w", path, err)
	}
	if pad := (4 - n%4) % 4; pad > 0 {
		_, err = w.Write(make([]byte, pad))
	}
	return err
}

// availableModules returns the wanted modules the tree has; the rest are assumed built in.
func availableModules(modulesDir string, want []string) ([]string, error) {
	index, err := indexModules(modulesDir)
	if err != nil {
		return nil, nil // no modules at all: everything is built in
	}
	var out []string
	for _, w := range want {
		if _, ok := index[ModuleName(w)]; ok {
			out = append(out, w)
		}
	}
	return out, nil
}

// findModulesDir locates lib/modules/<release> (or usr/lib/modules/<release>, where merged-/usr
// kernel packages such as trixie's put it) in a pulled kernel directory.
func findModulesDir(kernelDir, release string) (string, error) {
	if release == "" || strings.ContainsAny(release, "/\x00") || release == "." || release == ".." {
		return "", fmt.Errorf("invalid kernel release %q", release)
	}
	for _, base := range []string{"lib/modules", "usr/lib/modules"} {
		p := filepath.Join(kernelDir, base, release)
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			return p, nil
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("kernel modules: %w", err)
		}
	}
	return "", fmt.Errorf("kernel %s in %s has no lib/modules/%s directory; pull the kernel again", release, kernelDir, release)
}
