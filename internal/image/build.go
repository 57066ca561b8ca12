package image

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/debian"
	"github.com/banger-dev/banger/internal/durable"
	"github.com/banger-dev/banger/internal/ext4"
)

// Progress stages reported by Build, in order.
const (
	StageBootstrap = "image.bootstrap"
	StageCustomize = "image.customize"
	StageMkfs      = "image.mkfs"
	StageChecksum  = "image.checksum"
)

// RootfsLabel is the ext4 label of every image banger makes.
const RootfsLabel = "banger-root"

// mib is a mebibyte.
const mib = 1 << 20

// Build bootstraps the recipe's Debian tree, customizes it, turns it into a read-only ext4
// image and publishes the image directory at opts.Dest with an atomic rename.
//
// As root, mmdebstrap (or debootstrap) runs in root mode. As any other user, every step that
// touches the tree runs inside a user namespace mapping the user to root and the user's
// subordinate ids above (package userns): mmdebstrap in its unshare mode, the recipe's steps,
// measuring the tree, mkfs.ext4 -d and removing the tree, so the image records the same
// ownership, modes, setuid bits and file capabilities a root build does; the device nodes
// mmdebstrap makes as root are added to the image with debugfs.
//
// On failure or cancellation nothing is left behind except the build log in opts.WorkDir,
// whose path the error names: the tree and the staging directory are removed and every
// process the bootstrap started is killed.
func Build(ctx context.Context, opts BuildOptions) (Manifest, error) {
	b := &build{opts: opts, started: time.Now(), stages: map[string]float64{}}
	if b.opts.Name == "" {
		b.opts.Name = opts.Recipe.Name
	}
	m, err := b.run(ctx)
	if err != nil {
		return Manifest{}, b.fail(err)
	}
	return m, nil
}

// build is the state of one Build call.
type build struct {
	opts    BuildOptions
	started time.Time
	stages  map[string]float64
	logPath string
	tool    *tool
}

