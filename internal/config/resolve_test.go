package config

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/bytesize"
)

func intp(n int) *int         { return &n }
func i64p(n int64) *int64     { return &n }
func cfg(d VMDefaults) Config { return Config{Path: "/c/config.toml", VMDefaults: d} }

func TestResolveVMSpec(t *testing.T) {
	big := HostFacts{CPUs: 64, MemoryBytes: 128 * bytesize.GiB}
	mid := HostFacts{CPUs: 16, MemoryBytes: 32 * bytesize.GiB}
	tests := []struct {
		name string
		o    Overrides
		c    Config
		h    HostFacts
		want VMSpec
	}{
		{
			name: "heuristics on a mid-size host",
			h:    mid,
			want: VMSpec{
				VCPU:      Resolved[int]{4, SourceAuto, "host has 16 CPUs; cpus/4"},
				MemoryMiB: Resolved[int]{4096, SourceAuto, "host RAM 32GiB / 8"},
				DiskBytes: Resolved[int64]{8 * bytesize.GiB, SourceAuto, ""},
			},
		},
		{
			name: "heuristics between floor and cap",
			h:    HostFacts{CPUs: 8, MemoryBytes: 25125558272}, // 23.4GiB
			want: VMSpec{
				VCPU:      Resolved[int]{2, SourceAuto, "host has 8 CPUs; cpus/4"},
				MemoryMiB: Resolved[int]{2995, SourceAuto, "host RAM 23.4GiB / 8"}, // rounded down to MiB
				DiskBytes: Resolved[int64]{8 * bytesize.GiB, SourceAuto, ""},
			},
		},
		{
			name: "heuristics capped on a big host",
			h:    big,
			want: VMSpec{
				VCPU:      Resolved[int]{4, SourceAuto, "host has 64 CPUs; cpus/4 capped at 4"},
				MemoryMiB: Resolved[int]{8192, SourceAuto, "host RAM 128GiB / 8 capped at 8GiB"},
				DiskBytes: Resolved[int64]{8 * bytesize.GiB, SourceAuto, ""},
			},
		},
		{
			name: "heuristics below the floors give builtin",
			h:    HostFacts{CPUs: 2, MemoryBytes: 2 * bytesize.GiB},
			want: VMSpec{
				VCPU:      Resolved[int]{1, SourceBuiltin, "host has 2 CPUs; cpus/4 < 1"},
				MemoryMiB: Resolved[int]{512, SourceBuiltin, "host RAM 2GiB / 8 < 512MiB"},
				DiskBytes: Resolved[int64]{8 * bytesize.GiB, SourceAuto, ""},
			},
		},
		{
			name: "exactly at the floors is auto",
			h:    HostFacts{CPUs: 4, MemoryBytes: 4 * bytesize.GiB},
			want: VMSpec{
				VCPU:      Resolved[int]{1, SourceAuto, "host has 4 CPUs; cpus/4"},
				MemoryMiB: Resolved[int]{512, SourceAuto, "host RAM 4GiB / 8"},
				DiskBytes: Resolved[int64]{8 * bytesize.GiB, SourceAuto, ""},
			},
		},
		{
			name: "single-CPU host",
			h:    HostFacts{CPUs: 1, MemoryBytes: 8 * bytesize.GiB},
			want: VMSpec{
				VCPU:      Resolved[int]{1, SourceBuiltin, "host has 1 CPU; cpus/4 < 1"},
				MemoryMiB: Resolved[int]{1024, SourceAuto, "host RAM 8GiB / 8"},
				DiskBytes: Resolved[int64]{8 * bytesize.GiB, SourceAuto, ""},
			},
		},
		{
			name: "unknown host gives builtin floors",
			h:    HostFacts{},
			want: VMSpec{
				VCPU:      Resolved[int]{1, SourceBuiltin, "host CPU count unknown"},
				MemoryMiB: Resolved[int]{512, SourceBuiltin, "host RAM unknown"},
				DiskBytes: Resolved[int64]{8 * bytesize.GiB, SourceAuto, ""},
			},
		},
		{
			name: "config beats heuristics",
			c:    cfg(VMDefaults{VCPU: 8, MemoryMiB: 1024, DiskBytes: 20 * bytesize.GiB}),
			h:    mid,
			want: VMSpec{
				VCPU:      Resolved[int]{8, SourceConfig, "vm_defaults.vcpu"},
				MemoryMiB: Resolved[int]{1024, SourceConfig, "vm_defaults.memory_mib"},
				DiskBytes: Resolved[int64]{20 * bytesize.GiB, SourceConfig, "vm_defaults.disk_size"},
			},
		},
		{
			name: "flags beat config",
			o:    Overrides{VCPU: intp(2), MemoryBytes: i64p(3 * bytesize.GiB), DiskBytes: i64p(50 * bytesize.GiB)},
			c:    cfg(VMDefaults{VCPU: 8, MemoryMiB: 1024, DiskBytes: 20 * bytesize.GiB}),
			h:    mid,
			want: VMSpec{
				VCPU:      Resolved[int]{2, SourceFlag, "--vcpu"},
				MemoryMiB: Resolved[int]{3072, SourceFlag, "--memory"},
				DiskBytes: Resolved[int64]{50 * bytesize.GiB, SourceFlag, "--disk-size"},
			},
		},
		{
			name: "sources mix per field",
			o:    Overrides{MemoryBytes: i64p(bytesize.GiB)},
			c:    cfg(VMDefaults{DiskBytes: 2 * bytesize.GiB}),
			h:    mid,
			want: VMSpec{
				VCPU:      Resolved[int]{4, SourceAuto, "host has 16 CPUs; cpus/4"},
				MemoryMiB: Resolved[int]{1024, SourceFlag, "--memory"},
				DiskBytes: Resolved[int64]{2 * bytesize.GiB, SourceConfig, "vm_defaults.disk_size"},
			},
		},
		{
			name: "explicit values at the limits are accepted",
			o:    Overrides{VCPU: intp(16), MemoryBytes: i64p(32 * bytesize.GiB), DiskBytes: i64p(bytesize.GiB)},
			h:    mid,
			want: VMSpec{
				VCPU:      Resolved[int]{16, SourceFlag, "--vcpu"},
				MemoryMiB: Resolved[int]{32768, SourceFlag, "--memory"},
				DiskBytes: Resolved[int64]{bytesize.GiB, SourceFlag, "--disk-size"},
			},
		},
		{
			name: "explicit values are not limited by an unknown host",
			o:    Overrides{VCPU: intp(128), MemoryBytes: i64p(bytesize.TiB)},
			want: VMSpec{
				VCPU:      Resolved[int]{128, SourceFlag, "--vcpu"},
				MemoryMiB: Resolved[int]{1 << 20, SourceFlag, "--memory"},
				DiskBytes: Resolved[int64]{8 * bytesize.GiB, SourceAuto, ""},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveVMSpec(tt.o, tt.c, tt.h)
			if err != nil {
				t.Fatalf("ResolveVMSpec error: %v", err)
			}
			if got != tt.want {
				t.Errorf("ResolveVMSpec =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

func TestResolveVMSpecErrors(t *testing.T) {
	h := HostFacts{CPUs: 4, MemoryBytes: 16 * bytesize.GiB}
	tests := []struct {
		name string
		o    Overrides
		c    Config
		want string
	}{
		{"zero vcpu flag", Overrides{VCPU: intp(0)}, Config{}, "--vcpu flag: 0 vCPUs is invalid; use at least 1"},
		{"negative vcpu flag", Overrides{VCPU: intp(-3)}, Config{}, "--vcpu flag: -3 vCPUs is invalid; use at least 1"},
		{"vcpu flag above host", Overrides{VCPU: intp(8)}, Config{}, "--vcpu flag: 8 vCPUs is more than the host's 4 CPUs; use at most 4"},
		{"vcpu config above host", Overrides{}, cfg(VMDefaults{VCPU: 6}), "vm_defaults.vcpu in /c/config.toml: 6 vCPUs is more than the host's 4 CPUs; use at most 4"},
		{"negative vcpu config", Overrides{}, cfg(VMDefaults{VCPU: -1}), "vm_defaults.vcpu in /c/config.toml: -1 vCPUs is invalid; use at least 1"},
		{"vcpu config without a path", Overrides{}, Config{VMDefaults: VMDefaults{VCPU: 6}}, "vm_defaults.vcpu in the configuration: 6 vCPUs is more than the host's 4 CPUs; use at most 4"},
		{"memory flag below floor", Overrides{MemoryBytes: i64p(256 * bytesize.MiB)}, Config{}, "--memory flag: 256MiB of memory is below the minimum of 512MiB"},
		{"zero memory flag", Overrides{MemoryBytes: i64p(0)}, Config{}, "--memory flag: 0B of memory is below the minimum of 512MiB"},
		{"memory flag not whole MiB", Overrides{MemoryBytes: i64p(1331*bytesize.MiB + 200*bytesize.KiB)}, Config{}, "--memory flag: 1.3GiB is not a whole number of MiB; use e.g. 1331M"},
		{"memory flag above host", Overrides{MemoryBytes: i64p(17 * bytesize.GiB)}, Config{}, "--memory flag: 17GiB of memory is more than the host's 16GiB; use less"},
		{"memory config below floor", Overrides{}, cfg(VMDefaults{MemoryMiB: 100}), "vm_defaults.memory_mib in /c/config.toml: 100MiB of memory is below the minimum of 512MiB"},
		{"memory config above host", Overrides{}, cfg(VMDefaults{MemoryMiB: 20480}), "vm_defaults.memory_mib in /c/config.toml: 20GiB of memory is more than the host's 16GiB; use less"},
		{"disk flag below floor", Overrides{DiskBytes: i64p(512 * bytesize.MiB)}, Config{}, "--disk-size flag: a 512MiB disk is below the minimum of 1GiB"},
		{"zero disk flag", Overrides{DiskBytes: i64p(0)}, Config{}, "--disk-size flag: a 0B disk is below the minimum of 1GiB"},
		{"disk config below floor", Overrides{}, cfg(VMDefaults{DiskBytes: 100 * bytesize.MiB}), "vm_defaults.disk_size in /c/config.toml: a 100MiB disk is below the minimum of 1GiB"},
		{"flag error wins over a valid config", Overrides{VCPU: intp(0)}, cfg(VMDefaults{VCPU: 2}), "--vcpu flag: 0 vCPUs is invalid; use at least 1"},
		{"valid flag hides a bad config", Overrides{VCPU: intp(2), MemoryBytes: i64p(bytesize.GiB)}, cfg(VMDefaults{VCPU: 99, DiskBytes: 1}), "vm_defaults.disk_size in /c/config.toml: a 1B disk is below the minimum of 1GiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveVMSpec(tt.o, tt.c, h)
			if err == nil {
				t.Fatalf("ResolveVMSpec = %v, want error %q", got, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("ResolveVMSpec error\n got: %s\nwant: %s", err, tt.want)
			}
			// A value from a flag is the user's command line: a *FlagError naming the flag.
			var fe *FlagError
			fromFlag := strings.HasPrefix(tt.want, "--")
			if errors.As(err, &fe) != fromFlag || (fromFlag && !strings.HasPrefix(tt.want, fe.Flag+" ")) {
				t.Errorf("ResolveVMSpec error %q: FlagError %+v, want one only for flag values", err, fe)
			}
		})
	}
}

func TestVMSpecString(t *testing.T) {
	s, err := ResolveVMSpec(Overrides{}, Config{}, HostFacts{CPUs: 2, MemoryBytes: 25125558272})
	if err != nil {
		t.Fatal(err)
	}
	want := "vcpu=1 (builtin: host has 2 CPUs; cpus/4 < 1) memory=2.9GiB (auto: host RAM 23.4GiB / 8) disk=8GiB (auto)"
	if got := s.String(); got != want {
		t.Errorf("String()\n got: %s\nwant: %s", got, want)
	}

	s, err = ResolveVMSpec(Overrides{VCPU: intp(2)}, cfg(VMDefaults{DiskBytes: 20 * bytesize.GiB}), HostFacts{CPUs: 2, MemoryBytes: 25125558272})
	if err != nil {
		t.Fatal(err)
	}
	want = "vcpu=2 (flag: --vcpu) memory=2.9GiB (auto: host RAM 23.4GiB / 8) disk=20GiB (config: vm_defaults.disk_size)"
	if got := s.String(); got != want {
		t.Errorf("String()\n got: %s\nwant: %s", got, want)
	}
}

func TestVMSpecJSONRoundTrip(t *testing.T) {
	s, err := ResolveVMSpec(Overrides{VCPU: intp(2)}, Config{}, HostFacts{CPUs: 8, MemoryBytes: 8 * bytesize.GiB})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"vcpu":{"value":2,"source":"flag","reason":"--vcpu"},` +
		`"memory_mib":{"value":1024,"source":"auto","reason":"host RAM 8GiB / 8"},` +
		`"disk_bytes":{"value":8589934592,"source":"auto"}}`
	if string(b) != want {
		t.Errorf("json.Marshal\n got: %s\nwant: %s", b, want)
	}
	var back VMSpec
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back != s {
		t.Errorf("round trip = %+v, want %+v", back, s)
	}
}

func TestLoadedConfigFeedsResolution(t *testing.T) {
	path := writeConfig(t, "[vm_defaults]\nvcpu = 2\nmemory_mib = 1024\ndisk_size = \"12G\"\n")
	c, err := LoadFile(path, testLayout(t))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ResolveVMSpec(Overrides{}, c, HostFacts{CPUs: 1, MemoryBytes: 8 * bytesize.GiB})
	want := "vm_defaults.vcpu in " + path + ": 2 vCPUs is more than the host's 1 CPU; use at most 1"
	if err == nil || err.Error() != want {
		t.Fatalf("ResolveVMSpec = %v, %v; want error %q", s, err, want)
	}
}
