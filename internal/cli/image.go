package cli

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/bytesize"
	"github.com/banger-dev/banger/internal/client"
)

func (a *app) imageCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "image",
		Short: "Pull, build, list and move images",
		Long: `Root filesystem images VMs boot from. The default image, debian-bookworm, is built from Debian
packages on first use; any OCI image (Docker Hub, ghcr.io, a registry of your own) can be pulled.

Images are versioned: a VM boots the exact version it was created from, even after the image is
rebuilt or pulled again, and versions no VM or snapshot uses any more are removed.`,
		Example: `  banger image list --available
  banger image pull alpine:3.20
  banger image pull localhost:5000/team/devbox:1 --name devbox --kernel debian-6.1
  banger image export devbox -o devbox.bundle && banger image import devbox.bundle`,
	}
	c.AddCommand(a.imageListCmd(), a.imageShowCmd(), a.imagePullCmd(), a.imageBuildCmd(), a.imageDeleteCmd(),
		a.imageRegisterCmd(), a.imageExportCmd(), a.imageImportCmd(), a.imageCacheCmd())
	return c
}

func (a *app) imageListCmd() *cobra.Command {
	var asJSON, available bool
	c := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List installed images, or those that can be had",
		Long:    "List the installed images with their current version; --available lists the catalog: images that can be had by name (built-in, and from catalog files in the config directory).",
		Example: "  banger image list\n  banger image list --available",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if available {
				return a.listCatalog(c.Context(), asJSON, true)
			}
			return printFetched(a, c.Context(), asJSON, func(cl *client.Client) ([]api.Image, error) {
				return cl.ListImages(c.Context())
			}, a.printImages)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolVar(&available, "available", false, "list what can be had by name (the catalogs)")
	return c
}

func (a *app) printImages(imgs []api.Image) error {
	tw := a.newTable()
	fmt.Fprintln(tw, "NAME\tVERSION\tSIZE\tKERNEL\tSOURCE\tCREATED\tVERSIONS")
	for _, img := range imgs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", img.Name, img.Version, bytesize.Format(img.SizeBytes), dash(img.Kernel),
			dash(shortSource(img.Source)), ago(img.CreatedAt), len(img.Versions))
	}
	return tw.Flush()
}

func (a *app) printCatalog(entries []api.CatalogEntry, images bool) error {
	tw := a.newTable()
	if images {
		fmt.Fprintln(tw, "NAME\tKIND\tORIGIN\tKERNEL\tINSTALLED\tFROM")
	} else {
		fmt.Fprintln(tw, "NAME\tKIND\tORIGIN\tINSTALLED\tFROM")
	}
	for _, e := range entries {
		installed := "no"
		if e.Installed {
			installed = "yes"
		}
		if images {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Name, e.Kind, e.Origin, dash(e.Kernel), installed, e.From)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Name, e.Kind, e.Origin, installed, e.From)
		}
	}
	return tw.Flush()
}

