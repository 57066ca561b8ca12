package config

import (
	"fmt"

	"github.com/banger-dev/banger/internal/bytesize"
)

// Source says where a resolved value came from.
type Source string

// Sources, from strongest to weakest.
const (
	SourceFlag    Source = "flag"    // a command-line flag
	SourceConfig  Source = "config"  // [vm_defaults] in config.toml
	SourceAuto    Source = "auto"    // a heuristic from the host's size
	SourceBuiltin Source = "builtin" // the built-in floor, because the heuristic fell below it
)

// Flag names used in error messages; the CLI must register its flags under these names.
const (
	FlagVCPU   = "--vcpu"
	FlagMemory = "--memory"
	FlagDisk   = "--disk-size"
)

// Heuristic parameters.
const (
	autoVCPUDivisor   = 4
	autoVCPUMax       = 4
	autoMemoryDivisor = 8
	autoMemoryMax     = 8 * bytesize.GiB
	autoDiskBytes     = 8 * bytesize.GiB
)

// Resolved is one resolved VM parameter with its provenance.
type Resolved[T int | int64] struct {
	Value  T      `json:"value"`
	Source Source `json:"source"`
	// Reason explains the value for people, e.g. "host has 2 CPUs; cpus/4 < 1" or "--vcpu".
	Reason string `json:"reason,omitempty"`
}

// describe renders "(source: reason)" or "(source)".
func (r Resolved[T]) describe() string {
	if r.Reason == "" {
		return "(" + string(r.Source) + ")"
	}
	return "(" + string(r.Source) + ": " + r.Reason + ")"
}

// VMSpec is a VM's resolved size. It marshals to JSON for the store's spec column.
type VMSpec struct {
	VCPU      Resolved[int]   `json:"vcpu"`
	MemoryMiB Resolved[int]   `json:"memory_mib"`
	DiskBytes Resolved[int64] `json:"disk_bytes"`
}

// String is the one-line summary printed after "spec:", e.g.
// "vcpu=1 (builtin: host has 2 CPUs; cpus/4 < 1) memory=2.9GiB (auto: host RAM 23.4GiB / 8) disk=8GiB (auto)".
func (s VMSpec) String() string {
	return fmt.Sprintf("vcpu=%d %s memory=%s %s disk=%s %s",
		s.VCPU.Value, s.VCPU.describe(),
		bytesize.Format(int64(s.MemoryMiB.Value)*bytesize.MiB), s.MemoryMiB.describe(),
		bytesize.Format(s.DiskBytes.Value), s.DiskBytes.describe())
}

// Overrides are the VM size flags given on the command line; nil means not given.
type Overrides struct {
	VCPU        *int   // --vcpu
	MemoryBytes *int64 // --memory, in bytes (bytesize.Parse); must be a whole number of MiB
	DiskBytes   *int64 // --disk, in bytes (bytesize.Parse)
}

// HostFacts describe the host for heuristics and limits. A zero field means unknown: the
// heuristic then yields the floor and no host limit is checked.
type HostFacts struct {
	CPUs        int
	MemoryBytes int64
}

// FlagError is a value given by a command-line flag that ResolveVMSpec refused: a usage error,
// where a refused config value is not.
type FlagError struct {
	Flag string // e.g. "--vcpu"
	Err  error
}

func (e *FlagError) Error() string { return e.Err.Error() }
func (e *FlagError) Unwrap() error { return e.Err }

// fromFlag marks err as caused by the flag's value when the value came from the flag.
func fromFlag[T int | int64](r Resolved[T], flag string, err error) error {
	if err != nil && r.Source == SourceFlag {
		return &FlagError{Flag: flag, Err: err}
	}
	return err
}

// ResolveVMSpec sizes a VM. Each parameter comes from, in order: the flag in o, the
// [vm_defaults] value in c, a heuristic from h, or the built-in floor when the heuristic falls
// below it. Explicit values (flag or config) are validated against the floors and the host,
// and errors name where the bad value came from ("--vcpu flag" or
// "vm_defaults.vcpu in /path/config.toml"); a bad flag value is a *FlagError.
func ResolveVMSpec(o Overrides, c Config, h HostFacts) (VMSpec, error) {
	var s VMSpec
	var err error
	if s.VCPU, err = resolveVCPU(o, c, h); err != nil {
		return VMSpec{}, fromFlag(s.VCPU, FlagVCPU, err)
	}
	if s.MemoryMiB, err = resolveMemory(o, c, h); err != nil {
		return VMSpec{}, fromFlag(s.MemoryMiB, FlagMemory, err)
	}
	if s.DiskBytes, err = resolveDisk(o, c); err != nil {
		return VMSpec{}, fromFlag(s.DiskBytes, FlagDisk, err)
	}
	return s, nil
}

// origin names where an explicit value came from, for errors.
func origin(src Source, flag, key string, c Config) string {
	if src == SourceFlag {
		return flag + " flag"
	}
	if c.Path == "" {
		return key + " in the configuration"
	}
	return key + " in " + c.Path
}

