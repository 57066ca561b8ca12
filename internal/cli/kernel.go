package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
)

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// jsonInto decodes raw into v and reports whether it could.
func jsonInto(raw json.RawMessage, v any) bool {
	return len(raw) > 0 && json.Unmarshal(raw, v) == nil
}

func (a *app) kernelCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "kernel",
		Short: "Pull, import and list guest kernels",
		Long: `Guest kernels: Debian's, pulled from its archive and verified through its signed chain (vm run
pulls the default one on demand), or your own, imported from a build. VMs get the kernel's whole
module tree as a read-only disk, so modprobe works in them.`,
		Example: `  banger kernel pull debian-6.1
  banger kernel list --available
  banger kernel import mykernel --vmlinux arch/x86/boot/bzImage --modules /tmp/modroot`,
	}
	c.AddCommand(a.kernelListCmd(), a.kernelShowCmd(), a.kernelPullCmd(), a.kernelImportCmd(), a.kernelRmCmd(), a.kernelExportCmd())
	return c
}

func (a *app) kernelListCmd() *cobra.Command {
	var asJSON, available bool
	c := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List installed kernels, or those that can be pulled",
		Long:    "List the installed kernels; --available lists the catalog: kernels that can be pulled by name.",
		Example: "  banger kernel list\n  banger kernel list --available",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if available {
				return a.listCatalog(c.Context(), asJSON, false)
			}
			return printFetched(a, c.Context(), asJSON, func(cl *client.Client) ([]api.Kernel, error) {
				return cl.ListKernels(c.Context())
			}, a.printKernels)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolVar(&available, "available", false, "list what can be pulled by name (the catalogs)")
	return c
}

func (a *app) printKernels(ks []api.Kernel) error {
	tw := a.newTable()
	fmt.Fprintln(tw, "NAME\tRELEASE\tSOURCE\tPACKAGE\tMODULES\tINSTALLED\tUSED BY")
	for _, k := range ks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.Name, k.Release, dash(k.Source), dash(strings.TrimSpace(k.Package+" "+k.Version)),
			yesNo(k.Modules), ago(k.CreatedAt), dash(usedBy(k.UsedBy, k.Snapshots)))
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (a *app) kernelShowCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:     "show NAME",
		Short:   "Show an installed kernel",
		Long:    "Show an installed kernel: its release, where it came from, whether it has modules and an initramfs of its own, and the VMs that boot it and the snapshots taken with it.",
		Example: "  banger kernel show debian-6.1",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return printFetched(a, c.Context(), asJSON, func(cl *client.Client) (api.Kernel, error) {
				return cl.GetKernel(c.Context(), args[0])
			}, a.printKernel)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON (with the manifest)")
	return c
}

func (a *app) printKernel(k api.Kernel) error {
	f := a.newFields()
	row := f.row
	row("name", k.Name)
	row("release", k.Release)
	row("source", k.Source)
	if k.Package != "" {
		row("package", k.Package+" "+k.Version)
	}
	row("modules", yesNo(k.Modules))
	row("own initrd", yesNo(k.Initrd))
	row("installed", k.CreatedAt.Local().Format(time.RFC3339)+" ("+ago(k.CreatedAt)+")")
	row("dir", k.Dir)
	row("used by", usedBy(k.UsedBy, k.Snapshots))
	return f.flush()
}

func (a *app) kernelPullCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "pull NAME",
		Short:   "Download a kernel and prepare it for booting",
		Long:    "Get the named kernel as its catalog entry says (Debian's archive, verified through the signed chain, or a bundle pinned by sha256), extract an ELF vmlinux, index its modules and pack them into a read-only disk. Pulling again fetches the newest package.",
		Example: "  banger kernel pull debian-6.1",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runWithProgress(a, c.Context(), "pulled kernel "+args[0], func(cl *client.Client, onEvent func(api.Event)) (api.Kernel, error) {
				return cl.PullKernel(c.Context(), args[0], onEvent)
			}, func(k api.Kernel) string {
				return fmt.Sprintf("%s: %s (%s)", k.Name, k.Release, strings.TrimSpace(k.Package+" "+k.Version))
			})
		},
	}
}

