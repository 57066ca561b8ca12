// Package ext4 owns banger's read-only ext4 images made from directory trees: measuring a
// tree, choosing the image's size and inode count, and running mkfs.ext4 -d, which copies the
// tree into a new filesystem without mounting anything. Root images, kernel module disks and
// pulled OCI images are all made this way.
package ext4

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/banger-dev/banger/internal/userns"
)

// RunFunc runs a program and returns an error that says how it failed.
type RunFunc func(ctx context.Context, name string, args ...string) error

// Options say how to make an image from a tree.
type Options struct {
	Tree   string // the directory whose contents become the filesystem's root
	Output string // the image file to create; it must not exist
	Label  string // ext4 volume label (at most 16 bytes)
	// Size and Inodes of the filesystem; zero means Geometry(Measure(Tree)). A Size smaller
	// than the tree needs makes mkfs fail.
	Size, Inodes int64
	// Run runs mkfs.ext4; nil runs it directly (inside Userns when set) and quotes its
	// output when it fails.
	Run RunFunc
	// Userns, when set, is the user namespace the tree was made in (see package userns):
	// the tree is measured and copied from inside it, so that the image records the ids
	// seen there (the caller's files as root's). A Run given with it must run inside it too.
	Userns *userns.Mapping
	// Nodes are added to the image after mkfs (with debugfs): the device nodes an
	// unprivileged build could not create in the tree. An existing path is left alone.
	Nodes []Node
}

// FromTree creates opts.Output: a sparse file formatted as ext4 and filled from opts.Tree by
// mkfs.ext4 -d, which copies ownership, modes (setuid bits included), timestamps, hard links
// and extended attributes (file capabilities) without mounting anything.
//
// The image is mounted read-only by every VM, so it has no journal (and mounts with noload),
// no blocks reserved for root, and exactly the inodes it needs plus headroom. Its features are
// mke2fs's ext4 defaults, which the Debian 6.1 guest kernel supports. The file is made
// read-only (0444) and synced. On failure the file is removed.
func FromTree(ctx context.Context, opts Options) (err error) {
	mkfs, err := LookTool("mkfs.ext4")
	if err != nil {
		return fmt.Errorf("%w; install e2fsprogs (apt-get install e2fsprogs)", err)
	}
	if opts.Size == 0 || opts.Inodes == 0 {
		u, err := MeasureIn(ctx, opts.Userns, opts.Tree)
		if err != nil {
			return fmt.Errorf("measure %s: %w", opts.Tree, err)
		}
		size, inodes := Geometry(u)
		if opts.Size == 0 {
			opts.Size = size
		}
		if opts.Inodes == 0 {
			opts.Inodes = inodes
		}
	}
	run := opts.Run
	if run == nil {
		run = Run
		if opts.Userns != nil {
			m := *opts.Userns
			run = func(ctx context.Context, name string, args ...string) error { return RunIn(ctx, m, name, args...) }
		}
	}
	f, err := os.OpenFile(opts.Output, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", opts.Output, err)
	}
	defer func() {
		if err != nil {
			os.Remove(opts.Output)
		}
	}()
	err = f.Truncate(opts.Size) // sparse: mkfs writes only what the tree needs
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("size %s: %w", opts.Output, err)
	}
	err = run(ctx, mkfs,
		"-q", "-F",
		"-b", strconv.Itoa(BlockSize),
		"-I", strconv.Itoa(inodeSize),
		"-N", strconv.FormatInt(opts.Inodes, 10),
		"-m", "0",
		"-L", opts.Label,
		"-O", "^has_journal",
		"-E", "root_owner=0:0",
		"-d", opts.Tree,
		opts.Output)
	if err != nil {
		return err
	}
	if len(opts.Nodes) > 0 {
		if err := AddNodes(ctx, opts.Output, opts.Nodes); err != nil {
			return err
		}
	}
	f, err = os.Open(opts.Output)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Chmod(0o444); err != nil {
		return fmt.Errorf("make %s read-only: %w", opts.Output, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", opts.Output, err)
	}
	return nil
}

// toolPath holds the directories e2fsprogs and kmod live in, which a daemon's PATH may lack.
const toolPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// LookTool finds a program in PATH or, failing that, in the sbin directories a daemon's PATH
// may lack.
func LookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range strings.Split(toolPath, ":") {
		p := dir + "/" + name
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or %s", name, toolPath)
}

// maxOutput is how much of a failed program's output (its end) an error quotes.
const maxOutput = 2000

// ToolError is a program that ran and failed.
type ToolError struct {
	Tool   string // the program's base name
	Code   int    // exit code; -1 when killed by a signal
	Output string // the end of its trimmed output
}

func (e *ToolError) Error() string {
	msg := fmt.Sprintf("%s failed (exit %d)", e.Tool, e.Code)
	if e.Output != "" {
		msg += ": " + e.Output
	}
	return msg
}

// Run runs a program to completion and, when it fails, returns an error quoting the end of
// its output: a *ToolError when it ran and exited non-zero.
func Run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	return toolResult(ctx, name, cmd.Run(), out.Bytes())
}

// RunIn is Run inside the user namespace m.
func RunIn(ctx context.Context, m userns.Mapping, name string, args ...string) error {
	cmd := m.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	return toolResult(ctx, name, cmd.Run(), out.Bytes())
}

func toolResult(ctx context.Context, name string, err error, out []byte) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: %w", filepath.Base(name), ctxErr)
	}
	if err == nil {
		return nil
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		output := strings.TrimSpace(string(out))
		if len(output) > maxOutput {
			output = "…" + output[len(output)-maxOutput:]
		}
		return &ToolError{Tool: filepath.Base(name), Code: exitErr.ExitCode(), Output: output}
	}
	return fmt.Errorf("run %s: %w", filepath.Base(name), err)
}

func execCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd
}
