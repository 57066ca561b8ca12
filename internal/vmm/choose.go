package vmm

import (
	"strings"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/host"
)

// Choice is the VMM that runs new VMs, and why.
type Choice struct {
	Driver string     // the chosen driver's name ("firecracker", "qemu")
	Accel  host.Accel // how guests execute
	// Reason is one line saying why. When Notice is set it explains a fallback (or software
	// emulation) that users should be told about.
	Reason string
	Notice bool
}

// Facts are what the choice of VMM depends on.
type Facts struct {
	// Accel says whether KVM runs real guests here (host.Root.DetectAccel).
	Accel host.AccelChoice
	// Drivers are the drivers' probes (Driver.Probe), in order of preference: with vmm =
	// "auto" the first one that can run wins.
	Drivers []Probe
}

// Choose decides which VMM runs new VMs for the configured vmm key (configPath names the
// file in errors). "auto" picks the first driver in f.Drivers whose probe found it usable
// and whose guests can run here (a driver that needs KVM is skipped without it), with a notice
// saying why when that is not the first one or guests run under software emulation. A named
// VMM fails (failure.Invalid) with what to do when it cannot work. It is a pure function of
// its inputs so that the daemon (vmservice) and `banger doctor` make the same decision and give
// the same reason.
func Choose(want config.VMM, configPath string, f Facts) (Choice, error) {
	kvm := f.Accel.Accel == host.KVM
	if want != config.VMMAuto {
		return chooseNamed(string(want), configPath, f, kvm)
	}
	var skipped []Probe
	for _, p := range f.Drivers {
		if p.Err != nil || (p.NeedsKVM && !kvm) {
			skipped = append(skipped, p)
			continue
		}
		c := Choice{Driver: p.Driver, Accel: f.Accel.Accel}
		switch {
		case !kvm:
			c.Reason, c.Notice = softwareEmulation(p, f.Accel), true
			for _, s := range skipped {
				if s.Err == nil {
					c.Reason += " (" + s.Found + " is installed but needs that)"
				}
			}
		case len(skipped) > 0:
			var titles, why []string
			for _, s := range skipped {
				titles = append(titles, s.Title)
				why = append(why, s.Err.Error())
			}
			c.Reason = "using " + p.Title + " with KVM, not " + strings.Join(titles, " or ") + ": " + strings.Join(why, "; ")
			c.Notice = true
		default:
			c.Reason = p.Found + ", and KVM runs real guests"
		}
		return c, nil
	}
	var why []string
	for _, p := range f.Drivers {
		why = append(why, p.Title+": "+strings.Join(p.problems(f.Accel, kvm), "; and "))
	}
	if len(why) == 0 {
		why = append(why, "this build of banger has no VMM driver")
	}
	return Choice{}, failure.New(failure.Invalid, "no VMM can run VMs here: %s", strings.Join(why, "; "))
}

// chooseNamed is Choose for vmm = want.
func chooseNamed(want, configPath string, f Facts, kvm bool) (Choice, error) {
	setting := `vmm = "` + want + `" in ` + configPath
	var p Probe
	var other *Probe // the first other driver, for the hint
	for i := range f.Drivers {
		switch {
		case f.Drivers[i].Driver == want:
			p = f.Drivers[i]
		case other == nil:
			other = &f.Drivers[i]
		}
	}
	if p.Driver == "" {
		return Choice{}, failure.New(failure.Invalid, "%s, but this build of banger has no %s driver; set vmm = \"auto\"", setting, want)
	}
	if problems := p.problems(f.Accel, kvm); len(problems) > 0 {
		hint := `set vmm = "auto"`
		if other != nil {
			hint += ` (or "` + other.Driver + `") to use ` + other.Title
		}
		return Choice{}, failure.New(failure.Invalid, "%s, but %s; or %s", setting, strings.Join(problems, "; and "), hint)
	}
	c := Choice{Driver: p.Driver, Accel: f.Accel.Accel, Reason: setting}
	switch {
	case !kvm:
		c.Reason, c.Notice = softwareEmulation(p, f.Accel), true
	case p.NeedsKVM:
		// A driver that needs KVM says which binary it found: that is what the user checks.
		c.Reason += ": " + p.Found
	}
	return c, nil
}

// problems says why p cannot run guests here (nil: it can).
func (p Probe) problems(accel host.AccelChoice, kvm bool) []string {
	var out []string
	if p.Err != nil {
		out = append(out, p.Err.Error())
	}
	if p.NeedsKVM && !kvm {
		out = append(out, p.Title+" needs KVM that runs real guests and here "+accel.Reason+"; use a host with hardware virtualization (vmx/svm)")
	}
	return out
}

func softwareEmulation(p Probe, accel host.AccelChoice) string {
	return "using " + p.Title + " software emulation (TCG), so boots take seconds: " + accel.Reason
}
