// Package host reads facts about the machine banger runs on: CPUs, memory, and whether KVM can
// run real guests here or only software emulation (TCG) can.
package host

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// Accel is how guests are executed.
type Accel string

const (
	KVM Accel = "kvm" // hardware virtualization
	TCG Accel = "tcg" // QEMU's software emulation
)

// Facts are the host's resources.
type Facts struct {
	CPUs        int
	MemoryBytes int64
}

// Root is the filesystem root the probes read from; tests point it at a fake tree.
type Root string

// ReadFacts returns CPUs and total memory.
func (r Root) ReadFacts() (Facts, error) {
	f := Facts{CPUs: runtime.NumCPU()}
	mem, err := r.memTotal()
	if err != nil {
		return f, err
	}
	f.MemoryBytes = mem
	return f, nil
}

func (r Root) path(p string) string { return filepath.Join(string(r), p) }

func (r Root) memTotal() (int64, error) {
	file, err := os.Open(r.path("/proc/meminfo"))
	if err != nil {
		return 0, fmt.Errorf("read host memory: %w", err)
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse MemTotal in /proc/meminfo: %w", err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no MemTotal in /proc/meminfo")
}

// AccelChoice is the detected accelerator and why.
type AccelChoice struct {
	Accel  Accel
	Reason string
}

// DetectAccel decides whether KVM runs real guests here. It needs /dev/kvm usable by this
// user and a hardware-virtualization KVM module (kvm_intel or kvm_amd) or, failing module
// information, the vmx/svm CPU flag. A KVM provided by the PVM paravirtual hypervisor
// (module kvm_pvm, no vmx/svm flag) cannot run stock kernels, so it means TCG.
func (r Root) DetectAccel() AccelChoice {
	dev := r.path("/dev/kvm")
	if _, err := os.Stat(dev); err != nil {
		return AccelChoice{TCG, "/dev/kvm does not exist (no KVM module loaded, or no hardware virtualization)"}
	}
	if f, err := os.OpenFile(dev, os.O_RDWR, 0); err != nil {
		return AccelChoice{TCG, fmt.Sprintf("/dev/kvm is not usable by this user (%v); add the user to the kvm group", err)}
	} else {
		f.Close()
	}
	has := func(m string) bool {
		_, err := os.Stat(r.path("/sys/module/" + m))
		return err == nil
	}
	switch {
	case has("kvm_intel"):
		return AccelChoice{KVM, "/dev/kvm is usable and backed by kvm_intel (hardware virtualization)"}
	case has("kvm_amd"):
		return AccelChoice{KVM, "/dev/kvm is usable and backed by kvm_amd (hardware virtualization)"}
	case has("kvm_pvm"):
		return AccelChoice{TCG, "/dev/kvm is provided by PVM (nested paravirtual KVM), which cannot run stock guest kernels"}
	}
	flags := r.cpuFlags()
	if flags["vmx"] || flags["svm"] {
		return AccelChoice{KVM, "/dev/kvm is usable and the CPU has hardware virtualization (vmx/svm)"}
	}
	return AccelChoice{TCG, "/dev/kvm exists but the CPU shows no hardware virtualization (vmx/svm)"}
}

func (r Root) cpuFlags() map[string]bool {
	flags := map[string]bool{}
	b, err := os.ReadFile(r.path("/proc/cpuinfo"))
	if err != nil {
		return flags
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "flags" {
			for _, f := range strings.Fields(v) {
				flags[f] = true
			}
			break
		}
	}
	return flags
}

// TSCkHz is the host's TSC frequency in kHz as the kernel reports it ("cpu MHz" of the first
// processor), or 0 when unknown. Guests under TCG are told it (tsc_early_khz=) so that they
// do not hang calibrating the TSC on a busy host.
func (r Root) TSCkHz() int {
	b, err := os.ReadFile(r.path("/proc/cpuinfo"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || mhz <= 0 {
				return 0
			}
			return int(mhz*1000 + 0.5)
		}
	}
	return 0
}