// shortSource keeps a listing narrow: a digest is cut to 12 hex digits (`image show` has it
// whole).
func shortSource(s string) string {
	if i := strings.Index(s, "@sha256:"); i >= 0 && len(s) > i+8+12 {
		return s[:i+8+12]
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// usedBy says what uses an image version or a kernel: the VMs by name, then the user
// snapshots, each as "snapshot NAME".
func usedBy(vms, snapshots []string) string {
	users := slices.Clone(vms)
	for _, s := range snapshots {
		users = append(users, "snapshot "+s)
	}
	return strings.Join(users, ", ")
}

func (a *app) imageShowCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:     "show NAME",
		Short:   "Show an image: versions, the VMs on each, its manifest",
		Long:    "Show an installed image: its current version, where it came from, its default kernel, what its manifest records (packages, skipped packages, notes) and every version kept with the VMs created from it and the snapshots taken on it.",
		Example: "  banger image show debian-bookworm\n  banger image show debian-bookworm --json | jq .manifest.packages",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return printFetched(a, c.Context(), asJSON, func(cl *client.Client) (api.Image, error) {
				return cl.GetImage(c.Context(), args[0])
			}, a.printImage)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON (with the whole manifest)")
	return c
}

// imageManifest is the part of an image manifest `image show` prints.
type imageManifest struct {
	Recipe          string `json:"recipe"`
	Mirror          string `json:"mirror"`
	Packages        []any  `json:"packages"`
	SkippedPackages []struct {
		Name, Reason string
	} `json:"skipped_packages"`
	RootfsSHA256 string   `json:"rootfs_sha256"`
	BuildSeconds float64  `json:"build_seconds"`
	Notes        []string `json:"notes"`
	OCI          *struct {
		Reference, Digest string
		Layers            []string
	} `json:"oci"`
}

func (a *app) printImage(img api.Image) error {
	f := a.newFields()
	row := f.row
	row("name", img.Name)
	row("version", img.Version)
	row("size", bytesize.Format(img.SizeBytes))
	row("kernel", img.Kernel)
	row("source", img.Source)
	row("created", img.CreatedAt.Local().Format(time.RFC3339)+" ("+ago(img.CreatedAt)+")")
	row("dir", img.Dir)
	var m imageManifest
	if jsonInto(img.Manifest, &m) {
		row("rootfs sha256", m.RootfsSHA256)
		if m.Recipe != "" {
			row("recipe", m.Recipe+" from "+m.Mirror)
		}
		if m.OCI != nil {
			row("pulled from", m.OCI.Reference+"@"+m.OCI.Digest+fmt.Sprintf(" (%d layers)", len(m.OCI.Layers)))
		}
		if len(m.Packages) > 0 {
			row("packages", fmt.Sprintf("%d (banger image show %s --json | jq .manifest.packages)", len(m.Packages), img.Name))
		}
		for _, s := range m.SkippedPackages {
			row("skipped", s.Name+": "+s.Reason)
		}
		for _, n := range m.Notes {
			row("note", n)
		}
	}
	if err := f.flush(); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout)
	tw := a.newTable()
	fmt.Fprintln(tw, "VERSION\tSIZE\tCREATED\tUSED BY")
	for _, v := range img.Versions {
		mark := ""
		if v.Current {
			mark = " (current)"
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\n", v.Version, mark, bytesize.Format(v.SizeBytes), ago(v.CreatedAt), dash(usedBy(v.UsedBy, v.Snapshots)))
	}
	return tw.Flush()
}

func (a *app) imagePullCmd() *cobra.Command {
	var name, size, kernel string
	c := &cobra.Command{
		Use:   "pull NAME|OCI-REF|oci:DIR[:REF]|docker-archive:FILE[:NAME:TAG]",
		Short: "Pull an image: a catalog name, any OCI image, or one on disk",
		Long: `Get an image: a name from the catalog (banger image list --available), built or downloaded as
its entry says, or any OCI reference (debian:bookworm, ghcr.io/org/img:tag,
localhost:5000/x@sha256:…), pulled for linux/amd64 with layers cached by digest, flattened and
packed into a read-only ext4 image sized to its contents.

Images on disk are read with the transport names skopeo and podman use:
  oci:DIR[:REF]                   an OCI image layout directory (skopeo copy, umoci, buildah,
                                  podman save --format oci-dir); REF is the image's
                                  org.opencontainers.image.ref.name (default: the only image,
                                  else "latest"); a multi-platform index gives its linux/amd64 image
  docker-archive:FILE[:NAME:TAG]  a docker save (or skopeo, podman save) tar; NAME:TAG picks an
                                  image when the file holds several
They get the same checks and limits as a registry pull: sizes are capped before anything is
parsed, every blob is checked against its digest, and no symlink leads out of the directory.
The name defaults to the directory's name and REF, or the archive's NAME:TAG.

An image without systemd boots with banger's agent as its init; banger vm run and vm exec work in
any image. Pulling again makes a new version; VMs keep the version they were created from.`,
		Example: `  banger image pull debian:bookworm-slim
  banger image pull localhost:5000/team/devbox:1 --name devbox --kernel debian-6.1
  banger image pull oci:./build/devbox-layout:1
  banger image pull docker-archive:devbox.tar --name devbox
  banger vm run --rm --image devbox -- uname -a`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ref, err := absSource(args[0])
			if err != nil {
				return err
			}
			req := api.ImagePullRequest{Ref: ref, Name: name, Kernel: kernel}
			if size != "" {
				n, err := bytesize.Parse(size)
				if err != nil {
					return usagef("--size: %v", err)
				}
				req.SizeBytes = n
			}
			return runWithProgress(a, c.Context(), "pulled "+args[0], func(cl *client.Client, onEvent func(api.Event)) (api.Image, error) {
				return cl.PullImage(c.Context(), req, onEvent)
			}, func(img api.Image) string {
				return fmt.Sprintf("%s@%s: %s (%s)", img.Name, img.Version, bytesize.Format(img.SizeBytes), img.Source)
			})
		},
	}
	c.Flags().StringVar(&name, "name", "", "name of the image (default: from the reference, e.g. debian-bookworm-slim)")
	c.Flags().StringVar(&size, "size", "", "size of the image's ext4 (e.g. 2G; default: its contents plus headroom)")
	c.Flags().StringVar(&kernel, "kernel", "", "kernel its VMs boot unless told otherwise (default: default_kernel)")
	return c
}

