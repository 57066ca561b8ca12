package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (a *app) kernelCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "kernel",
		Short: "Pull and list guest kernels",
		Long:  "Guest kernels come from Debian's archive, verified through its signed chain; `vm run` pulls the default one on demand.",
		Example: `  banger kernel pull debian-6.1
  banger kernel list`,
	}
	var asJSON bool
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List pulled kernels",
		Long:    "List the kernels pulled so far.",
		Example: "  banger kernel list",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := a.connect(c.Context())
			if err != nil {
				return err
			}
			ks, err := cl.ListKernels(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, ks)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tRELEASE\tPACKAGE\tPULLED")
			for _, k := range ks {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Name, k.Release, k.Package+" "+k.Version, ago(k.CreatedAt))
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	pull := &cobra.Command{
		Use:     "pull NAME",
		Short:   "Download a kernel and prepare it for booting",
		Long:    "Download the named kernel from Debian's archive (verified through the signed chain), extract an ELF vmlinux and its modules. Pulling again fetches the newest package.",
		Example: "  banger kernel pull debian-6.1",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := a.connect(c.Context())
			if err != nil {
				return err
			}
			r := newRenderer(a.stderr)
			k, err := cl.PullKernel(c.Context(), args[0], r.Event)
			if err != nil {
				r.Finish("")
				return err
			}
			r.Finish("")
			fmt.Fprintf(a.stdout, "%s: %s (%s %s)\n", k.Name, k.Release, k.Package, k.Version)
			return nil
		},
	}
	c.AddCommand(list, pull)
	return c
}
