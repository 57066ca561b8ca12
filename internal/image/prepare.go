package image

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/debian"
	"github.com/banger-dev/banger/internal/durable"
	"github.com/banger-dev/banger/internal/ext4"
	"github.com/banger-dev/banger/internal/progress"
	"github.com/banger-dev/banger/internal/sparse"
	"github.com/banger-dev/banger/internal/userns"
)

// hostsFile is what an image without /etc/hosts gets: container images leave it to the
// runtime, and many tools expect localhost to resolve.
const hostsFile = `127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
`

// PrepareRoot makes an arbitrary root tree (a flattened OCI image) bootable by banger and
// returns notes on what it added. The agent itself is not added: it comes from the initramfs
// at every boot, so an image never carries a stale one. What is added:
//
//   - the mount points the agent and init need: /dev, /proc, /sys, /run, /tmp (1777);
//   - /etc/hosts with localhost, when missing (container runtimes write it at run time);
//   - an empty /etc/machine-id where systemd is present, so every boot gets its own id.
//
// Everything happens through an os.Root: a symlink in the tree (say /etc -> /elsewhere) is
// resolved inside it or refused, never followed out of the tree.
func PrepareRoot(tree string) ([]string, error) {
	root, err := os.OpenRoot(tree)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	var notes []string
	for _, d := range []struct {
		name string
		mode fs.FileMode
	}{{"dev", 0o755}, {"proc", 0o555}, {"sys", 0o555}, {"run", 0o755}, {"tmp", 0o777 | fs.ModeSticky}, {"etc", 0o755}} {
		if _, err := root.Lstat(d.name); err == nil {
			continue
		}
		if err := root.Mkdir(d.name, d.mode.Perm()); err != nil {
			return notes, fmt.Errorf("add /%s: %w", d.name, err)
		}
		if err := root.Chmod(d.name, d.mode); err != nil {
			return notes, fmt.Errorf("add /%s: %w", d.name, err)
		}
		notes = append(notes, "added /"+d.name)
	}
	if _, err := root.Stat("etc/hosts"); errors.Is(err, fs.ErrNotExist) {
		if err := writeInRoot(root, "etc/hosts", hostsFile); err != nil {
			return notes, fmt.Errorf("add /etc/hosts: %w", err)
		}
		notes = append(notes, "added /etc/hosts (localhost)")
	} else if err != nil {
		return notes, fmt.Errorf("/etc/hosts: %w", err)
	}
	if hasSystemd(root) {
		if fi, err := root.Stat("etc/machine-id"); err != nil || fi.Size() > 0 {
			if err := writeInRoot(root, "etc/machine-id", ""); err != nil {
				return notes, fmt.Errorf("empty /etc/machine-id: %w", err)
			}
			notes = append(notes, "emptied /etc/machine-id (each boot gets its own)")
		}
	}
	return notes, nil
}

// prepareRoot is PrepareRoot followed, when env is not empty, by writeImageEnv.
func prepareRoot(tree string, env []string) ([]string, error) {
	notes, err := PrepareRoot(tree)
	if err != nil {
		return nil, fmt.Errorf("prepare the root: %w", err)
	}
	if len(env) > 0 {
		note, err := writeImageEnv(tree, env)
		if err != nil {
			return nil, err
		}
		notes = append(notes, note)
	}
	return notes, nil
}

// envName is what a shell accepts as a variable name.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// writeImageEnv gives VMs the environment an OCI image's config sets (a container runtime
// would): agent.ImageEnvFile for commands run through the agent, and a profile.d script for
// login shells over ssh. Entries a shell could not take (no name, a newline) are left out and
// counted in the note.
func writeImageEnv(tree string, env []string) (string, error) {
	root, err := os.OpenRoot(tree)
	if err != nil {
		return "", err
	}
	defer root.Close()
	var plain, shell strings.Builder
	shell.WriteString("# Written by banger: the environment of the OCI image this VM was made from.\n")
	kept, skipped := 0, 0
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !envName.MatchString(k) || strings.ContainsAny(v, "\n\x00") {
			skipped++
			continue
		}
		kept++
		fmt.Fprintf(&plain, "%s=%s\n", k, v)
		fmt.Fprintf(&shell, "export %s='%s'\n", k, strings.ReplaceAll(v, "'", `'\''`))
	}
	for _, dir := range []string{"etc/banger", "etc/profile.d"} {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("add /%s: %w", dir, err)
		}
	}
	if err := writeInRoot(root, strings.TrimPrefix(agent.ImageEnvFile, "/"), plain.String()); err != nil {
		return "", fmt.Errorf("add %s: %w", agent.ImageEnvFile, err)
	}
	if err := writeInRoot(root, "etc/profile.d/banger-image-env.sh", shell.String()); err != nil {
		return "", fmt.Errorf("add /etc/profile.d/banger-image-env.sh: %w", err)
	}
	note := fmt.Sprintf("the image config's environment (%d variables) goes to every command and login shell", kept)
	if skipped > 0 {
		note += fmt.Sprintf("; %d entries a shell cannot take were left out", skipped)
	}
	return note, nil
}

