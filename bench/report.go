package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/version"
)

// figure is one measured quantity.
type figure struct {
	Name      string    `json:"name"`
	What      string    `json:"what"`
	Unit      string    `json:"unit"`
	Samples   []float64 `json:"samples,omitempty"`
	Median    float64   `json:"median"`
	Min       float64   `json:"min"`
	Max       float64   `json:"max"`
	Target    float64   `json:"target,omitempty"`
	TargetMet bool      `json:"target_met,omitempty"`
	Failures  int       `json:"failures,omitempty"`
	NA        bool      `json:"not_available,omitempty"`
	Note      string    `json:"note,omitempty"`
	VMM       string    `json:"vmm"`
	Accel     string    `json:"accel"`
}

type report struct {
	Started     time.Time          `json:"started"`
	Banger      string             `json:"banger"`
	Host        map[string]string  `json:"host"`
	Rounds      int                `json:"rounds"`
	Figures     []*figure          `json:"figures"`
	Failed      map[string]string  `json:"failed_sections,omitempty"`
	byName      map[string]*figure `json:"-"`
	vmm, accel  string
	interleaved bool
}

func newReport(o options) *report {
	return &report{Started: time.Now().UTC(), Banger: version.Get().String(), Rounds: o.rounds,
		Host: map[string]string{}, Failed: map[string]string{}, byName: map[string]*figure{}, vmm: "qemu"}
}

func (r *report) setEnvironment(b *bench) {
	r.accel = string(b.accel.Accel)
	facts, _ := host.Root("/").ReadFacts()
	r.Host["cpus"] = fmt.Sprint(facts.CPUs)
	r.Host["memory"] = fmt.Sprintf("%.1f GiB", float64(facts.MemoryBytes)/(1<<30))
	r.Host["accel"] = string(b.accel.Accel) + ": " + b.accel.Reason
	r.Host["arch"] = runtime.GOARCH
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		r.Host["kernel"] = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("qemu-system-x86_64", "--version").Output(); err == nil {
		r.Host["qemu"] = strings.SplitN(string(out), "\n", 2)[0]
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				r.Host["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	r.Host["vm"] = fmt.Sprintf("%d vCPU, %s", b.o.vcpu, b.o.memory)
}

func summarize(samples []float64) (med, lo, hi float64) {
	if len(samples) == 0 {
		return 0, 0, 0
	}
	s := append([]float64(nil), samples...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		med = s[len(s)/2]
	} else {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return med, s[0], s[len(s)-1]
}

func (r *report) add(name, what, unit string, samples []float64) *figure {
	med, lo, hi := summarize(samples)
	f := &figure{Name: name, What: what, Unit: unit, Samples: samples, Median: med, Min: lo, Max: hi, VMM: r.vmm, Accel: r.accel}
	r.Figures = append(r.Figures, f)
	r.byName[name] = f
	return f
}

func (r *report) ratio(name, what string, v, target float64) {
	f := r.add(name, what, "x", []float64{v})
	f.Target, f.TargetMet = target, v < target
}

func (r *report) na(name, what, why string) {
	f := r.add(name, what, "", nil)
	f.NA, f.Note = true, why
}

func (r *report) fail(section string, err error) { r.Failed[section] = err.Error() }

func seconds(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}

func millis(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d.Microseconds()) / 1000
	}
	return out
}

func format(v float64, unit string) string {
	switch unit {
	case "s":
		return fmt.Sprintf("%.2fs", v)
	case "ms":
		return fmt.Sprintf("%.1fms", v)
	case "MiB":
		return fmt.Sprintf("%.1fMiB", v)
	case "x":
		return fmt.Sprintf("%.2fx", v)
	}
	return fmt.Sprintf("%g%s", v, unit)
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\nbanger benchmark — %s, banger %s\n", r.Started.Format("2006-01-02 15:04 MST"), r.Banger)
	keys := make([]string, 0, len(r.Host))
	for k := range r.Host {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %-7s %s\n", k, r.Host[k])
	}
	fmt.Fprintf(w, "  rounds  %d, interleaved (banger and bare alternate in overhead, warm and cold in warm)\n\n", r.Rounds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tMEDIAN\tMIN–MAX\tTARGET\tVMM/ACCEL\tWHAT")
	for _, f := range r.Figures {
		if f.NA {
			fmt.Fprintf(tw, "%s\tn/a\t\t\t%s/%s\t%s — %s\n", f.Name, f.VMM, f.Accel, f.What, f.Note)
			continue
		}
		rng := ""
		if len(f.Samples) > 1 {
			rng = format(f.Min, f.Unit) + "–" + format(f.Max, f.Unit)
		}
		target := ""
		if f.Target != 0 || strings.HasPrefix(f.Name, "concurrency.") {
			mark := "met"
			if !f.TargetMet {
				mark = "NOT met"
			}
			if strings.HasPrefix(f.Name, "concurrency.") {
				target = fmt.Sprintf("0 failures: %d (%s)", f.Failures, mark)
			} else {
				target = fmt.Sprintf("< %s (%s)", format(f.Target, f.Unit), mark)
			}
		}
		what := f.What
		if f.Note != "" {
			what += " — " + f.Note
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s/%s\t%s\n", f.Name, format(f.Median, f.Unit), rng, target, f.VMM, f.Accel, what)
	}
	tw.Flush()
	for s, e := range r.Failed {
		fmt.Fprintf(w, "section %s FAILED: %s\n", s, e)
	}
	if r.accel == "tcg" {
		fmt.Fprintln(w, "\nTCG (software emulation) figures are not comparable with KVM ones; track the ratios.")
	}
}

func (r *report) write(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "results-"+r.Started.Format("20060102-150405")+".json")
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, append(b, '\n'), 0o644)
}
