// Command bench is banger's benchmark harness (`make bench`). It measures banger against the
// bare VMM it drives, interleaved round by round (A B A B …) so that a noisy shared machine
// hurts both sides alike, and prints medians with min–max plus the ratios we track. It writes
// the same figures as JSON.
//
// It runs as root inside a network namespace of its own, made for the run and deleted after
// it: downloads (kernel, image) happen before, outside the namespace; every VM boots inside.
//
//	bench [-bin DIR] [-home DIR] [-rounds N] [-concurrency 1,2,4,8] [-forks 1,4,8] [-mem-vms 8]
//	      [-cold-parallel 2] [-fork-source warm|cold] [-sections overhead,steps,...] [-out DIR]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/userns"
)

type options struct {
	bin          string
	home         string
	out          string
	rounds       int
	concurrency  []int
	forks        []int  // clone counts of the fork section
	memVMs       int    // VMs on each side of the memory section
	coldParallel int    // cold VMs the memory section boots at once
	forkSource   string // how the fork and snapshot sections' VM starts: warm or cold
	sections     map[string]bool
	vcpu         int
	memory       string
	inside       bool
}

var allSections = []string{"overhead", "steps", "concurrency", "workspace", "footprint", "restart",
	"warm", "fork", "snapshot", "memory"}

func main() {
	userns.Init() // module disks without root re-execute the binary in a user namespace
	var o options
	var conc, forks, sections string
	flag.StringVar(&o.bin, "bin", "bin", "directory holding banger, bangerd and banger-agent")
	flag.StringVar(&o.home, "home", "/var/tmp/banger-bench", "HOME for the benchmark's own banger state (kept between runs so the kernel and image are reused)")
	flag.StringVar(&o.out, "out", "bench/out", "directory for the JSON results")
	flag.IntVar(&o.rounds, "rounds", 5, "rounds per measurement (at least 5 for the published table)")
	flag.StringVar(&conc, "concurrency", "1,2,4,8", "numbers of simultaneous vm run --rm -- true")
	flag.StringVar(&forks, "forks", "1,4,8", "clone counts of the fork section (vm fork -n N)")
	flag.IntVar(&o.memVMs, "mem-vms", 8, "forked clones and cold VMs compared by the memory section")
	flag.IntVar(&o.coldParallel, "cold-parallel", 2, "cold VMs the memory section boots at once")
	flag.StringVar(&o.forkSource, "fork-source", "warm", "how the VM the fork and snapshot sections save starts: warm (the default way: restored from the boot snapshot when there is one) or cold")
	flag.StringVar(&sections, "sections", strings.Join(allSections, ","), "sections to run: "+strings.Join(allSections, ","))
	flag.IntVar(&o.vcpu, "vcpu", 1, "vCPUs of every benchmark VM")
	flag.StringVar(&o.memory, "memory", "1G", "memory of every benchmark VM")
	flag.BoolVar(&o.inside, "inside", false, "internal: already inside the benchmark's network namespace")
	flag.Parse()

	o.concurrency = positiveList("-concurrency", conc)
	o.forks = positiveList("-forks", forks)
	if o.forkSource != "warm" && o.forkSource != "cold" {
		fatalf("-fork-source %q: want warm or cold", o.forkSource)
	}
	if o.memVMs < 1 || o.coldParallel < 1 {
		fatalf("-mem-vms and -cold-parallel must be at least 1")
	}
	o.sections = map[string]bool{}
	for _, s := range strings.Split(sections, ",") {
		s = strings.TrimSpace(s)
		if !contains(allSections, s) {
			fatalf("-sections: unknown section %q; known: %s", s, strings.Join(allSections, ", "))
		}
		o.sections[s] = true
	}
	if o.rounds < 1 {
		fatalf("-rounds must be at least 1")
	}
	var err error
	if o.bin, err = filepath.Abs(o.bin); err != nil {
		fatalf("%v", err)
	}
	if o.out, err = filepath.Abs(o.out); err != nil {
		fatalf("%v", err)
	}
	if os.Geteuid() != 0 {
		fatalf("must run as root: it makes a network namespace and boots VMs (try: sudo make bench)")
	}
	for _, b := range []string{"banger", "bangerd", "banger-agent"} {
		if _, err := os.Stat(filepath.Join(o.bin, b)); err != nil {
			fatalf("%s not found in %s; run `make build` first (make bench does)", b, o.bin)
		}
	}

	if o.inside {
		os.Exit(runInside(o))
	}
	os.Exit(runOutside(o))
}

