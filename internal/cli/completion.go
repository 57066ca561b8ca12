package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/paths"
)

// completionTimeout bounds every question completion asks the daemon: a TAB must never hang.
const completionTimeout = 1500 * time.Millisecond

func (a *app) completionCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print the shell completion script for bash, zsh, fish or PowerShell",
		Long: `Print a script that makes your shell complete banger's commands and flags, and the names of
your VMs, images, kernels and snapshots (asked of the running daemon; when it is not running, names are
simply not offered, and completing never starts it). Each shell's subcommand says where to put
its script.`,
		Example: `  banger completion bash > /etc/bash_completion.d/banger
  mkdir -p ~/.zfunc && banger completion zsh > ~/.zfunc/_banger
  banger completion fish > ~/.config/fish/completions/banger.fish`,
	}
	shells := []struct {
		name, short, long, example string
		gen                        func(root *cobra.Command, a *app) error
	}{
		{"bash", "Print the bash completion script",
			`Print the bash completion script. It uses the bash-completion package when it is loaded
(Debian: apt-get install bash-completion) and works without it too (bash --norc). Install it for
every user in /etc/bash_completion.d/banger, or for yourself in
~/.local/share/bash-completion/completions/banger; new shells pick it up. To try it in the
current shell only: source <(banger completion bash).`,
			`  banger completion bash > /etc/bash_completion.d/banger
  banger completion bash > ~/.local/share/bash-completion/completions/banger
  source <(banger completion bash)`,
			func(root *cobra.Command, a *app) error { return genBash(root, a.stdout) }},
		{"zsh", "Print the zsh completion script",
			`Print the zsh completion script. Put it in a directory of your $fpath as _banger, e.g.
~/.zfunc/_banger, and make sure ~/.zshrc has, before compinit runs:

    fpath=(~/.zfunc $fpath)
    autoload -U compinit && compinit

then start a new shell (with oh-my-zsh or another framework, use its completions directory
instead). To try it in the current shell only: source <(banger completion zsh).`,
			`  mkdir -p ~/.zfunc && banger completion zsh > ~/.zfunc/_banger
  source <(banger completion zsh)`,
			func(root *cobra.Command, a *app) error { return root.GenZshCompletion(a.stdout) }},
		{"fish", "Print the fish completion script",
			`Print the fish completion script. Save it as ~/.config/fish/completions/banger.fish; fish loads
it the next time you complete banger. To try it in the current shell only:
banger completion fish | source.`,
			`  banger completion fish > ~/.config/fish/completions/banger.fish
  banger completion fish | source`,
			func(root *cobra.Command, a *app) error { return root.GenFishCompletion(a.stdout, true) }},
		{"powershell", "Print the PowerShell completion script",
			`Print the PowerShell completion script. Load it in the current session with
banger completion powershell | Out-String | Invoke-Expression, and add that line to your
PowerShell profile ($PROFILE) to load it in every session.`,
			`  banger completion powershell | Out-String | Invoke-Expression
  banger completion powershell >> $PROFILE`,
			func(root *cobra.Command, a *app) error {
				return root.GenPowerShellCompletionWithDesc(a.stdout)
			}},
	}
	for _, sh := range shells {
		sh := sh
		c.AddCommand(&cobra.Command{
			Use:                   sh.name,
			Short:                 sh.short,
			Long:                  sh.long,
			Example:               sh.example,
			Args:                  cobra.NoArgs,
			DisableFlagsInUseLine: true,
			ValidArgsFunction:     cobra.NoFileCompletions,
			RunE:                  func(c *cobra.Command, args []string) error { return sh.gen(c.Root(), a) },
		})
	}
	return c
}

// What a command's arguments (or a flag's value) are, for completion.
type nameKind int

const (
	noNames            nameKind = iota // nothing to offer, and no file names either
	vmNames                            // VMs
	imageNames                         // installed images
	kernelNames                        // installed kernels
	anyImageNames                      // installed images and what the catalogs offer
	anyKernelNames                     // installed kernels and what the catalogs offer
	catalogImageNames                  // what the image catalogs offer (and installed images)
	catalogKernelNames                 // what the kernel catalogs offer (and installed kernels)
	snapshotNames                      // snapshots, boot and user
)

// argCompletion says how to complete a command's positional arguments.
type argCompletion struct {
	kind nameKind
	// many: every argument is one (VM...); otherwise only the first is.
	many bool
	// states keeps only VMs in these states (nil: all).
	states []string
}

var (
	running = []string{"running"}
	stopped = []string{"created", "stopped", "error"}
	// startable VMs: vm start boots stopped ones and resumes suspended ones.
	startable = []string{"created", "stopped", "error", "suspended"}
	suspended = []string{"suspended"}
)

