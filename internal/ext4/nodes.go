package ext4

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/banger-dev/banger/internal/userns"
)

// Node is a device node, directory or symlink to add to an image after mkfs, owned by root.
type Node struct {
	Path         string      // absolute, inside the image; its parent must exist
	Mode         fs.FileMode // type (fs.ModeDir, fs.ModeSymlink, fs.ModeDevice|fs.ModeCharDevice, fs.ModeDevice) and permissions
	Major, Minor uint32      // devices
	Target       string      // symlinks
}

// AddNodes adds nodes to the ext4 image with debugfs -w, as root:root with their modes,
// leaving alone any path the image already has. Device nodes cannot be made in a tree
// without root (a user namespace may not mknod), so an unprivileged build adds them this way,
// and the image holds what a root build's tree would have held.
func AddNodes(ctx context.Context, image string, nodes []Node) error {
	debugfs, err := LookTool("debugfs")
	if err != nil {
		return fmt.Errorf("%w; install e2fsprogs (apt-get install e2fsprogs)", err)
	}
	var script bytes.Buffer
	var added []Node
	for _, n := range nodes {
		if err := n.check(); err != nil {
			return err
		}
		present, err := imageHas(ctx, debugfs, image, n.Path)
		if err != nil {
			return err
		}
		if present {
			continue
		}
		added = append(added, n)
		// debugfs makes entries in its current directory (mknod takes no path).
		dir, base := path.Split(n.Path)
		fmt.Fprintf(&script, "cd %s\n", dir)
		var typeBits uint32
		switch {
		case n.Mode.IsDir():
			fmt.Fprintf(&script, "mkdir %s\n", base)
			typeBits = 0o040000
		case n.Mode&fs.ModeSymlink != 0:
			fmt.Fprintf(&script, "symlink %s %s\n", base, n.Target)
			typeBits = 0o120000
		case n.Mode&fs.ModeCharDevice != 0:
			fmt.Fprintf(&script, "mknod %s c %d %d\n", base, n.Major, n.Minor)
			typeBits = 0o020000
		default:
			fmt.Fprintf(&script, "mknod %s b %d %d\n", base, n.Major, n.Minor)
			typeBits = 0o060000
		}
		fmt.Fprintf(&script, "sif %s mode 0%o\nsif %s uid 0\nsif %s gid 0\n", n.Path, typeBits|uint32(n.Mode.Perm()), n.Path, n.Path)
	}
	if len(added) == 0 {
		return nil
	}
	cmd := execCommand(ctx, debugfs, "-w", "-f", "-", image)
	cmd.Stdin = &script
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("debugfs -w %s: %w: %s", image, err, strings.TrimSpace(string(out)))
	}
	// debugfs reports a failed command on its output and exits 0: check the result.
	for _, n := range added {
		present, err := imageHas(ctx, debugfs, image, n.Path)
		if err != nil {
			return err
		}
		if !present {
			return fmt.Errorf("debugfs could not add %s to %s: %s", n.Path, image, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

func (n Node) check() error {
	if !path.IsAbs(n.Path) || path.Clean(n.Path) != n.Path || n.Path == "/" || strings.ContainsAny(n.Path, " \t\n\"\\") ||
		strings.ContainsAny(n.Target, " \t\n\"\\") || n.Mode&fs.ModeSymlink != 0 && n.Target == "" {
		return fmt.Errorf("node %q (-> %q): not a plain absolute path", n.Path, n.Target)
	}
	return nil
}

// imageHas reports whether the image has path (debugfs stat).
func imageHas(ctx context.Context, debugfs, image, p string) (bool, error) {
	out, err := execCommand(ctx, debugfs, "-R", "stat "+p, image).CombinedOutput()
	if err != nil {
		return false, fmt.Errorf("debugfs stat %s in %s: %w: %s", p, image, err, strings.TrimSpace(string(out)))
	}
	return !bytes.Contains(out, []byte("File not found")), nil
}

// measureFunc is the registered function that measures a tree inside a user namespace.
const measureFunc = "ext4.measure"

func init() {
	userns.Register(measureFunc, func(args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%s: want one tree", measureFunc)
		}
		u, err := Measure(args[0])
		if err != nil {
			return fmt.Errorf("measure %s: %w", args[0], err)
		}
		return json.NewEncoder(os.Stdout).Encode(u)
	})
}

// MeasureIn is Measure, run inside the user namespace m when m is not nil: the tree may hold
// directories only their (subordinate) owners can read.
func MeasureIn(ctx context.Context, m *userns.Mapping, root string) (Usage, error) {
	if m == nil {
		return Measure(root)
	}
	out, err := m.Func(ctx, measureFunc, root).Output()
	if err != nil {
		return Usage{}, err
	}
	var u Usage
	sc := bufio.NewScanner(bytes.NewReader(out))
	if !sc.Scan() {
		return Usage{}, fmt.Errorf("measure %s: no result", root)
	}
	if err := json.Unmarshal(sc.Bytes(), &u); err != nil || u.Inodes < 0 || u.Bytes < 0 {
		return Usage{}, fmt.Errorf("measure %s: bad result %q", root, strconv.Quote(sc.Text()))
	}
	return u, nil
}
