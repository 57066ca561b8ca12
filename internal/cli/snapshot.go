package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/bytesize"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/names"
)

// Snapshots: vm snapshot, vm fork, snapshot list/rm, and the flags of the commands that create
// VMs (--cold, --from-snapshot).

// startFlags say how the commands that create VMs start them: cold, or from a snapshot.
type startFlags struct {
	cold bool
	from string
}

func (f *startFlags) register(c *cobra.Command) {
	c.Flags().BoolVar(&f.cold, "cold", false, "boot the VM cold even when a boot snapshot would restore it, and make none (warm_start = false does this for every VM)")
	c.Flags().StringVar(&f.from, "from-snapshot", "", "restore the VM from snapshot `NAME` (see banger snapshot list) instead of booting it, with the snapshot's image, kernel and size")
}

// apply puts the flags into req. A snapshot fixes what the VM runs: --from-snapshot with
// --cold, --image, --kernel or a size is a usage error.
func (f *startFlags) apply(c *cobra.Command, req *api.CreateVMRequest) error {
	req.Cold, req.FromSnapshot = f.cold, f.from
	if f.from == "" {
		return nil
	}
	if f.cold {
		return usagef("--cold boots a fresh VM and --from-snapshot restores a saved one: pick one")
	}
	for _, flag := range []string{"image", "kernel", "vcpu", "memory", "disk-size"} {
		if c.Flags().Changed(flag) {
			return usagef("--from-snapshot %s restores the snapshot's image, kernel and size; --%s cannot change them", f.from, flag)
		}
	}
	return nil
}

func (a *app) vmSnapshotCmd() *cobra.Command {
	var name string
	c := &cobra.Command{
		Use:   "snapshot VM [--name NAME]",
		Short: "Save a running VM as a snapshot",
		Long: `Save a running VM — its memory, vCPUs, devices and a copy of its disk — as a snapshot, and let
it run on; the guest pauses for as long as the save takes. ` + "`banger vm create --from-snapshot NAME`" + `
then makes VMs that continue from that moment, each a machine of its own. The snapshot's name
goes to stdout. A snapshot holds everything the VM had in memory and on disk, secrets
included (file_sync'd credentials, keys an agent holds): keep that in mind before sharing
what you make from it. ` + "`banger snapshot list`" + ` shows snapshots, ` + "`banger snapshot rm`" + ` removes them.`,
		Example: `  banger vm snapshot dev --name dev-ready
  banger vm create --from-snapshot dev-ready --name dev2`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			// A DNS label, like a VM's name; the daemon refuses the names of its boot snapshots.
			if name != "" {
				if err := names.Validate(name); err != nil {
					return usagef("--name: %s", strings.Replace(err.Error(), "VM name", "snapshot name", 1))
				}
			}
			return runWithProgress(a, c.Context(), "saved a snapshot of "+args[0], func(cl *client.Client, onEvent func(api.Event)) (api.Snapshot, error) {
				return cl.SnapshotVM(c.Context(), args[0], api.SnapshotVMRequest{Name: name}, onEvent)
			}, func(s api.Snapshot) string { return s.Name })
		},
	}
	c.Flags().StringVar(&name, "name", "", "the snapshot's name (a DNS label; default: the VM's name and the time)")
	return c
}