// argCompletions maps command paths (without "banger ") to how their arguments complete.
// Commands missing here and taking files (image import FILE, vm run PATH) keep the shell's
// file name completion. TestCompletionCoversNameCommands checks that every command whose
// usage takes a VM or NAME is here.
var argCompletions = map[string]argCompletion{
	"vm start":     {kind: vmNames, many: true, states: startable},
	"vm stop":      {kind: vmNames, many: true, states: []string{"running", "suspended"}},
	"vm suspend":   {kind: vmNames, many: true, states: running},
	"vm resume":    {kind: vmNames, many: true, states: suspended},
	"vm restart":   {kind: vmNames, many: true, states: running},
	"vm kill":      {kind: vmNames, many: true, states: running},
	"vm delete":    {kind: vmNames, many: true},
	"vm show":      {kind: vmNames},
	"vm logs":      {kind: vmNames},
	"vm exec":      {kind: vmNames, states: running},
	"vm ssh":       {kind: vmNames, states: running},
	"vm ssh-proxy": {kind: vmNames, states: running},
	"vm ports":     {kind: vmNames, states: running},
	"vm forward":   {kind: vmNames, states: running},
	"vm set":       {kind: vmNames, states: stopped},
	"vm watch":     {kind: vmNames},
	"vm snapshot":  {kind: vmNames, states: running},
	"vm fork":      {kind: vmNames, states: running},

	"vm workspace export": {kind: vmNames},

	"image show":   {kind: imageNames},
	"image export": {kind: imageNames},
	"image delete": {kind: imageNames, many: true},
	"image build":  {kind: catalogImageNames},
	"image pull":   {kind: catalogImageNames},

	"kernel show":   {kind: kernelNames},
	"kernel export": {kind: kernelNames},
	"kernel rm":     {kind: kernelNames, many: true},
	"kernel pull":   {kind: catalogKernelNames},
	"kernel import": {kind: noNames},

	"snapshot rm": {kind: snapshotNames, many: true},

	// Commands without positional arguments: offer nothing rather than file names.
	"vm list": {}, "ps": {}, "vm create": {}, "vm prune": {},
	"image list": {}, "image register": {}, "image cache prune": {},
	"kernel list": {}, "snapshot list": {}, "daemon status": {}, "daemon stop": {},
	"system teardown": {}, "ssh-config": {}, "doctor": {},
}

// flagCompletions maps flag names to what their values are, on every command that has them.
var flagCompletions = map[string]nameKind{
	"image":         anyImageNames,
	"kernel":        anyKernelNames,
	"from-snapshot": snapshotNames,
}

// fileFlags take host paths: the shell's file name completion stays for them.
var fileFlags = map[string]bool{"output": true, "rootfs": true, "vmlinux": true, "initrd": true, "modules": true}

// registerCompletions gives every command its argument completion and every flag that takes
// a value its value completion (names from the daemon, signal names, or nothing), so that a
// TAB never offers file names where none belong.
func (a *app) registerCompletions(root *cobra.Command) {
	eachCommand(root, func(c *cobra.Command) {
		path := strings.TrimPrefix(c.CommandPath(), root.Name()+" ")
		if ac, ok := argCompletions[path]; ok && c.ValidArgsFunction == nil {
			ac := ac
			c.ValidArgsFunction = func(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
				// Only the first argument is a name unless every one is: past it come guest
				// commands (vm exec VM -- CMD) and ports. (ArgsLenAtDash cannot tell here:
				// cobra's completion parses the flags with an extra "--".)
				if (!ac.many && len(args) > 0) || ac.kind == noNames {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				return completeNames(c.Context(), ac.kind, ac.states, args, toComplete)
			}
		}
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Value.Type() == "bool" || fileFlags[f.Name] {
				return
			}
			if _, has := c.GetFlagCompletionFunc(f.Name); has {
				return
			}
			var fn cobra.CompletionFunc
			switch {
			case f.Name == "signal":
				fn = cobra.FixedCompletions([]string{"KILL", "TERM", "INT", "HUP", "QUIT", "USR1", "USR2"}, cobra.ShellCompDirectiveNoFileComp)
			case flagCompletions[f.Name] != noNames:
				kind := flagCompletions[f.Name]
				fn = func(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
					return completeNames(c.Context(), kind, nil, nil, toComplete)
				}
			default:
				fn = cobra.NoFileCompletions
			}
			_ = c.RegisterFlagCompletionFunc(f.Name, fn)
		})
	})
}

