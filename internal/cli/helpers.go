package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"text/tabwriter"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/bytesize"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/termtext"
)

// The shapes many commands share: ask the daemon for something and print it as a table or
// JSON; run an operation with progress on stderr and a result line on stdout.

// newTable is the tabwriter every table of the CLI is written with.
func (a *app) newTable() *tabwriter.Writer {
	return tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
}

// fields writes the "name:  value" rows of the show commands (vm, image, kernel show): one
// layout for all of them, the names aligned, a row with no value left out.
type fields struct{ tw *tabwriter.Writer }

func (a *app) newFields() *fields { return &fields{a.newTable()} }

func (f *fields) row(name, value string) {
	if value != "" {
		// Values can come from the guest (a last error quoting its console): escaped.
		fmt.Fprintf(f.tw, "%s:\t%s\n", name, termtext.CleanLine(value))
	}
}

func (f *fields) flush() error { return f.tw.Flush() }

// printFetched connects, gets a value with get and prints it: as JSON with asJSON, else with
// table. It is the body of the list and show commands.
func printFetched[T any](a *app, ctx context.Context, asJSON bool, get func(cl *client.Client) (T, error), table func(T) error) error {
	cl, err := a.connect(ctx)
	if err != nil {
		return err
	}
	v, err := get(cl)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(a.stdout, v)
	}
	return table(v)
}

// listCatalog is `image list --available` and `kernel list --available`: the catalog's image
// entries (images) or kernel entries.
func (a *app) listCatalog(ctx context.Context, asJSON, images bool) error {
	return printFetched(a, ctx, asJSON, func(cl *client.Client) ([]api.CatalogEntry, error) {
		cat, err := cl.Catalog(ctx)
		if images {
			return cat.Images, err
		}
		return cat.Kernels, err
	}, func(entries []api.CatalogEntry) error { return a.printCatalog(entries, images) })
}

// runWithProgress connects and runs op with its progress on stderr, ending after a success in
// "banger: <done> in 1.2s"; then it prints the line report makes of the result on stdout.
func runWithProgress[T any](a *app, ctx context.Context, done string, op func(cl *client.Client, onEvent func(api.Event)) (T, error), report func(T) string) error {
	cl, err := a.connect(ctx)
	if err != nil {
		return err
	}
	r := newRenderer(a.stderr)
	v, err := op(cl, r.Event)
	r.Done(err, done)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, report(v))
	return nil
}

// exportBundle is the body of `image export` and `kernel export` (cmd, for the usage error):
// it writes the bundle of name to the file out with export.
func (a *app) exportBundle(ctx context.Context, cmd, name, out, done string,
	export func(cl *client.Client, ctx context.Context, name, path string, onEvent func(api.Event)) (api.Bundle, error)) error {
	if out == "" {
		return usagef("%s needs -o FILE", cmd)
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	return runWithProgress(a, ctx, done, func(cl *client.Client, onEvent func(api.Event)) (api.Bundle, error) {
		return export(cl, ctx, name, abs, onEvent)
	}, func(b api.Bundle) string {
		return fmt.Sprintf("%s: %s, sha256 %s", b.Path, bytesize.Format(b.Size), b.SHA256)
	})
}
