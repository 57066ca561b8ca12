package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/termtext"
)

func (a *app) vmLogsCmd() *cobra.Command {
	var follow, vmmLog, journal bool
	c := &cobra.Command{
		Use:   "logs VM",
		Short: "Print a VM's console log, journal or VMM log",
		Long: `Print the guest's serial console log: the kernel's messages and whatever the guest writes to
its console, from the daemon's copy (kept after the VM stops; capped by console_log_size).
systemd and the services log to the guest's journal instead: --journal prints this boot's
journal of a running VM (journalctl in the guest, through its agent). With --vmm, the VMM's
own log. With -f, keep printing what is appended until Ctrl-C. On a terminal, escape
sequences in the guest's output are shown, not run.`,
		Example: `  banger vm logs dev
  banger vm logs -f dev
  banger vm logs --journal -f dev
  banger vm logs --vmm dev`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cl, err := a.connect(ctx)
			if err != nil {
				return err
			}
			if journal && vmmLog {
				return usagef("--journal and --vmm name different logs; give one")
			}
			source := "console"
			if vmmLog {
				source = "vmm"
			}
			// The console is the guest's: on a terminal its escape sequences are shown, not
			// run. Piped or redirected, the bytes stay as they are.
			out := a.stdout
			var tw *termtext.Writer
			if isTerminal(a.stdout) {
				tw = termtext.NewWriter(a.stdout)
				out = tw
			}
			if journal {
				err = a.printJournal(ctx, cl, args[0], follow, out)
			} else {
				err = cl.Logs(ctx, args[0], source, follow, out)
			}
			if tw != nil {
				err = errors.Join(err, tw.Flush())
			}
			return err
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	c.Flags().BoolVar(&vmmLog, "vmm", false, "the VMM's own log instead of the guest console")
	c.Flags().BoolVar(&journal, "journal", false, "the guest's journal (systemd and services; running VMs) instead of the console")
	return c
}

// printJournal prints a running guest's journal of this boot, following it with follow.
func (a *app) printJournal(ctx context.Context, cl *client.Client, ref string, follow bool, out io.Writer) error {
	argv := []string{"journalctl", "--no-pager", "--boot", "--output=short-precise"}
	if follow {
		argv = append(argv, "--follow")
	}
	var stderr bytes.Buffer
	exit, err := cl.Exec(ctx, ref, api.ExecRequest{Argv: argv}, wireIO(nil, out, &limitedBuffer{b: &stderr, max: 4 << 10}))
	if ctx.Err() != nil {
		return nil // Ctrl-C ends a follow
	}
	if err != nil {
		return err
	}
	if exit.Code != 0 {
		why := strings.TrimSpace(stderr.String())
		if why == "" {
			why = exit.Error
		}
		return fmt.Errorf("journalctl in vm %s failed (exit %d): %s; images without systemd have no journal: use banger vm logs %s for the console", ref, exit.Code, why, ref)
	}
	return nil
}

// limitedBuffer keeps the first max bytes written to it and drops the rest.
type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
