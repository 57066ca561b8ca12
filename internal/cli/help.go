package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/bytesize"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/paths"
)

// defaultFlags maps, per command, the flags whose defaults depend on config.toml and the host
// to the resolvedDefaults entry their help shows ("[here: 2 (config)]").
var defaultFlags = map[string]map[string]string{
	"vm run":     {"vcpu": "vcpu", "memory": "memory", "disk-size": "disk-size", "image": "image", "kernel": "vm-kernel"},
	"vm create":  {"vcpu": "vcpu", "memory": "memory", "disk-size": "disk-size", "image": "image", "kernel": "vm-kernel"},
	"image pull": {"kernel": "kernel"},
}

// showResolvedDefaults makes `--help` of the commands in defaultFlags resolve those flags'
// defaults for this host and configuration (only when help is asked for: reading config.toml
// and /proc costs nothing then, and nothing on every other run).
func (a *app) showResolvedDefaults(root *cobra.Command) {
	help := root.HelpFunc()
	root.SetHelpFunc(func(c *cobra.Command, args []string) {
		if names, ok := defaultFlags[strings.TrimPrefix(c.CommandPath(), root.Name()+" ")]; ok {
			if here := resolvedDefaults(); here != nil {
				for flag, key := range names {
					if f := c.Flags().Lookup(flag); f != nil && here[key] != "" && !strings.Contains(f.Usage, "[here: ") {
						f.Usage += " [here: " + here[key] + "]"
					}
				}
			}
		}
		help(c, args)
	})
}

// resolvedDefaults resolves the flag defaults for this host and config.toml, or returns nil
// when the configuration cannot be read (the command itself then says why).
func resolvedDefaults() map[string]string {
	l, err := paths.FromEnv()
	if err != nil {
		return nil
	}
	cfg, err := config.Load(l)
	if err != nil {
		return nil
	}
	var hf config.HostFacts
	if f, err := host.Root("/").ReadFacts(); err == nil {
		hf = config.HostFacts{CPUs: f.CPUs, MemoryBytes: f.MemoryBytes}
	}
	out := map[string]string{
		"image":     cfg.DefaultImageName,
		"kernel":    cfg.DefaultKernel,
		"vm-kernel": cfg.DefaultKernel + ", unless the image names its own",
	}
	if spec, err := config.ResolveVMSpec(config.Overrides{}, cfg, hf); err == nil {
		out["vcpu"] = fmt.Sprintf("%d (%s)", spec.VCPU.Value, spec.VCPU.Source)
		out["memory"] = fmt.Sprintf("%s (%s)", bytesize.Format(int64(spec.MemoryMiB.Value)*bytesize.MiB), spec.MemoryMiB.Source)
		out["disk-size"] = fmt.Sprintf("%s (%s)", bytesize.Format(spec.DiskBytes.Value), spec.DiskBytes.Source)
	}
	return out
}