// completionClient is a client of the running daemon for completion: it never starts one.
func completionClient() (*client.Client, bool) {
	l, err := paths.FromEnv()
	if err != nil || paths.CheckSocketPath(l.Socket) != nil {
		return nil, false
	}
	return client.New(l.Socket), true
}

// completeNames asks the daemon for names of kind (VMs in states, when given) that start with
// toComplete and are not among given. Without a daemon it offers nothing, quickly.
func completeNames(parent context.Context, kind nameKind, states, given []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	const none = cobra.ShellCompDirectiveNoFileComp
	cl, ok := completionClient()
	if !ok {
		return nil, none
	}
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithTimeout(parent, completionTimeout)
	defer cancel()
	seen := map[string]bool{}
	for _, g := range given {
		seen[g] = true
	}
	var out []string
	add := func(name, desc string) {
		if seen[name] || !strings.HasPrefix(name, toComplete) {
			return
		}
		seen[name] = true
		if desc != "" {
			name += "\t" + desc
		}
		out = append(out, name)
	}
	switch kind {
	case vmNames:
		vms, err := cl.ListVMs(ctx)
		if err != nil {
			return nil, none
		}
		for _, vm := range vms {
			if states == nil || contains(states, vm.State) {
				add(vm.Name, vm.State+", "+vm.Image)
			}
		}
	case imageNames, anyImageNames, catalogImageNames:
		if imgs, err := cl.ListImages(ctx); err == nil {
			for _, img := range imgs {
				add(img.Name, "installed")
			}
		} else if kind != catalogImageNames {
			return nil, none
		}
		if kind != imageNames {
			if cat, err := cl.Catalog(ctx); err == nil {
				addCatalog(cat.Images, add)
			}
		}
	case kernelNames, anyKernelNames, catalogKernelNames:
		if ks, err := cl.ListKernels(ctx); err == nil {
			for _, k := range ks {
				add(k.Name, "installed, "+k.Release)
			}
		} else if kind != catalogKernelNames {
			return nil, none
		}
		if kind != kernelNames {
			if cat, err := cl.Catalog(ctx); err == nil {
				addCatalog(cat.Kernels, add)
			}
		}
	case snapshotNames:
		list, err := cl.ListSnapshots(ctx)
		if err != nil {
			return nil, none
		}
		for _, snap := range list {
			desc := snap.Kind + ", " + snap.Image
			if snap.From != "" {
				desc = snap.Kind + ", of " + snap.From + ", " + snap.Image
			}
			add(snap.Name, desc)
		}
	}
	sort.Strings(out)
	return out, none
}

func addCatalog(entries []api.CatalogEntry, add func(name, desc string)) {
	for _, e := range entries {
		add(e.Name, e.Kind+": "+e.Origin)
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// eachCommand calls fn for c and every command below it.
func eachCommand(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, sub := range c.Commands() {
		eachCommand(sub, fn)
	}
}

// bashShims stand in for the bash-completion package's _get_comp_words_by_ref and _filedir,
// which cobra's script calls: without the package (a plain bash, a minimal image) every TAB
// printed "command not found". With the package loaded, its functions are used.
const bashShims = `
# banger: fallbacks for when the bash-completion package is not loaded.
__banger_comp_words()
{
    if declare -F _get_comp_words_by_ref >/dev/null 2>&1; then
        _get_comp_words_by_ref "$@" cur prev words cword
        return
    fi
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
}

__banger_filedir()
{
    if declare -F _filedir >/dev/null 2>&1; then
        _filedir "$@"
        return
    fi
    local IFS=$'\n'
    if [[ $1 == -d ]]; then
        COMPREPLY+=($(compgen -d -- "$cur"))
    else
        COMPREPLY+=($(compgen -f -- "$cur"))
    fi
}
`

// genBash writes cobra's bash completion script with its calls into the bash-completion
// package routed through bashShims.
func genBash(root *cobra.Command, w io.Writer) error {
	var b bytes.Buffer
	if err := root.GenBashCompletionV2(&b, true); err != nil {
		return err
	}
	script := b.String()
	const words = `_get_comp_words_by_ref "$@" cur prev words cword`
	if !strings.Contains(script, words) || !strings.Contains(script, "_filedir") {
		return errors.New("bash completion: cobra's script no longer has the calls banger routes through its fallbacks; update genBash")
	}
	script = strings.ReplaceAll(script, words, `__banger_comp_words "$@"`)
	script = regexp.MustCompile(`\b_filedir\b`).ReplaceAllString(script, "__banger_filedir")
	_, err := io.WriteString(w, script+bashShims)
	return err
}