func (a *app) vmForkCmd() *cobra.Command {
	var (
		count int
		given []string
	)
	c := &cobra.Command{
		Use:   "fork VM [-n N] [--name NAME]...",
		Short: "Make live clones of a running VM",
		Long: `Make N live clones of a running VM: each continues from the VM's state at the fork — its
processes, page cache, workspace — as a machine of its own, while the VM runs on. N is -n, else
the number of --name flags, else 1. The clones' names go to stdout, one per line. All are made or
none.

A clone shares everything that was in its parent's memory and on its disk, secrets included:
file_sync'd credentials, tokens, keys held in memory. Each clone gets its own hostname, MAC and
IP address, ssh host key and machine-id, fresh kernel randomness and the host's clock.`,
		Example: `  banger vm fork dev
  banger vm fork dev -n 3
  banger vm fork dev --name try-a --name try-b`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			seen := map[string]bool{}
			for _, n := range given {
				if err := names.Validate(n); err != nil {
					return usagef("--name: %v", err)
				}
				if seen[n] {
					return usagef("--name %s is given twice; each clone needs its own name", n)
				}
				seen[n] = true
			}
			switch {
			case c.Flags().Changed("count") && count < 1:
				return usagef("-n %d: a fork makes at least one clone", count)
			case count > 0 && len(given) > 0 && count != len(given):
				return usagef("-n %d with %d --name flags: give a name to each clone, or none", count, len(given))
			}
			return runWithProgress(a, c.Context(), "forked "+args[0], func(cl *client.Client, onEvent func(api.Event)) ([]api.VM, error) {
				return cl.ForkVM(c.Context(), args[0], api.ForkVMRequest{Count: count, Names: given}, onEvent)
			}, func(clones []api.VM) string {
				out := make([]string, len(clones))
				for i, vm := range clones {
					out[i] = vm.Name
				}
				return strings.Join(out, "\n")
			})
		},
	}
	c.Flags().IntVarP(&count, "count", "n", 0, "how many clones (default: the number of --name flags, else 1)")
	c.Flags().StringArrayVar(&given, "name", nil, "a clone's name (a DNS label); repeat it for each clone (default: generated)")
	return c
}

func (a *app) snapshotCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "snapshot",
		Short: "List and remove snapshots",
		Long: `Snapshots are saved guests: memory, devices and a copy of the disk. Boot snapshots (kind boot)
are banger's own: the first VM of each combination of image version, kernel, guest agent, VMM
and size is saved once it has settled, and later VMs of that combination restore from it in well
under a second (warm starts; --cold or warm_start = false turn them off). Rebuilding an image,
replacing a kernel or upgrading banger removes the ones it makes stale. User snapshots (kind user)
are the ones ` + "`banger vm snapshot`" + ` takes. Removing a snapshot leaves VMs made from it running.`,
		Example: `  banger snapshot list
  banger snapshot rm dev-ready`,
	}
	c.AddCommand(a.snapshotListCmd(), a.snapshotRmCmd())
	return c
}

func (a *app) snapshotListCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List snapshots",
		Long:    "List the snapshots, boot and user, oldest first: what each was taken of, what it restores (image version, VMM), the space its files take on the host and, for a boot snapshot, how many spare VMs restored from it the daemon keeps ready (config warm_spares).",
		Example: "  banger snapshot list\n  banger snapshot list --json | jq -r '.[] | select(.kind == \"boot\") | .name'",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return printFetched(a, c.Context(), asJSON, func(cl *client.Client) ([]api.Snapshot, error) {
				return cl.ListSnapshots(c.Context())
			}, a.printSnapshots)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) printSnapshots(list []api.Snapshot) error {
	tw := a.newTable()
	fmt.Fprintln(tw, "NAME\tKIND\tFROM\tIMAGE\tVMM\tSIZE\tSPARES\tCREATED")
	for _, s := range list {
		spares := "-"
		if s.Kind == api.SnapshotBoot {
			spares = strconv.Itoa(s.Spares)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Kind, dash(s.From), s.Image, s.VMM, bytesize.Format(s.SizeBytes), spares, ago(s.Created))
	}
	return tw.Flush()
}

func (a *app) snapshotRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME…",
		Aliases: []string{"delete"},
		Short:   "Remove snapshots",
		Long:    "Remove snapshots, boot or user, and the space they take. VMs made from one keep running: they have disks of their own. A boot snapshot removed is made again by the next cold boot of its combination.",
		Example: "  banger snapshot rm dev-ready\n  banger snapshot rm $(banger snapshot list --json | jq -r '.[] | select(.kind == \"boot\") | .name')",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return a.eachVM(c.Context(), args, func(cl *client.Client, name string) (string, error) {
				if err := cl.DeleteSnapshot(c.Context(), name); err != nil {
					return "", err
				}
				return "removed snapshot " + name, nil
			})
		},
	}
}