// absSource makes the path of an oci: or docker-archive: source absolute: the daemon that
// reads it runs in another directory. Anything else is returned as it is.
func absSource(ref string) (string, error) {
	for _, t := range []string{api.LayoutPrefix, api.ArchivePrefix} {
		rest, ok := strings.CutPrefix(ref, t)
		if !ok {
			continue
		}
		p, name, hasName := strings.Cut(rest, ":")
		if p == "" {
			return "", usagef("%q names no path: want %sPATH", ref, t)
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		if hasName {
			abs += ":" + name
		}
		return t + abs, nil
	}
	return ref, nil
}

func (a *app) imageBuildCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "build NAME",
		Short: "Build an image from its recipe",
		Long: `Build the named image from its recipe (Debian packages via mmdebstrap, verified by apt) as its
new version. VMs created from an older version keep booting it; new VMs use the new one. vm run
builds the default image on first use, so this is for refreshing it.`,
		Example: "  banger image build debian-bookworm",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runWithProgress(a, c.Context(), "built "+args[0], func(cl *client.Client, onEvent func(api.Event)) (api.Image, error) {
				return cl.BuildImage(c.Context(), args[0], onEvent)
			}, func(img api.Image) string {
				return fmt.Sprintf("%s@%s: %s (%s)", img.Name, img.Version, bytesize.Format(img.SizeBytes), img.Dir)
			})
		},
	}
}

func (a *app) imageDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME…",
		Aliases: []string{"rm"},
		Short:   "Delete images with all their versions",
		Long:    "Delete images and every version of them, with their boot snapshots. An image that a VM (running or stopped) was created from, or that a snapshot was taken on, is not deleted: delete the VM (banger vm delete) or the snapshot (banger snapshot rm) first.",
		Example: "  banger image delete devbox",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return a.eachVM(c.Context(), args, func(cl *client.Client, name string) (string, error) {
				img, err := cl.DeleteImage(c.Context(), name)
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("deleted image %s (%d versions)", img.Name, len(img.Versions)), nil
			})
		},
	}
}

func (a *app) imageRegisterCmd() *cobra.Command {
	var name, rootfs, kernel string
	c := &cobra.Command{
		Use:   "register --name NAME --rootfs FILE",
		Short: "Adopt an ext4 file as an image",
		Long: `Adopt a host ext4 file system image as an image (a sparse copy; the file stays yours). It
becomes the read-only lower layer of its VMs' roots, so it needs an /sbin/init (systemd) or
nothing more than a shell: banger's agent boots it either way.`,
		Example: "  banger image register --name mine --rootfs ./rootfs.ext4 --kernel debian-6.1",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if name == "" || rootfs == "" {
				return usagef("image register needs --name and --rootfs")
			}
			abs, err := filepath.Abs(rootfs)
			if err != nil {
				return err
			}
			return runWithProgress(a, c.Context(), "registered "+name, func(cl *client.Client, onEvent func(api.Event)) (api.Image, error) {
				return cl.RegisterImage(c.Context(), api.ImageRegisterRequest{Name: name, Rootfs: abs, Kernel: kernel}, onEvent)
			}, imageVersionLine)
		},
	}
	c.Flags().StringVar(&name, "name", "", "name of the image")
	c.Flags().StringVar(&rootfs, "rootfs", "", "the ext4 file")
	c.Flags().StringVar(&kernel, "kernel", "", "kernel its VMs boot unless told otherwise")
	return c
}