func (a *app) kernelImportCmd() *cobra.Command {
	var vmlinux, initrd, modules string
	c := &cobra.Command{
		Use:   "import NAME --vmlinux FILE [--initrd FILE] [--modules DIR]",
		Short: "Adopt a locally built kernel",
		Long: `Adopt a kernel you built: --vmlinux is the ELF vmlinux or the bzImage (the ELF is extracted),
--modules the lib/modules/<release> directory or the INSTALL_MOD_PATH holding it, --initrd an
initramfs of its own.

banger always boots with its own initramfs (the agent as /init, plus the virtio, vsock and
overlay modules from --modules when the kernel has them as modules), so a kernel with
everything built in and no initramfs of its own works unchanged: it needs CONFIG_BLK_DEV_INITRD,
devtmpfs, ext4, overlayfs, virtio-blk and virtio-mmio (ACPI-described) or their modules. An
--initrd is put before banger's archive: the kernel unpacks both, banger's /init wins, so it can
carry firmware or modules.`,
		Example: "  banger kernel import fc-6.1 --vmlinux ./vmlinux\n  banger kernel import mine --vmlinux arch/x86/boot/bzImage --modules /tmp/modroot",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if vmlinux == "" {
				return usagef("kernel import needs --vmlinux FILE")
			}
			req := api.KernelImportRequest{Name: args[0]}
			for _, p := range []struct {
				in  string
				out *string
			}{{vmlinux, &req.Vmlinux}, {initrd, &req.Initrd}, {modules, &req.Modules}} {
				if p.in != "" {
					abs, err := filepath.Abs(p.in)
					if err != nil {
						return err
					}
					*p.out = abs
				}
			}
			return runWithProgress(a, c.Context(), "imported kernel "+args[0], func(cl *client.Client, onEvent func(api.Event)) (api.Kernel, error) {
				return cl.ImportKernel(c.Context(), req, onEvent)
			}, func(k api.Kernel) string {
				return fmt.Sprintf("%s: %s (modules: %s, own initrd: %s)", k.Name, k.Release, yesNo(k.Modules), yesNo(k.Initrd))
			})
		},
	}
	c.Flags().StringVar(&vmlinux, "vmlinux", "", "the kernel: an ELF vmlinux or a bzImage")
	c.Flags().StringVar(&initrd, "initrd", "", "an initramfs of the kernel's own (optional)")
	c.Flags().StringVar(&modules, "modules", "", "its modules: lib/modules/<release>, or the directory holding lib/modules (optional)")
	return c
}

func (a *app) kernelRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME…",
		Aliases: []string{"delete"},
		Short:   "Remove installed kernels",
		Long:    "Remove kernels, with their boot snapshots. A kernel that a VM (running or stopped) boots, or that a snapshot was taken with, is not removed: delete the VM (banger vm delete) or the snapshot (banger snapshot rm) first.",
		Example: "  banger kernel rm mykernel",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return a.eachVM(c.Context(), args, func(cl *client.Client, name string) (string, error) {
				k, err := cl.DeleteKernel(c.Context(), name)
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("removed kernel %s (%s)", k.Name, k.Release), nil
			})
		},
	}
}

func (a *app) kernelExportCmd() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:     "export NAME -o FILE",
		Short:   "Write a kernel as a bundle file (for a catalog entry)",
		Long:    "Write a kernel as a bundle (vmlinux, its module disk, its own initramfs), e.g. to serve it to other hosts through a catalog entry pinned by the bundle's sha256.",
		Example: "  banger kernel export debian-6.1 -o debian-6.1.bundle",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return a.exportBundle(c.Context(), "kernel export", args[0], out, "exported kernel "+args[0], (*client.Client).ExportKernel)
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "bundle file to write")
	return c
}
