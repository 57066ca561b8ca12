package vmm

import (
	"strings"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/host"
)

// Choice is the VMM that runs new VMs, and why.
type Choice struct {
	Driver string     // "firecracker" or "qemu"
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
	// Firecracker describes a usable Firecracker binary ("firecracker 1.14.2 at /usr/bin/
	// firecracker"); FirecrackerErr says why there is none (not found, unsupported version,
	// driver not built in). Exactly one of them is set.
	Firecracker    string
	FirecrackerErr error
}

// Choose decides which VMM runs new VMs for the configured vmm key (configPath names the
// file in errors). "auto" picks Firecracker when a supported binary is found and KVM runs
// real guests, QEMU otherwise with a notice saying why; "firecracker" fails (failure.Invalid)
// with what to do when it cannot work. It is a pure function of its inputs so that the daemon
// (vmservice) and `banger doctor` make the same decision and give the same reason.
func Choose(want config.VMM, configPath string, f Facts) (Choice, error) {
	kvm := f.Accel.Accel == host.KVM
	switch want {
	case config.VMMQEMU:
		c := Choice{Driver: "qemu", Accel: f.Accel.Accel, Reason: `vmm = "qemu" in ` + configPath}
		if !kvm {
			c.Reason = "using QEMU software emulation (TCG), so boots take seconds: " + f.Accel.Reason
			c.Notice = true
		}
		return c, nil
	case config.VMMFirecracker:
		var problems []string
		if f.FirecrackerErr != nil {
			problems = append(problems, f.FirecrackerErr.Error())
		}
		if !kvm {
			problems = append(problems, "Firecracker needs KVM that runs real guests and here "+f.Accel.Reason+"; use a host with hardware virtualization (vmx/svm)")
		}
		if len(problems) > 0 {
			return Choice{}, failure.New(failure.Invalid, "vmm = \"firecracker\" in %s, but %s; or set vmm = \"auto\" (or \"qemu\") to use QEMU", configPath, strings.Join(problems, "; and "))
		}
		return Choice{Driver: "firecracker", Accel: host.KVM, Reason: `vmm = "firecracker" in ` + configPath + ": " + f.Firecracker}, nil
	}
	// auto
	switch {
	case kvm && f.FirecrackerErr == nil:
		return Choice{Driver: "firecracker", Accel: host.KVM, Reason: f.Firecracker + ", and KVM runs real guests"}, nil
	case kvm:
		return Choice{Driver: "qemu", Accel: host.KVM, Notice: true,
			Reason: "using QEMU with KVM, not Firecracker: " + f.FirecrackerErr.Error()}, nil
	default:
		reason := "using QEMU software emulation (TCG), so boots take seconds: " + f.Accel.Reason
		if f.FirecrackerErr == nil {
			reason += " (" + f.Firecracker + " is installed but needs that)"
		}
		return Choice{Driver: "qemu", Accel: host.TCG, Notice: true, Reason: reason}, nil
	}
}