func resolveVCPU(o Overrides, c Config, h HostFacts) (Resolved[int], error) {
	var r Resolved[int]
	switch {
	case o.VCPU != nil:
		r = Resolved[int]{*o.VCPU, SourceFlag, FlagVCPU}
	case c.VMDefaults.VCPU != 0:
		r = Resolved[int]{c.VMDefaults.VCPU, SourceConfig, keyVCPU}
	default:
		return autoVCPU(h), nil
	}
	where := origin(r.Source, FlagVCPU, keyVCPU, c)
	if r.Value < MinVCPU {
		return r, fmt.Errorf("%s: %d vCPUs is invalid; use at least %d", where, r.Value, MinVCPU)
	}
	if h.CPUs > 0 && r.Value > h.CPUs {
		return r, fmt.Errorf("%s: %d vCPUs is more than the host's %s; use at most %d", where, r.Value, plural(h.CPUs, "CPU"), h.CPUs)
	}
	return r, nil
}

func autoVCPU(h HostFacts) Resolved[int] {
	if h.CPUs <= 0 {
		return Resolved[int]{MinVCPU, SourceBuiltin, "host CPU count unknown"}
	}
	n := h.CPUs / autoVCPUDivisor
	switch {
	case n < MinVCPU:
		return Resolved[int]{MinVCPU, SourceBuiltin, fmt.Sprintf("host has %s; cpus/%d < %d", plural(h.CPUs, "CPU"), autoVCPUDivisor, MinVCPU)}
	case n > autoVCPUMax:
		return Resolved[int]{autoVCPUMax, SourceAuto, fmt.Sprintf("host has %s; cpus/%d capped at %d", plural(h.CPUs, "CPU"), autoVCPUDivisor, autoVCPUMax)}
	}
	return Resolved[int]{n, SourceAuto, fmt.Sprintf("host has %s; cpus/%d", plural(h.CPUs, "CPU"), autoVCPUDivisor)}
}

func resolveMemory(o Overrides, c Config, h HostFacts) (Resolved[int], error) {
	var bytes int64
	var r Resolved[int]
	switch {
	case o.MemoryBytes != nil:
		bytes = *o.MemoryBytes
		r = Resolved[int]{0, SourceFlag, FlagMemory}
	case c.VMDefaults.MemoryMiB != 0:
		bytes = int64(c.VMDefaults.MemoryMiB) * bytesize.MiB
		r = Resolved[int]{c.VMDefaults.MemoryMiB, SourceConfig, keyMemoryMiB}
	default:
		return autoMemory(h), nil
	}
	where := origin(r.Source, FlagMemory, keyMemoryMiB, c)
	if bytes < MinMemoryMiB*bytesize.MiB {
		return r, fmt.Errorf("%s: %s of memory is below the minimum of %s", where, bytesize.Format(bytes), bytesize.Format(MinMemoryMiB*bytesize.MiB))
	}
	if bytes%bytesize.MiB != 0 {
		return r, fmt.Errorf("%s: %s is not a whole number of MiB; use e.g. %dM", where, bytesize.Format(bytes), bytes/bytesize.MiB)
	}
	if h.MemoryBytes > 0 && bytes > h.MemoryBytes {
		return r, fmt.Errorf("%s: %s of memory is more than the host's %s; use less", where, bytesize.Format(bytes), bytesize.Format(h.MemoryBytes))
	}
	r.Value = int(bytes / bytesize.MiB)
	return r, nil
}

func autoMemory(h HostFacts) Resolved[int] {
	const floor = MinMemoryMiB * bytesize.MiB
	if h.MemoryBytes <= 0 {
		return Resolved[int]{MinMemoryMiB, SourceBuiltin, "host RAM unknown"}
	}
	host := bytesize.Format(h.MemoryBytes)
	b := h.MemoryBytes / autoMemoryDivisor
	switch {
	case b < floor:
		return Resolved[int]{MinMemoryMiB, SourceBuiltin, fmt.Sprintf("host RAM %s / %d < %s", host, autoMemoryDivisor, bytesize.Format(floor))}
	case b > autoMemoryMax:
		return Resolved[int]{int(autoMemoryMax / bytesize.MiB), SourceAuto, fmt.Sprintf("host RAM %s / %d capped at %s", host, autoMemoryDivisor, bytesize.Format(autoMemoryMax))}
	}
	return Resolved[int]{int(b / bytesize.MiB), SourceAuto, fmt.Sprintf("host RAM %s / %d", host, autoMemoryDivisor)}
}

func resolveDisk(o Overrides, c Config) (Resolved[int64], error) {
	var r Resolved[int64]
	switch {
	case o.DiskBytes != nil:
		r = Resolved[int64]{*o.DiskBytes, SourceFlag, FlagDisk}
	case c.VMDefaults.DiskBytes != 0:
		r = Resolved[int64]{c.VMDefaults.DiskBytes, SourceConfig, keyDiskSize}
	default:
		return Resolved[int64]{autoDiskBytes, SourceAuto, ""}, nil
	}
	if r.Value < MinDiskBytes {
		return r, fmt.Errorf("%s: a %s disk is below the minimum of %s", origin(r.Source, FlagDisk, keyDiskSize, c), bytesize.Format(r.Value), bytesize.Format(MinDiskBytes))
	}
	return r, nil
}

// plural renders "1 CPU" or "4 CPUs".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
