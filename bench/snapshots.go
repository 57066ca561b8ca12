package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// Bounds on the commands of the snapshot sections: a command that takes longer has hung, and
// the section fails with what it was doing instead of the benchmark waiting forever.
const (
	bootTimeout  = 10 * time.Minute // a cold boot, even with several guests sharing 2 CPUs under TCG
	forkTimeout  = 5 * time.Minute  // a vm fork of up to 8 clones
	quickTimeout = 2 * time.Minute  // snapshot, suspend, resume, delete, one exec
	readyTimeout = 2 * time.Minute  // a clone's first successful exec after its fork returned
)

// cli runs the banger CLI like banger does, but bounded by timeout.
func (b *bench) cli(timeout time.Duration, args ...string) cmdResult {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	r := banger(b.o, ctx, args...)
	if r.err != nil && ctx.Err() == context.DeadlineExceeded {
		r.err = fmt.Errorf("banger %s: gave up after %s: %w", strings.Join(args, " "), timeout, r.err)
	}
	return r
}

// runArgs is `vm run --rm [--cold] SIZE -- true`.
func (b *bench) runArgs(cold bool) []string {
	args := []string{"vm", "run", "--rm"}
	if cold {
		args = append(args, "--cold")
	}
	return append(append(args, b.vmArgs()...), "--", "true")
}

// setSpares writes the benchmark HOME's config.toml with warm_spares = n (the daemon reads its
// config for each create).
func (b *bench) setSpares(n int) error {
	dir := filepath.Join(b.o.home, ".config", "banger")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.toml"), []byte(fmt.Sprintf("# written by banger-bench\nwarm_spares = %d\n", n)), 0o600)
}

// sparesMade counts the spare VMs the benchmark's daemons have made, from their log.
func (b *bench) sparesMade() int {
	data, _ := os.ReadFile(filepath.Join(b.o.home, ".local", "state", "banger", "bangerd.log"))
	return strings.Count(string(data), `msg="made a spare VM"`)
}