// positiveList parses a flag's comma-separated list of positive numbers, or exits.
func positiveList(flagName, v string) []int {
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fatalf("%s %q: want a comma-separated list of positive numbers", flagName, v)
		}
		out = append(out, n)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// env is the environment every banger command of the benchmark runs with: its own HOME and
// socket, so it never shares a daemon or state with the user's banger.
func (o options) env() []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + o.home,
		"BANGER_SOCKET=" + filepath.Join(o.home, "run", "bangerd.sock"),
		"LANG=C.UTF-8",
	}
}

// runOutside prepares (kernel, image) outside the namespace, then re-runs itself inside a
// fresh network namespace and removes the namespace afterwards.
func runOutside(o options) int {
	if err := os.MkdirAll(o.home, 0o700); err != nil {
		fatalf("%v", err)
	}
	logf("preparing the kernel and image (outside the network namespace; downloads from the Debian mirror)")
	if err := warmUp(o); err != nil {
		fatalf("warm-up: %v", err)
	}
	// The daemon must start again inside the namespace.
	_ = banger(o, nil, "daemon", "stop").err

	ns := fmt.Sprintf("banger-bench-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		fatalf("ip netns add %s: %v: %s", ns, err, out)
	}
	defer func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			logf("ip netns del %s: %v: %s", ns, err, out)
		}
	}()
	args := append([]string{"netns", "exec", ns, os.Args[0], "-inside"}, os.Args[1:]...)
	cmd := exec.Command("ip", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// Ctrl-C reaches the inner run through the terminal's process group; wait for it to clean
	// up rather than dying first.
	signal.Ignore(syscall.SIGINT)
	err := cmd.Run()
	// Whatever happened inside, leave no daemon behind.
	_ = banger(o, nil, "daemon", "stop").err
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		logf("%v", err)
		return 1
	}
	return 0
}

func warmUp(o options) error {
	r := banger(o, nil, "kernel", "list", "--json")
	if r.err != nil {
		return fmt.Errorf("kernel list: %v: %s", r.err, r.stderr)
	}
	if !strings.Contains(r.stdout, `"debian-6.1"`) {
		if r := banger(o, nil, "kernel", "pull", "debian-6.1"); r.err != nil {
			return fmt.Errorf("kernel pull: %v: %s", r.err, r.stderr)
		}
	}
	r = banger(o, nil, "image", "list", "--json")
	if r.err != nil {
		return fmt.Errorf("image list: %v: %s", r.err, r.stderr)
	}
	if !strings.Contains(r.stdout, `"debian-bookworm"`) {
		if r := banger(o, nil, "image", "build", "debian-bookworm"); r.err != nil {
			return fmt.Errorf("image build: %v: %s", r.err, r.stderr)
		}
	}
	return nil
}

// runInside measures every selected section and reports.
func runInside(o options) int {
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		logf("ip link set lo up: %v: %s", err, out)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	defer func() { _ = banger(o, nil, "daemon", "stop").err }()

	rep := newReport(o)
	b := &bench{o: o, ctx: ctx, rep: rep}
	// No spare VMs (config warm_spares) but where the warm section asks for them: a spare the
	// daemon keeps running, or makes in the background, would share the CPUs and memory with
	// whatever another section measures.
	if err := b.setSpares(0); err != nil {
		logf("setup: %v", err)
		return 1
	}
	if err := b.setup(); err != nil {
		logf("setup: %v", err)
		return 1
	}
	defer b.cleanup()
	for _, s := range allSections {
		if !o.sections[s] || ctx.Err() != nil {
			continue
		}
		start := time.Now()
		logf("section %s", s)
		var err error
		switch s {
		case "overhead":
			err = b.overhead()
		case "steps":
			err = b.steps()
		case "concurrency":
			err = b.concurrency()
		case "workspace":
			err = b.workspace()
		case "footprint":
			err = b.footprint()
		case "restart":
			err = b.restart()
		case "warm":
			err = b.warm()
		case "fork":
			err = b.fork()
		case "snapshot":
			err = b.snapshot()
		case "memory":
			err = b.memory()
		}
		if err != nil {
			logf("section %s failed: %v", s, err)
			rep.fail(s, err)
		}
		logf("section %s took %s", s, time.Since(start).Round(time.Second))
	}
	rep.print(os.Stdout)
	path, err := rep.write(o.out)
	if err != nil {
		logf("write results: %v", err)
		return 1
	}
	logf("results written to %s", path)
	if ctx.Err() != nil {
		return 130
	}
	return 0
}
