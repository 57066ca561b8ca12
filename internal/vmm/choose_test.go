package vmm

import (
	"errors"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/host"
)

// TestChoose covers the choice of VMM with fake host facts: every configured vmm value
// against hardware KVM or not, and a usable Firecracker or not.
func TestChoose(t *testing.T) {
	kvm := host.AccelChoice{Accel: host.KVM, Reason: "/dev/kvm is usable and backed by kvm_intel (hardware virtualization)"}
	pvm := host.AccelChoice{Accel: host.TCG, Reason: "/dev/kvm is provided by PVM (nested paravirtual KVM), which cannot run stock guest kernels"}
	fc := "firecracker 1.14.2 at /usr/local/bin/firecracker"
	noFC := errors.New("no firecracker binary in $PATH; get a release …")
	oldFC := errors.New("/opt/fc/firecracker: firecracker 1.7.0 is too old: banger needs 1.8 or newer")
	qemu := Probe{Driver: "qemu", Title: "QEMU", Found: "qemu at /usr/bin/qemu-system-x86_64"}
	// facts are the daemon's drivers in its order of preference: Firecracker, then QEMU.
	facts := func(accel host.AccelChoice, fcFound string, fcErr error) Facts {
		return Facts{Accel: accel, Drivers: []Probe{{Driver: "firecracker", Title: "Firecracker", NeedsKVM: true, Found: fcFound, Err: fcErr}, qemu}}
	}
	const path = "/home/u/.config/banger/config.toml"
	tests := []struct {
		name      string
		want      config.VMM
		facts     Facts
		driver    string
		accel     host.Accel
		notice    bool
		reasonHas []string
		errHas    []string
	}{
		{"auto, KVM and firecracker", config.VMMAuto, facts(kvm, fc, nil), "firecracker", host.KVM, false, []string{fc, "KVM runs real guests"}, nil},
		{"auto, KVM without firecracker", config.VMMAuto, facts(kvm, "", noFC), "qemu", host.KVM, true, []string{"using QEMU with KVM, not Firecracker", "no firecracker binary"}, nil},
		{"auto, KVM with an old firecracker", config.VMMAuto, facts(kvm, "", oldFC), "qemu", host.KVM, true, []string{"1.7.0 is too old"}, nil},
		{"auto, PVM with firecracker", config.VMMAuto, facts(pvm, fc, nil), "qemu", host.TCG, true, []string{"using QEMU software emulation (TCG)", "PVM", fc + " is installed"}, nil},
		{"auto, no KVM, no firecracker", config.VMMAuto, facts(pvm, "", noFC), "qemu", host.TCG, true, []string{"using QEMU software emulation (TCG)"}, nil},
		{"qemu with KVM", config.VMMQEMU, facts(kvm, fc, nil), "qemu", host.KVM, false, []string{`vmm = "qemu"`}, nil},
		{"qemu without KVM", config.VMMQEMU, facts(pvm, fc, nil), "qemu", host.TCG, true, []string{"TCG"}, nil},
		{"firecracker works", config.VMMFirecracker, facts(kvm, fc, nil), "firecracker", host.KVM, false, []string{fc}, nil},
		{"firecracker missing", config.VMMFirecracker, facts(kvm, "", noFC), "", "", false, nil, []string{`vmm = "firecracker" in ` + path, "no firecracker binary", `vmm = "auto"`}},
		{"firecracker too old", config.VMMFirecracker, facts(kvm, "", oldFC), "", "", false, nil, []string{"too old"}},
		{"firecracker too old and no KVM", config.VMMFirecracker, facts(pvm, "", oldFC), "", "", false, nil, []string{"too old", "; and Firecracker needs KVM", "PVM"}},
		{"firecracker without KVM", config.VMMFirecracker, facts(pvm, fc, nil), "", "", false, nil, []string{"needs KVM", "PVM", "vmx/svm", `"qemu"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Choose(tc.want, path, tc.facts)
			if tc.errHas != nil {
				if err == nil {
					t.Fatalf("Choose = %+v; want an error", c)
				}
				if !errors.Is(err, failure.Invalid) {
					t.Errorf("error %v is not classified Invalid (a configuration problem)", err)
				}
				for _, s := range tc.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not mention %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Choose: %v", err)
			}
			if c.Driver != tc.driver || c.Accel != tc.accel || c.Notice != tc.notice {
				t.Errorf("choice = %+v; want driver %s accel %s notice %v", c, tc.driver, tc.accel, tc.notice)
			}
			if strings.Contains(c.Reason, "\n") {
				t.Errorf("reason %q is more than one line", c.Reason)
			}
			for _, s := range tc.reasonHas {
				if !strings.Contains(c.Reason, s) {
					t.Errorf("reason %q does not mention %q", c.Reason, s)
				}
			}
		})
	}
}

// TestChooseDecidesOnProbesInOrder: the choice knows no driver by name; it takes the drivers'
// probes in order of preference, and says why none can run when none can.
func TestChooseDecidesOnProbesInOrder(t *testing.T) {
	kvm := host.AccelChoice{Accel: host.KVM, Reason: "KVM works"}
	tcg := host.AccelChoice{Accel: host.TCG, Reason: "no /dev/kvm"}
	fake := Probe{Driver: "fake", Title: "fake VMM", Found: "the fake"}
	noQEMU := Probe{Driver: "qemu", Title: "QEMU", Err: errors.New("qemu-system-x86_64 not found; install it")}
	fc := Probe{Driver: "firecracker", Title: "Firecracker", NeedsKVM: true, Found: "firecracker 1.14.2 at /fc"}
	const path = "/c.toml"

	if c, err := Choose(config.VMMAuto, path, Facts{Accel: kvm, Drivers: []Probe{fake, fc}}); err != nil || c.Driver != "fake" || c.Notice || c.Reason != "the fake, and KVM runs real guests" {
		t.Errorf("auto, fake first = %+v, %v; want the fake, no notice", c, err)
	}
	if c, err := Choose(config.VMMAuto, path, Facts{Accel: kvm, Drivers: []Probe{noQEMU, fake}}); err != nil || c.Driver != "fake" || !c.Notice || !strings.Contains(c.Reason, "not QEMU: qemu-system-x86_64 not found") {
		t.Errorf("auto, QEMU missing = %+v, %v; want the fake with a notice naming QEMU's problem", c, err)
	}
	_, err := Choose(config.VMMAuto, path, Facts{Accel: tcg, Drivers: []Probe{fc, noQEMU}})
	if err == nil || !errors.Is(err, failure.Invalid) {
		t.Fatalf("auto, nothing can run = %v; want an Invalid error", err)
	}
	for _, s := range []string{"no VMM can run VMs here", "Firecracker: Firecracker needs KVM", "no /dev/kvm", "QEMU: qemu-system-x86_64 not found; install it"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	_, err = Choose(config.VMMQEMU, path, Facts{Accel: kvm, Drivers: []Probe{fc, noQEMU}})
	if err == nil || !strings.Contains(err.Error(), `vmm = "qemu" in /c.toml, but qemu-system-x86_64 not found; install it; or set vmm = "auto" (or "firecracker") to use Firecracker`) {
		t.Errorf(`vmm = "qemu" without QEMU = %v`, err)
	}
	_, err = Choose(config.VMMFirecracker, path, Facts{Accel: kvm, Drivers: []Probe{fake}})
	if err == nil || !errors.Is(err, failure.Invalid) || !strings.Contains(err.Error(), "this build of banger has no firecracker driver") {
		t.Errorf(`vmm = "firecracker" without the driver = %v`, err)
	}
}
