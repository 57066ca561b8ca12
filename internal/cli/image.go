package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/bytesize"
)

func (a *app) imageCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "image",
		Short:   "Build and list images",
		Long:    "Root filesystem images VMs boot from. The default image, debian-bookworm, is built from Debian packages on first use.",
		Example: "  banger image list\n  banger image build debian-bookworm",
	}
	var asJSON bool
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List installed images",
		Long:    "List the images built or installed so far.",
		Example: "  banger image list",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := a.connect(c.Context())
			if err != nil {
				return err
			}
			imgs, err := cl.ListImages(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, imgs)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSIZE\tCREATED")
			for _, img := range imgs {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", img.Name, bytesize.Format(img.SizeBytes), ago(img.CreatedAt))
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	build := &cobra.Command{
		Use:   "build NAME",
		Short: "Build an image from its recipe",
		Long: `Build the named image from its recipe (Debian packages via mmdebstrap, verified by apt) and
install it, replacing an older build. VMs running on the old image are not disturbed; new VMs use
the new one. vm run builds the default image on first use, so this is for refreshing it.`,
		Example: "  banger image build debian-bookworm",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := a.connect(c.Context())
			if err != nil {
				return err
			}
			r := newRenderer(a.stderr)
			img, err := cl.BuildImage(c.Context(), args[0], r.Event)
			r.Finish("")
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s: %s (%s)\n", img.Name, bytesize.Format(img.SizeBytes), img.Dir)
			return nil
		},
	}
	c.AddCommand(list, build)
	return c
}