func (b *build) run(ctx context.Context) (_ Manifest, err error) {
	o := &b.opts
	if err := o.check(); err != nil {
		return Manifest{}, err
	}
	ns, err := buildNamespace()
	if err != nil {
		return Manifest{}, err
	}
	want := o.Bootstrapper
	if ns != nil && want == "" {
		want = Mmdebstrap // debootstrap needs root
	}
	boot, err := findBootstrapper(ctx, want)
	if err != nil {
		return Manifest{}, err
	}
	mkfs, err := lookTool("mkfs.ext4")
	if err != nil {
		return Manifest{}, fmt.Errorf("%w; install e2fsprogs (apt-get install e2fsprogs)", err)
	}
	arch := debian.HostArch()

	logFile, err := os.CreateTemp(o.WorkDir, "image-"+o.Name+"-*.log")
	if err != nil {
		return Manifest{}, fmt.Errorf("create build log in %s: %w", o.WorkDir, err)
	}
	defer logFile.Close()
	b.logPath = logFile.Name()
	// The tools' TMPDIR is the build's own, removed with it: a tool killed by a cancellation
	// (mmdebstrap's gpg home, for one) cannot clean up after itself.
	tmp, err := os.MkdirTemp(o.WorkDir, "image-"+o.Name+"-tree-tmp-*")
	if err != nil {
		return Manifest{}, fmt.Errorf("create the build's temporary directory in %s: %w", o.WorkDir, err)
	}
	defer func() {
		if cerr := removeTreeIn(ctx, ns, tmp); cerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up: %w", cerr))
		}
	}()
	b.tool = &tool{log: logFile, env: toolEnv(tmp), ns: ns}
	if ns != nil {
		b.tool.logf("unprivileged build in a user namespace: %v\n", *ns)
	}
	b.tool.logf("banger image build %s: recipe %s (%s), %s %s, mirror %s, %s\n",
		o.Name, o.Recipe.Name, o.Recipe.Hash()[:12], boot.Name, boot.Version, o.Mirror, arch)

	tree, err := os.MkdirTemp(o.WorkDir, "image-"+o.Name+"-tree-*")
	if err != nil {
		return Manifest{}, fmt.Errorf("create build tree in %s: %w", o.WorkDir, err)
	}
	treeRemoved := false
	defer func() {
		if !treeRemoved {
			if cerr := removeTreeIn(ctx, ns, tree); cerr != nil {
				err = errors.Join(err, fmt.Errorf("clean up: %w", cerr))
			}
		}
	}()
	if err := os.Chmod(tree, 0o755); err != nil { // becomes the image's / (MkdirTemp made it 0700)
		return Manifest{}, err
	}

	st, err := stagingDir(o.Dest)
	if err != nil {
		return Manifest{}, err
	}
	defer func() {
		if cerr := st.Discard(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up: %w", cerr))
		}
	}()
	out := st.Dir

	// Optional packages the archive lacks are left out; the manifest says which and why.
	recipe, skipped, err := b.resolveOptional(ctx, arch)
	if err != nil {
		return Manifest{}, err
	}

	// Bootstrap.
	end := b.stage(StageBootstrap, fmt.Sprintf("%s: %s/%s (%s) with %d packages from %s",
		boot.Name, o.Recipe.Suite, o.Recipe.Variant, arch, len(recipe.Packages), o.Mirror))
	args, err := boot.args(recipe, arch, o.Mirror, tree, ns != nil)
	if err != nil {
		return Manifest{}, err
	}
	b.tool.onLine = func(line string) {
		if msg, ok := strings.CutPrefix(line, "I: "); ok {
			o.Progress.Stage(StageBootstrap, boot.Name+": "+msg)
		}
	}
	if err := b.tool.run(ctx, boot.Path, args...); err != nil {
		return Manifest{}, err
	}
	b.tool.onLine = nil
	end()

	// Customize.
	end = b.stage(StageCustomize, fmt.Sprintf("applying %d steps", len(o.Recipe.Steps)))
	for i, s := range o.Recipe.Steps {
		b.tool.logf("customize: step %d: %s\n", i, s)
	}
	if err := applyStepsIn(ctx, ns, tree, o.Recipe.Steps); err != nil {
		return Manifest{}, fmt.Errorf("customize: %w", err)
	}
	pkgs, err := installedPackages(tree)
	if err != nil {
		return Manifest{}, err
	}
	if err := checkInstalled(recipe.Packages, pkgs); err != nil {
		return Manifest{}, err
	}
	end()

	// Make the file system.
	end = b.stage(StageMkfs, "measuring the tree")
	usage, err := ext4.MeasureIn(ctx, ns, tree)
	if err != nil {
		return Manifest{}, fmt.Errorf("measure %s: %w", tree, err)
	}
	size, inodes := ext4.Geometry(usage)
	o.Progress.Stage(StageMkfs, fmt.Sprintf("mkfs.ext4: %d MiB, %d inodes for %d MiB in %d files",
		size/mib, inodes, usage.Bytes/mib, usage.Inodes))
	rootfs := filepath.Join(out, RootfsFile)
	mk := ext4.Options{Tree: tree, Output: rootfs, Label: RootfsLabel, Size: size, Inodes: inodes, Run: b.tool.run, Userns: ns}
	if ns != nil {
		mk.Nodes = mmdebstrapDevices
	}
	if err := ext4.FromTree(ctx, mk); err != nil {
		return Manifest{}, err
	}
	treeRemoved = true
	if err := removeTreeIn(ctx, ns, tree); err != nil {
		return Manifest{}, err
	}
	end()

	// Checksum.
	end = b.stage(StageChecksum, "sha256 "+RootfsFile)
	sum, err := fileSHA256(ctx, rootfs, o.Progress)
	if err != nil {
		return Manifest{}, fmt.Errorf("checksum %s: %w", rootfs, err)
	}
	end()

	m := Manifest{
		Format:       manifestFormat,
		Name:         o.Name,
		Recipe:       o.Recipe.Name,
		RecipeSHA256: o.Recipe.Hash(),
		Suite:        o.Recipe.Suite,
		Variant:      o.Recipe.Variant,
		Architecture: arch,
		Mirror:       o.Mirror,
		Packages:     pkgs,
		RootfsSize:   size,
		RootfsSHA256: sum,
		BuiltAt:      b.started.UTC().Truncate(time.Second),
		Tool:         boot.Name,
		ToolVersion:  boot.Version,
		MkfsVersion:  toolVersion(ctx, mkfs, "-V"),
		BuildSeconds: round3(time.Since(b.started).Seconds()),
		StageSeconds: b.stages,
		TreeBytes:    usage.Bytes,
		TreeInodes:   usage.Inodes,
		RootfsInodes: inodes,

		SkippedPackages: skipped,
		Source:          SourceRecipe,
	}
	if ns != nil {
		m.Notes = append(m.Notes, "built without root, in a user namespace mapping the builder's subordinate ids (mmdebstrap --mode=unshare); /dev's nodes added with debugfs")
	}
	if err := b.publish(ctx, st, m); err != nil {
		return Manifest{}, err
	}
	logFile.Close()
	os.Remove(b.logPath) // its copy is in the image directory
	return m, nil
}