// waitSpare waits (bounded) until the daemon has made a spare after made of them.
func (b *bench) waitSpare(made int) error {
	deadline := time.Now().Add(3 * time.Minute)
	for b.sparesMade() <= made {
		if time.Now().After(deadline) {
			return errors.New("no spare VM made within 3 minutes (see the daemon's log)")
		}
		select {
		case <-b.ctx.Done():
			return b.ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// claimed says whether a command that made a VM took a spare (its progress on stderr).
func claimed(r cmdResult) bool { return strings.Contains(r.stderr, "taking a spare") }

// spareRun measures one `vm run --rm -- true` that takes a spare: with warm_spares = 1 it
// makes the pool fill (an unmeasured warm run) and waits for the spare, runs, then waits for
// the spare made behind it, so that no fill overlaps the next measurement. It leaves
// warm_spares = 0.
func (b *bench) spareRun() (cmdResult, error) {
	if err := b.setSpares(1); err != nil {
		return cmdResult{}, err
	}
	defer func() { _ = b.setSpares(0) }()
	made := b.sparesMade()
	if r := b.cli(bootTimeout, b.runArgs(false)...); r.err != nil {
		return r, fmt.Errorf("the run that makes a spare: %w", r.err)
	}
	if err := b.waitSpare(made); err != nil {
		return cmdResult{}, err
	}
	made = b.sparesMade()
	r := b.cli(bootTimeout, b.runArgs(false)...)
	if r.err != nil {
		return r, r.err
	}
	return r, b.waitSpare(made)
}

// warm compares, interleaved, `vm run --rm -- true` three ways, CLI start to exit: taking a
// spare (config warm_spares, the default), restored from the boot snapshot without one, and
// booted cold. One warm-enabled run first makes sure the combination's boot snapshot exists;
// it is not counted, nor are the runs that make the spares.
func (b *bench) warm() error {
	if err := b.prime(); err != nil {
		return err
	}
	var spare, warm, cold []time.Duration
	notWarm, notSpare := 0, 0
	for i := 0; i < b.o.rounds && b.ctx.Err() == nil; i++ {
		s, err := b.spareRun()
		if err != nil {
			return fmt.Errorf("spare round %d: %w", i+1, err)
		}
		if !claimed(s) {
			notSpare++
		}
		spare = append(spare, s.took)
		w := b.cli(bootTimeout, b.runArgs(false)...)
		if w.err != nil {
			return fmt.Errorf("warm round %d: %w", i+1, w.err)
		}
		if !restored(w) {
			notWarm++
		}
		warm = append(warm, w.took)
		c := b.cli(bootTimeout, b.runArgs(true)...)
		if c.err != nil {
			return fmt.Errorf("cold round %d: %w", i+1, c.err)
		}
		if restored(c) {
			return fmt.Errorf("cold round %d: vm run --cold restored a snapshot: %s", i+1, c.stderr)
		}
		cold = append(cold, c.took)
		logf("warm round %d: spare %s, warm %s, cold %s", i+1, s.took.Round(time.Millisecond), w.took.Round(time.Millisecond), c.took.Round(time.Millisecond))
	}
	if err := b.warmSteps(); err != nil {
		return err
	}
	sp := b.rep.add("warm.spare", "vm run --rm -- true taking a spare (warm_spares = 1, the default), CLI start to exit", "s", seconds(spare))
	sp.Target, sp.TargetMet = 1.0, sp.Median <= 1.0
	if notSpare > 0 {
		sp.Note = fmt.Sprintf("%d of %d runs did not say they took a spare", notSpare, len(spare))
	}
	w := b.rep.add("warm.warm", "vm run --rm -- true restored from the boot snapshot (no spare ready), CLI start to exit", "s", seconds(warm))
	w.Target, w.TargetMet = 1.0, w.Median <= 1.0
	if notWarm > 0 {
		w.Note = fmt.Sprintf("%d of %d runs did not say they restored a snapshot", notWarm, len(warm))
	}
	c := b.rep.add("warm.cold", "vm run --rm --cold -- true (full boot), CLI start to exit", "s", seconds(cold))
	if w.Median > 0 {
		b.rep.add("warm.speedup", "cold / warm (median)", "x", []float64{c.Median / w.Median})
	}
	if sp.Median > 0 {
		b.rep.add("warm.spare_speedup", "warm / spare (median)", "x", []float64{w.Median / sp.Median})
	}
	return nil
}

// prime makes sure the boot snapshot of the benchmark VMs' combination exists, once per run:
// a warm-enabled run boots cold and saves it when it does not (each build of banger has an
// agent of its own, so a new build needs a new one). Not measured.
func (b *bench) prime() error {
	if b.primed {
		return nil
	}
	r := b.cli(bootTimeout, b.runArgs(false)...)
	if r.err != nil {
		return fmt.Errorf("priming run (makes the boot snapshot): %w", r.err)
	}
	logf("priming run (boot snapshot %s) took %s", map[bool]string{true: "existed", false: "made"}[restored(r)], r.took.Round(time.Millisecond))
	if err := b.waitBootSnapshot(); err != nil {
		return err
	}
	b.primed = true
	return nil
}

// restored says whether a command that made a VM says it restored it from a snapshot
// (its progress on stderr), rather than booting it.
func restored(r cmdResult) bool { return strings.Contains(r.stderr, "restoring snapshot") }

// warmSteps creates warm VMs through the API and reports the daemon's timing of each of
// their start steps: where a warm start's time goes.
func (b *bench) warmSteps() error {
	var st stepTimes
	for i := 0; i < b.o.rounds && b.ctx.Err() == nil; i++ {
		ctx, cancel := context.WithTimeout(b.ctx, bootTimeout)
		ev, err := b.createVMCtx(ctx, fmt.Sprintf("bench-warm-%d", i), false)
		cancel()
		if err != nil {
			return fmt.Errorf("warm create through the API: %w", err)
		}
		st.add(ev.Timings)
		if err := b.deleteAllBut(); err != nil {
			return err
		}
	}
	st.report(b.rep, "warm.step.", "warm create, start step ")
	return nil
}

// stepTimes gathers the daemon's step timings over rounds, by step name, in the order the
// names first came.
type stepTimes struct {
	order []string
	per   map[string][]time.Duration
}

func (s *stepTimes) add(timings []api.StepTiming) {
	if s.per == nil {
		s.per = map[string][]time.Duration{}
	}
	for _, t := range timings {
		if _, ok := s.per[t.Name]; !ok {
			s.order = append(s.order, t.Name)
		}
		s.per[t.Name] = append(s.per[t.Name], t.Duration)
	}
}

// report adds a figure per step: named prefix+step, described as what+step.
func (s *stepTimes) report(rep *report, prefix, what string) {
	for _, name := range s.order {
		rep.add(prefix+name, what+name+" (daemon's timing)", "ms", millis(s.per[name]))
	}
}

// bootSnapshots returns the names of the boot snapshots `snapshot list` shows.
func (b *bench) bootSnapshots() ([]string, error) {
	list, err := b.snapshotList()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range list {
		if s.kind == api.SnapshotBoot {
			names = append(names, s.name)
		}
	}
	return names, nil
}

// snapshotRow is one snapshot: its name and kind (boot or user).
type snapshotRow struct{ name, kind string }

// snapshotList lists the daemon's snapshots, bounded.
func (b *bench) snapshotList() ([]snapshotRow, error) {
	ctx, cancel := context.WithTimeout(b.ctx, quickTimeout)
	defer cancel()
	list, err := b.client.ListSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	rows := make([]snapshotRow, 0, len(list))
	for _, s := range list {
		rows = append(rows, snapshotRow{name: s.Name, kind: s.Kind})
	}
	return rows, nil
}

// waitBootSnapshot waits (bounded) until a boot snapshot is listed: the daemon may save it
// after the run that booted cold has already exited.
func (b *bench) waitBootSnapshot() error {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		names, err := b.bootSnapshots()
		if err != nil {
			return fmt.Errorf("list snapshots: %w", err)
		}
		if len(names) > 0 {
			logf("warm: boot snapshots: %s", strings.Join(names, ", "))
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("no boot snapshot 3 minutes after a warm-enabled vm run; is warm_start off in " +
				b.o.home + "/.config/banger, or did the daemon fail to save it (see its log)?")
		}
		select {
		case <-b.ctx.Done():
			return b.ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// source makes a running VM for the fork, snapshot and memory sections, booted cold or made
// the default way (a warm start when the boot snapshot exists), and waits until its agent
// runs commands.
func (b *bench) source(name string, cold bool) error {
	args := []string{"vm", "create", "--name", name}
	if cold {
		args = append(args, "--cold")
	} else if err := b.prime(); err != nil {
		return err
	}
	args = append(args, b.vmArgs()...)
	r := b.cli(bootTimeout, args...)
	if r.err != nil {
		return fmt.Errorf("source VM: %w", r.err)
	}
	if restored(r) == cold {
		return fmt.Errorf("source VM %s: wanted it %s, but vm create said: %s", name,
			map[bool]string{true: "booted cold", false: "restored from the boot snapshot"}[cold], strings.TrimSpace(r.stderr))
	}
	if _, err := b.execReady(name, readyTimeout); err != nil {
		return fmt.Errorf("source VM: %w", err)
	}
	return nil
}

// execReady runs `vm exec NAME -- true` until it succeeds (bounded) and returns how many
// attempts failed first.
func (b *bench) execReady(name string, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for failed := 0; ; failed++ {
		r := b.cli(quickTimeout, "vm", "exec", name, "--", "true")
		if r.err == nil {
			return failed, nil
		}
		if time.Now().After(deadline) || b.ctx.Err() != nil {
			return failed, fmt.Errorf("vm exec %s -- true still failing after %s (%d attempts): %w", name, timeout, failed+1, r.err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// deleteAllBut deletes every VM of the benchmark's daemon except keep, bounded.
func (b *bench) deleteAllBut(keep ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), quickTimeout)
	defer cancel()
	vms, err := b.client.ListVMs(ctx)
	if err != nil {
		return fmt.Errorf("list VMs: %w", err)
	}
	var errs []error
	for _, vm := range vms {
		if contains(keep, vm.Name) {
			continue
		}
		if err := b.client.DeleteVM(ctx, vm.ID, true); err != nil {
			errs = append(errs, fmt.Errorf("delete VM %s: %w", vm.Name, err))
		}
	}
	return errors.Join(errs...)
}

// fork measures `vm fork SRC -n N` until `vm exec CLONE -- true` succeeded on every clone,
// for each N of -forks, the clones deleted between rounds.
func (b *bench) fork() error {
	const src = "bench-fork-src"
	if err := b.source(src, b.o.forkSource == "cold"); err != nil {
		return err
	}
	defer func() { _ = b.deleteAllBut() }()
	for _, n := range b.o.forks {
		var total, cli, perClone []time.Duration
		retries := 0
		for i := 0; i < b.o.rounds && b.ctx.Err() == nil; i++ {
			t, c, failed, err := b.forkRound(src, n)
			if err != nil {
				return fmt.Errorf("fork -n %d, round %d: %w", n, i+1, err)
			}
			total, cli = append(total, t), append(cli, c)
			perClone = append(perClone, t/time.Duration(n))
			retries += failed
			logf("fork -n %d round %d: fork %s, all exec-ready %s (%s per clone)", n, i+1,
				c.Round(time.Millisecond), t.Round(time.Millisecond), (t / time.Duration(n)).Round(time.Millisecond))
			if err := b.deleteAllBut(src); err != nil {
				return fmt.Errorf("fork -n %d, round %d: delete the clones: %w", n, i+1, err)
			}
		}
		b.rep.add(fmt.Sprintf("fork.%d.cli", n), fmt.Sprintf("vm fork -n %d, CLI start to exit", n), "s", seconds(cli))
		f := b.rep.add(fmt.Sprintf("fork.%d.total", n), fmt.Sprintf("vm fork -n %d until vm exec -- true succeeded on every clone", n), "s", seconds(total))
		if retries > 0 {
			f.Note = fmt.Sprintf("%d execs failed before their clone answered", retries)
		}
		p := b.rep.add(fmt.Sprintf("fork.%d.per_clone", n), fmt.Sprintf("the same, divided by %d", n), "s", seconds(perClone))
		p.Target, p.TargetMet = 0.5, p.Median <= 0.5
	}
	return b.forkSteps(src)
}

// forkSteps forks one clone of src through the API per round and reports the daemon's timing
// of the source's capture and of each of the clone's steps, and the clone's first
// `vm exec -- true` (CLI start to exit): where the time of `vm fork -n 1` goes.
func (b *bench) forkSteps(src string) error {
	var st stepTimes
	var first []time.Duration
	for i := 0; i < b.o.rounds && b.ctx.Err() == nil; i++ {
		ctx, cancel := context.WithTimeout(b.ctx, forkTimeout)
		ev, err := b.client.ForkVMResult(ctx, src, api.ForkVMRequest{Count: 1}, nil)
		cancel()
		if err != nil {
			return fmt.Errorf("fork through the API, round %d: %w", i+1, err)
		}
		st.add(ev.Timings)
		clone := ev.VMs[0].Name
		r := b.cli(quickTimeout, "vm", "exec", clone, "--", "true")
		if r.err != nil {
			return fmt.Errorf("the first vm exec -- true on clone %s: %w", clone, r.err)
		}
		first = append(first, r.took)
		if err := b.deleteAllBut(src); err != nil {
			return fmt.Errorf("fork through the API, round %d: delete the clone: %w", i+1, err)
		}
	}
	st.report(b.rep, "fork.step.", "vm fork -n 1, step ")
	b.rep.add("fork.first_exec", "vm fork -n 1, then the clone's first vm exec -- true (CLI start to exit)", "ms", millis(first))
	return nil
}

// forkRound forks n clones of src and waits for each to run `true`; it returns the time from
// the fork's start until the last clone answered, the fork command's own time and how many
// execs failed before their clone answered.
func (b *bench) forkRound(src string, n int) (total, cli time.Duration, failed int, err error) {
	start := time.Now()
	r := b.cli(forkTimeout, "vm", "fork", src, "-n", strconv.Itoa(n))
	if r.err != nil {
		return 0, 0, 0, r.err
	}
	clones := nonEmptyLines(r.stdout)
	if len(clones) != n {
		return 0, 0, 0, fmt.Errorf("vm fork -n %d printed %d clone names, want %d: %q", n, len(clones), n, r.stdout)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []error
	for _, c := range clones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := b.execReady(c, readyTimeout)
			mu.Lock()
			defer mu.Unlock()
			failed += f
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	total = time.Since(start)
	return total, r.took, failed, errors.Join(errs...)
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// snapshot times `vm snapshot` of a running VM, `vm create --from-snapshot` of that snapshot
// until the new VM runs commands, `snapshot rm`, and `vm suspend` and `vm resume`.
func (b *bench) snapshot() error {
	const src = "bench-snap-src"
	if err := b.source(src, b.o.forkSource == "cold"); err != nil {
		return err
	}
	defer func() { _ = b.deleteAllBut() }()
	var take, from, rm, suspend, resume, resumeExec []time.Duration
	for i := 0; i < b.o.rounds && b.ctx.Err() == nil; i++ {
		name := fmt.Sprintf("bench-snap-%d", i)
		r := b.cli(quickTimeout, "vm", "snapshot", src, "--name", name)
		if r.err != nil {
			return r.err
		}
		b.snaps = append(b.snaps, name)
		take = append(take, r.took)

		vm := fmt.Sprintf("bench-from-%d", i)
		start := time.Now()
		// No size flags: the VM has the snapshot's (and the CLI refuses others).
		r = b.cli(bootTimeout, "vm", "create", "--from-snapshot", name, "--name", vm)
		if r.err != nil {
			return r.err
		}
		if _, err := b.execReady(vm, readyTimeout); err != nil {
			return err
		}
		from = append(from, time.Since(start))
		if err := b.deleteAllBut(src); err != nil {
			return err
		}
		r = b.cli(quickTimeout, "snapshot", "rm", name)
		if r.err != nil {
			return r.err
		}
		b.snaps = b.snaps[:len(b.snaps)-1]
		rm = append(rm, r.took)

		r = b.cli(quickTimeout, "vm", "suspend", src)
		if r.err != nil {
			return r.err
		}
		suspend = append(suspend, r.took)
		r = b.cli(quickTimeout, "vm", "resume", src)
		if r.err != nil {
			return r.err
		}
		resume = append(resume, r.took)
		r = b.cli(quickTimeout, "vm", "exec", src, "--", "true")
		if r.err != nil {
			return fmt.Errorf("first exec after resume: %w", r.err)
		}
		resumeExec = append(resumeExec, r.took)
		logf("snapshot round %d: snapshot %s, create --from-snapshot to exec-ready %s, rm %s, suspend %s, resume %s, exec after resume %s",
			i+1, take[i].Round(time.Millisecond), from[i].Round(time.Millisecond), rm[i].Round(time.Millisecond),
			suspend[i].Round(time.Millisecond), resume[i].Round(time.Millisecond), resumeExec[i].Round(time.Millisecond))
	}
	b.rep.add("snapshot.take", "vm snapshot of a running VM (it runs on), CLI start to exit", "s", seconds(take))
	b.rep.add("snapshot.create_from", "vm create --from-snapshot until vm exec -- true succeeded", "s", seconds(from))
	b.rep.add("snapshot.rm", "snapshot rm of a user snapshot", "ms", millis(rm))
	b.rep.add("snapshot.suspend", "vm suspend of a running VM", "s", seconds(suspend))
	b.rep.add("snapshot.resume", "vm resume of a suspended VM", "s", seconds(resume))
	b.rep.add("snapshot.exec_after_resume", "the first vm exec -- true after a resume", "s", seconds(resumeExec))
	return nil
}

// removeSnapshots removes the user snapshots the benchmark made and has not removed yet.
func (b *bench) removeSnapshots() {
	for _, s := range b.snaps {
		ctx, cancel := context.WithTimeout(context.Background(), quickTimeout)
		if r := banger(b.o, ctx, "snapshot", "rm", s); r.err != nil {
			logf("cleanup: %v", r.err)
		}
		cancel()
	}
	b.snaps = nil
}

// removeLeftSnapshots removes the user snapshots named bench-… that an interrupted run left:
// the benchmark owns its HOME. Boot snapshots stay, as the kernel and image do.
func (b *bench) removeLeftSnapshots() {
	list, err := b.snapshotList()
	if err != nil {
		logf("list snapshots: %v", err)
		return
	}
	for _, s := range list {
		if s.kind == api.SnapshotUser && strings.HasPrefix(s.name, "bench-") {
			b.snaps = append(b.snaps, s.name)
		}
	}
	if len(b.snaps) > 0 {
		logf("removing %d snapshots an interrupted run left", len(b.snaps))
		b.removeSnapshots()
	}
}

// memory compares the host memory of N forked clones with that of N cold-booted VMs: the sum
// of the VMM processes' PSS (pages shared through a common memory file are divided among the
// processes mapping them; RSS counts them in full in each) and the drop of the host's
// MemAvailable, each side measured against the moment before it was made. The clones are
// measured twice: forked from a VM made the default way (a warm start when the boot
// snapshot exists) and from a cold-booted one, whose RAM the VMM keeps in shared memory.
func (b *bench) memory() error {
	n := b.o.memVMs
	defer func() { _ = b.deleteAllBut() }()
	type side struct {
		pss, rss []float64
		avail    float64
	}
	clones := map[string]side{}
	for _, kind := range []string{"warm", "cold"} {
		src := "bench-mem-src-" + kind
		if err := b.source(src, kind == "cold"); err != nil {
			return err
		}
		srcPSS, err := b.vmPSS([]string{src})
		if err != nil {
			return err
		}
		b.rep.add("memory.source_pss_"+kind, fmt.Sprintf("PSS of the forked VM's VMM before the fork (%s source)", kind), "MiB", srcPSS)
		before, err := memAvailable()
		if err != nil {
			return err
		}
		r := b.cli(forkTimeout, "vm", "fork", src, "-n", strconv.Itoa(n))
		if r.err != nil {
			return r.err
		}
		names := nonEmptyLines(r.stdout)
		if len(names) != n {
			return fmt.Errorf("vm fork -n %d printed %d clone names, want %d: %q", n, len(names), n, r.stdout)
		}
		for _, c := range names {
			if _, err := b.execReady(c, readyTimeout); err != nil {
				return err
			}
		}
		pss, rssMiB, avail, err := b.settledMemory(names, before)
		if err != nil {
			return err
		}
		clones[kind] = side{pss, rssMiB, avail}
		logf("memory: %d clones of a %s source: PSS %.0f MiB, RSS %.0f MiB, MemAvailable -%.0f MiB", n, kind, sum(pss), sum(rssMiB), avail)
		if err := b.deleteAllBut(); err != nil {
			return err
		}
	}

	// The cold VMs, without the clones and their sources.
	before, err := memAvailable()
	if err != nil {
		return err
	}
	var cold []string
	for i := 0; i < n; i += b.o.coldParallel {
		var wg sync.WaitGroup
		errs := make([]error, b.o.coldParallel)
		for j := 0; j < b.o.coldParallel && i+j < n; j++ {
			name := fmt.Sprintf("bench-cold-%d", i+j)
			cold = append(cold, name)
			wg.Add(1)
			go func() {
				defer wg.Done()
				args := append([]string{"vm", "create", "--cold", "--name", name}, b.vmArgs()...)
				if r := b.cli(bootTimeout, args...); r.err != nil {
					errs[j] = r.err
					return
				}
				_, errs[j] = b.execReady(name, readyTimeout)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("cold VMs: %w", err)
		}
		logf("memory: %d of %d cold VMs running", len(cold), n)
	}
	coldPSS, coldRSS, coldAvail, err := b.settledMemory(cold, before)
	if err != nil {
		return err
	}
	logf("memory: %d cold VMs: PSS %.0f MiB, RSS %.0f MiB, MemAvailable -%.0f MiB", n, sum(coldPSS), sum(coldRSS), coldAvail)

	b.rep.add("memory.cold_pss", "PSS of one cold-booted VM's VMM", "MiB", coldPSS)
	kp := b.rep.add("memory.cold_pss_sum", fmt.Sprintf("%d cold VMs: sum of their VMMs' PSS", n), "MiB", []float64{sum(coldPSS)})
	b.rep.add("memory.cold_rss_sum", fmt.Sprintf("%d cold VMs: sum of RSS", n), "MiB", []float64{sum(coldRSS)})
	ka := b.rep.add("memory.cold_avail", fmt.Sprintf("host MemAvailable drop with %d cold VMs", n), "MiB", []float64{coldAvail})
	for _, kind := range []string{"warm", "cold"} {
		c := clones[kind]
		of := fmt.Sprintf("%d clones of a %s source", n, kind)
		b.rep.add("memory.clone_pss_"+kind, "PSS of one clone's VMM ("+kind+" source)", "MiB", c.pss)
		cp := b.rep.add("memory.clones_pss_sum_"+kind, of+": sum of their VMMs' PSS", "MiB", []float64{sum(c.pss)})
		b.rep.add("memory.clones_rss_sum_"+kind, of+": sum of RSS (shared pages counted in each)", "MiB", []float64{sum(c.rss)})
		ca := b.rep.add("memory.clones_avail_"+kind, "host MemAvailable drop with "+of, "MiB", []float64{c.avail})
		if kp.Median > 0 {
			b.rep.ratio("memory.pss_ratio_"+kind, "clones ("+kind+" source) / cold VMs, sum of PSS", cp.Median/kp.Median, 0.5)
		}
		if ka.Median > 0 {
			b.rep.ratio("memory.avail_ratio_"+kind, "clones ("+kind+" source) / cold VMs, MemAvailable drop", ca.Median/ka.Median, 0.5)
		}
	}
	return nil
}

// settledMemory waits until the VMs have been idle a few seconds, then returns each VMM's PSS
// and RSS (MiB) and how far MemAvailable fell since before (MiB).
func (b *bench) settledMemory(names []string, before int64) (pss, rssMiB []float64, availDrop float64, err error) {
	select {
	case <-b.ctx.Done():
		return nil, nil, 0, b.ctx.Err()
	case <-time.After(10 * time.Second):
	}
	after, err := memAvailable()
	if err != nil {
		return nil, nil, 0, err
	}
	if pss, err = b.vmPSS(names); err != nil {
		return nil, nil, 0, err
	}
	for _, name := range names {
		vm, err := b.getVM(name)
		if err != nil {
			return nil, nil, 0, err
		}
		n, err := rss(vm.PID)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("VM %s: VMM pid %d: %w", name, vm.PID, err)
		}
		rssMiB = append(rssMiB, float64(n)/(1<<20))
	}
	return pss, rssMiB, float64(before-after) / (1 << 20), nil
}

func (b *bench) getVM(name string) (api.VM, error) {
	ctx, cancel := context.WithTimeout(b.ctx, quickTimeout)
	defer cancel()
	vm, err := b.client.GetVM(ctx, name)
	if err != nil {
		return api.VM{}, fmt.Errorf("VM %s: %w", name, err)
	}
	if vm.PID == 0 {
		return api.VM{}, fmt.Errorf("VM %s: no VMM process (state %s)", name, vm.State)
	}
	return vm, nil
}

// vmPSS returns the PSS (MiB) of each named VM's VMM process.
func (b *bench) vmPSS(names []string) ([]float64, error) {
	var out []float64
	for _, name := range names {
		vm, err := b.getVM(name)
		if err != nil {
			return nil, err
		}
		p, err := pss(vm.PID)
		if err != nil {
			return nil, fmt.Errorf("VM %s: VMM pid %d: %w", name, vm.PID, err)
		}
		out = append(out, float64(p)/(1<<20))
	}
	return out, nil
}

// pss returns a process's proportional set size in bytes, from /proc/PID/smaps_rollup.
func pss(pid int) (int64, error) {
	return procKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
}

// memAvailable returns the host's MemAvailable in bytes.
func memAvailable() (int64, error) { return procKB("/proc/meminfo", "MemAvailable:") }

// procKB reads the "key: N kB" line of a /proc file, in bytes.
func procKB(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("%s: %s %q: %w", path, key, f[0], err)
				}
				return kb * 1024, nil
			}
		}
	}
	return 0, fmt.Errorf("%s: no %s line", path, key)
}

func sum(xs []float64) float64 {
	t := 0.0
	for _, x := range xs {
		t += x
	}
	return t
}
