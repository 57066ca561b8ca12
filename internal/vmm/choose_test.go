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
		{"auto, KVM and firecracker", config.VMMAuto, Facts{Accel: kvm, Firecracker: fc}, "firecracker", host.KVM, false, []string{fc, "KVM runs real guests"}, nil},
		{"auto, KVM without firecracker", config.VMMAuto, Facts{Accel: kvm, FirecrackerErr: noFC}, "qemu", host.KVM, true, []string{"using QEMU with KVM, not Firecracker", "no firecracker binary"}, nil},
		{"auto, KVM with an old firecracker", config.VMMAuto, Facts{Accel: kvm, FirecrackerErr: oldFC}, "qemu", host.KVM, true, []string{"1.7.0 is too old"}, nil},
		{"auto, PVM with firecracker", config.VMMAuto, Facts{Accel: pvm, Firecracker: fc}, "qemu", host.TCG, true, []string{"using QEMU software emulation (TCG)", "PVM", fc + " is installed"}, nil},
		{"auto, no KVM, no firecracker", config.VMMAuto, Facts{Accel: pvm, FirecrackerErr: noFC}, "qemu", host.TCG, true, []string{"using QEMU software emulation (TCG)"}, nil},
		{"qemu with KVM", config.VMMQEMU, Facts{Accel: kvm, Firecracker: fc}, "qemu", host.KVM, false, []string{`vmm = "qemu"`}, nil},
		{"qemu without KVM", config.VMMQEMU, Facts{Accel: pvm, Firecracker: fc}, "qemu", host.TCG, true, []string{"TCG"}, nil},
		{"firecracker works", config.VMMFirecracker, Facts{Accel: kvm, Firecracker: fc}, "firecracker", host.KVM, false, []string{fc}, nil},
		{"firecracker missing", config.VMMFirecracker, Facts{Accel: kvm, FirecrackerErr: noFC}, "", "", false, nil, []string{`vmm = "firecracker" in ` + path, "no firecracker binary", `vmm = "auto"`}},
		{"firecracker too old", config.VMMFirecracker, Facts{Accel: kvm, FirecrackerErr: oldFC}, "", "", false, nil, []string{"too old"}},
		{"firecracker too old and no KVM", config.VMMFirecracker, Facts{Accel: pvm, FirecrackerErr: oldFC}, "", "", false, nil, []string{"too old", "; and Firecracker needs KVM", "PVM"}},
		{"firecracker without KVM", config.VMMFirecracker, Facts{Accel: pvm, Firecracker: fc}, "", "", false, nil, []string{"needs KVM", "PVM", "vmx/svm", `"qemu"`}},
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