// imageVersionLine is what register and import print: the image's new version and its size.
func imageVersionLine(img api.Image) string {
	return fmt.Sprintf("%s@%s: %s", img.Name, img.Version, bytesize.Format(img.SizeBytes))
}

func (a *app) imageExportCmd() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "export NAME[@VERSION] -o FILE",
		Short: "Write an image as a bundle file",
		Long: `Write an image (its current version, or the one given) as a bundle: a zstd-compressed tar of
manifest.json (name, architecture, kernel, the size and sha256 of every member), the image's own
manifest and rootfs.ext4. banger image import verifies and installs it, on this host or another.`,
		Example: "  banger image export devbox -o devbox.bundle",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return a.exportBundle(c.Context(), "image export", args[0], out, "exported "+args[0], (*client.Client).ExportImage)
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "bundle file to write")
	return c
}

func (a *app) imageImportCmd() *cobra.Command {
	var name string
	c := &cobra.Command{
		Use:     "import FILE",
		Short:   "Install an image bundle",
		Long:    "Install an image bundle written by banger image export. Every member is checked against the bundle's manifest first; a bundle that was altered or damaged is refused and nothing is installed.",
		Example: "  banger image import devbox.bundle\n  banger image import devbox.bundle --name devbox-old",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			abs, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			return runWithProgress(a, c.Context(), "imported "+args[0], func(cl *client.Client, onEvent func(api.Event)) (api.Image, error) {
				return cl.ImportImage(c.Context(), api.ImageImportRequest{Path: abs, Name: name}, onEvent)
			}, imageVersionLine)
		},
	}
	c.Flags().StringVar(&name, "name", "", "install under this name instead of the bundle's")
	return c
}

func (a *app) imageCacheCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "cache",
		Short:   "Manage the image caches",
		Long:    "The caches behind images: OCI layer blobs by digest and downloaded bundles.",
		Example: "  banger image cache prune",
	}
	var dryRun bool
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Free cached layers, bundles and unused image versions",
		Long: `Free what images do not need: OCI layer blobs no installed image version was pulled from,
downloaded catalog bundles (fetched again when needed) and image versions no VM or snapshot uses. It prints
what it freed; --dry-run only says what it would free.`,
		Example: "  banger image cache prune --dry-run",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := a.connect(c.Context())
			if err != nil {
				return err
			}
			res, err := cl.PruneImageCache(c.Context(), dryRun)
			if err != nil {
				return err
			}
			verb := "freed"
			if dryRun {
				verb = "would free"
			}
			for _, l := range res.Layers {
				fmt.Fprintf(a.stdout, "%s layer %s (%s)\n", verb, l.Name, bytesize.Format(l.Size))
			}
			for _, b := range res.Bundles {
				fmt.Fprintf(a.stdout, "%s bundle %s (%s)\n", verb, b.Name, bytesize.Format(b.Size))
			}
			for _, v := range res.Versions {
				fmt.Fprintf(a.stdout, "%s image version %s (%s)\n", verb, v.Version, bytesize.Format(v.SizeBytes))
			}
			fmt.Fprintf(a.stdout, "%s %s in %d layers, %d bundles and %d image versions\n", verb, bytesize.Format(res.Freed), len(res.Layers), len(res.Bundles), len(res.Versions))
			return nil
		},
	}
	prune.Flags().BoolVar(&dryRun, "dry-run", false, "only say what would be freed")
	c.AddCommand(prune)
	return c
}
