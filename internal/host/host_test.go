package host

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeRoot builds a filesystem tree with the given files (path → content).
func fakeRoot(t *testing.T, files map[string]string) Root {
	t.Helper()
	dir := t.TempDir()
	for p, content := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Root(dir)
}

const cpuinfo = "processor\t: 0\ncpu MHz\t\t: 2599.998\nflags\t\t: fpu %s hypervisor\n"

func TestDetectAccel(t *testing.T) {
	tests := []struct {
		name   string
		files  map[string]string
		want   Accel
		reason string
	}{
		{"no /dev/kvm", map[string]string{"proc/cpuinfo": strings.Replace(cpuinfo, "%s", "vmx", 1)}, TCG, "does not exist"},
		{"kvm_intel", map[string]string{"dev/kvm": "", "sys/module/kvm_intel/": ""}, KVM, "kvm_intel"},
		{"kvm_amd", map[string]string{"dev/kvm": "", "sys/module/kvm_amd/": ""}, KVM, "kvm_amd"},
		{"PVM nested paravirtual", map[string]string{"dev/kvm": "", "sys/module/kvm_pvm/": "", "proc/cpuinfo": strings.Replace(cpuinfo, "%s", "avx", 1)}, TCG, "PVM"},
		{"no module info but vmx", map[string]string{"dev/kvm": "", "proc/cpuinfo": strings.Replace(cpuinfo, "%s", "vmx", 1)}, KVM, "vmx/svm"},
		{"no module info and no vmx", map[string]string{"dev/kvm": "", "proc/cpuinfo": strings.Replace(cpuinfo, "%s", "avx", 1)}, TCG, "no hardware virtualization"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := fakeRoot(t, tc.files).DetectAccel()
			if got.Accel != tc.want || !strings.Contains(got.Reason, tc.reason) {
				t.Errorf("DetectAccel = %+v, want %s with a reason mentioning %q", got, tc.want, tc.reason)
			}
		})
	}
}

func TestFactsAndTSC(t *testing.T) {
	r := fakeRoot(t, map[string]string{
		"proc/meminfo": "MemTotal:       24576000 kB\nMemFree: 1 kB\n",
		"proc/cpuinfo": strings.Replace(cpuinfo, "%s", "avx", 1),
	})
	f, err := r.ReadFacts()
	if err != nil {
		t.Fatal(err)
	}
	if f.MemoryBytes != 24576000*1024 || f.CPUs < 1 {
		t.Errorf("facts = %+v", f)
	}
	if got := r.TSCkHz(); got != 2599998 {
		t.Errorf("TSCkHz = %d, want 2599998", got)
	}
	if got := fakeRoot(t, nil).TSCkHz(); got != 0 {
		t.Errorf("TSCkHz without cpuinfo = %d, want 0", got)
	}
	if _, err := fakeRoot(t, nil).ReadFacts(); err == nil {
		t.Error("ReadFacts without /proc/meminfo should fail")
	}
}