// publish completes the staging directory (build log, manifest) and publishes it as Dest.
func (b *build) publish(ctx context.Context, st *durable.Staging, m Manifest) error {
	b.tool.logf("built %s in %.1fs\n", m.Name, m.BuildSeconds)
	logData, err := os.ReadFile(b.logPath)
	if err != nil {
		return fmt.Errorf("read build log: %w", err)
	}
	if err := writeSynced(filepath.Join(st.Dir, BuildLogFile), logData, 0o644); err != nil {
		return fmt.Errorf("copy build log: %w", err)
	}
	return publishDir(ctx, st, b.opts.Dest, m)
}

// resolveOptional returns the recipe with the optional packages the archive has added to its
// packages, and the ones it lacks with the reason. The archive is asked through banger's own
// verified Debian client (InRelease → Packages), for the recipe's suite and first component.
func (b *build) resolveOptional(ctx context.Context, arch string) (Recipe, []SkippedPackage, error) {
	r := b.opts.Recipe
	if len(r.Optional) == 0 {
		return r, nil, nil
	}
	component := "main"
	if len(r.Components) > 0 {
		component = r.Components[0]
	}
	archive := &debian.Archive{Mirror: b.opts.Mirror, Suite: r.Suite, Component: component, Arch: arch}
	r.Packages = append([]string(nil), r.Packages...)
	var skipped []SkippedPackage
	for _, name := range r.Optional {
		_, err := archive.Resolve(ctx, name)
		if err == nil {
			r.Packages = append(r.Packages, name)
			continue
		}
		if ctx.Err() != nil {
			return r, nil, ctx.Err()
		}
		// Optional means optional: a package the archive lacks, or one that could not be
		// looked up (the bootstrap then says what is wrong with the mirror), is left out.
		reason := fmt.Sprintf("not in Debian %s %s (%s) at %s; install it in a VM from upstream if needed", r.Suite, component, arch, b.opts.Mirror)
		if !errors.Is(err, debian.ErrNoPackage) {
			reason = fmt.Sprintf("could not be looked up: %v", err)
		}
		skipped = append(skipped, SkippedPackage{Name: name, Reason: reason})
		b.tool.logf("optional package %s skipped: %s\n", name, reason)
		b.opts.Progress.Stage(StageBootstrap, fmt.Sprintf("optional package %s skipped: %s", name, reason))
	}
	return r, skipped, nil
}

// stage reports the start of a stage and returns a func that records its duration.
func (b *build) stage(name, msg string) func() {
	b.opts.Progress.Stage(name, msg)
	b.tool.logf("== %s: %s\n", name, msg)
	t0 := time.Now()
	return func() { b.stages[name] = round3(time.Since(t0).Seconds()) }
}

// fail decorates a build error with the image name and, once there is one, the build log.
func (b *build) fail(err error) error {
	name := b.opts.Name
	if name == "" {
		name = "(unnamed)"
	}
	if b.logPath == "" {
		return fmt.Errorf("image %s: %w", name, err)
	}
	b.tool.logf("FAILED: %v\n", err)
	return fmt.Errorf("image %s: %w; full log: %s", name, err, b.logPath)
}

func round3(f float64) float64 {
	return math.Round(f*1000) / 1000
}