func hasSystemd(root *os.Root) bool {
	for _, p := range []string{"lib/systemd/systemd", "usr/lib/systemd/systemd"} {
		if _, err := root.Stat(p); err == nil {
			return true
		}
	}
	return false
}

func writeInRoot(root *os.Root, name, content string) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, content); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// TreeOptions say how to make an image directory from a root tree.
type TreeOptions struct {
	Tree string // the root tree; PrepareRoot is applied to it
	Dest string // the image directory to create (must not exist; its parent must)
	Name string
	// Size of rootfs.ext4 in bytes; 0 sizes it to the contents. A size too small for the
	// contents is refused, saying how much they need.
	Size     int64
	Manifest Manifest // Source, OCI, Kernel, Notes are kept; the rest is filled in
	Progress progress.Func
}

// FromTree makes an image directory (rootfs.ext4 made with mkfs.ext4 -d, and its manifest)
// from a root tree, staging it next to Dest and renaming it into place.
func FromTree(ctx context.Context, o TreeOptions) (Manifest, error) {
	started := time.Now()
	if !namePattern.MatchString(o.Name) {
		return Manifest{}, fmt.Errorf("image name %q must be lower-case letters, digits, '.' and '-'", o.Name)
	}
	// Without root the tree was made in a user namespace (oci.Pull), and is prepared,
	// measured and copied into the image from inside it.
	ns, err := userns.ForTrees()
	if err != nil {
		return Manifest{}, fmt.Errorf("image %s: %w", o.Name, err)
	}
	m := o.Manifest
	var env []string
	if m.OCI != nil {
		env = m.OCI.Env
	}
	notes, err := prepareRootIn(ctx, ns, o.Tree, env)
	if err != nil {
		return Manifest{}, fmt.Errorf("image %s: %w", o.Name, err)
	}
	m.Format, m.Name, m.Architecture = manifestFormat, o.Name, debian.HostArch()
	m.Notes = append(m.Notes, notes...)
	if pkgs, err := installedPackagesIn(o.Tree); err == nil {
		m.Packages = pkgs
	}
	usage, err := ext4.MeasureIn(ctx, ns, o.Tree)
	if err != nil {
		return Manifest{}, fmt.Errorf("image %s: measure: %w", o.Name, err)
	}
	size, inodes := ext4.Geometry(usage)
	if o.Size != 0 {
		if o.Size < size {
			return Manifest{}, fmt.Errorf("image %s: --size %d MiB is too small: the contents need %d MiB", o.Name, o.Size/mib, size/mib)
		}
		size = (o.Size + mib - 1) / mib * mib
	}
	m.TreeBytes, m.TreeInodes, m.RootfsInodes = usage.Bytes, usage.Inodes, inodes
	st, err := stagingDir(o.Dest)
	if err != nil {
		return Manifest{}, err
	}
	defer st.Discard()
	out := st.Dir
	o.Progress.Stage(StageMkfs, fmt.Sprintf("mkfs.ext4: %d MiB, %d inodes for %d MiB in %d files", size/mib, inodes, usage.Bytes/mib, usage.Inodes))
	rootfs := filepath.Join(out, RootfsFile)
	if err := ext4.FromTree(ctx, ext4.Options{Tree: o.Tree, Output: rootfs, Label: RootfsLabel, Size: size, Inodes: inodes, Userns: ns}); err != nil {
		return Manifest{}, fmt.Errorf("image %s: %w", o.Name, err)
	}
	m.MkfsVersion = toolVersion(ctx, mustTool("mkfs.ext4"), "-V")
	o.Progress.Stage(StageChecksum, "sha256 "+RootfsFile)
	if m.RootfsSHA256, err = fileSHA256(ctx, rootfs, o.Progress); err != nil {
		return Manifest{}, err
	}
	m.RootfsSize = size
	m.BuiltAt = started.UTC().Truncate(time.Second)
	m.BuildSeconds = round3(time.Since(started).Seconds())
	if err := publishDir(ctx, st, o.Dest, m); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// installedPackagesIn reads the dpkg status of a tree through an os.Root (the tree may hold
// symlinks pointing out of it).
func installedPackagesIn(tree string) ([]Package, error) {
	root, err := os.OpenRoot(tree)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.Open("var/lib/dpkg/status")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseDpkgStatus(f)
}

func mustTool(name string) string {
	p, err := lookTool(name)
	if err != nil {
		return name
	}
	return p
}

// stagingDir creates a staging directory next to dest, which must not exist yet. Every file
// of an image is fsynced as it is written (mkfs.ext4, copies, bundle members, the manifest),
// so publishing it syncs the directory alone.
func stagingDir(dest string) (*durable.Staging, error) {
	if _, err := os.Lstat(dest); err == nil {
		return nil, fmt.Errorf("image directory %s already exists", dest)
	}
	st, err := durable.Stage(filepath.Dir(dest), filepath.Base(dest)+".staging")
	if err != nil {
		return nil, err
	}
	st.FilesSynced = true
	return st, nil
}

// publishDir writes the manifest into a staged image directory and publishes it as dest.
func publishDir(ctx context.Context, st *durable.Staging, dest string, m Manifest) error {
	if err := writeManifest(st.Dir, m); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return st.Publish(dest)
}

// RegisterOptions say which host ext4 file to adopt as an image.
type RegisterOptions struct {
	Rootfs   string // an ext4 filesystem image file
	Dest     string // the image directory to create
	Name     string
	Kernel   string
	Progress progress.Func
}

// Register adopts a host ext4 file as an image: it is copied (sparsely, so the original stays
// the user's) into a new image directory with a manifest. The file must hold an ext4 (or ext2/3)
// filesystem; banger mounts it read-only as the lower layer of every VM's root.
func Register(ctx context.Context, o RegisterOptions) (Manifest, error) {
	started := time.Now()
	if !namePattern.MatchString(o.Name) {
		return Manifest{}, fmt.Errorf("image name %q must be lower-case letters, digits, '.' and '-'", o.Name)
	}
	if err := checkExt4(o.Rootfs); err != nil {
		return Manifest{}, err
	}
	st, err := stagingDir(o.Dest)
	if err != nil {
		return Manifest{}, err
	}
	defer st.Discard()
	out := st.Dir
	rootfs := filepath.Join(out, RootfsFile)
	o.Progress.Stage(StageChecksum, "copying "+o.Rootfs)
	size, err := copySparse(ctx, o.Rootfs, rootfs)
	if err != nil {
		return Manifest{}, fmt.Errorf("copy %s: %w", o.Rootfs, err)
	}
	if err := os.Chmod(rootfs, 0o444); err != nil {
		return Manifest{}, err
	}
	sum, err := fileSHA256(ctx, rootfs, o.Progress)
	if err != nil {
		return Manifest{}, err
	}
	abs, _ := filepath.Abs(o.Rootfs)
	m := Manifest{Format: manifestFormat, Name: o.Name, Architecture: debian.HostArch(), Source: SourceRegister, Kernel: o.Kernel,
		RootfsSize: size, RootfsSHA256: sum, BuiltAt: started.UTC().Truncate(time.Second),
		BuildSeconds: round3(time.Since(started).Seconds()), Notes: []string{"registered from " + abs}}
	if err := publishDir(ctx, st, o.Dest, m); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// checkExt4 checks that the file holds an ext2/3/4 superblock (magic 0xEF53 at byte 1080).
func checkExt4(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	var magic [2]byte
	if _, err := f.ReadAt(magic[:], 1024+56); err != nil || binary.LittleEndian.Uint16(magic[:]) != 0xEF53 {
		return fmt.Errorf("%s does not hold an ext4 file system (no ext2/3/4 superblock); make one with mkfs.ext4 -d DIR FILE SIZE", p)
	}
	return nil
}

// copySparse copies src to a new file dst, leaving holes where src reads as zeros, and
// returns the size.
func copySparse(ctx context.Context, src, dst string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	buf := make([]byte, 1<<20)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		n, rerr := io.ReadFull(in, buf)
		if _, err := sparse.WriteAt(out, buf[:n], off); err != nil {
			return 0, err
		}
		off += int64(n)
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return 0, rerr
		}
	}
	if err := out.Truncate(off); err != nil {
		return 0, err
	}
	if err := out.Sync(); err != nil {
		return 0, err
	}
	return off, out.Close()
}
