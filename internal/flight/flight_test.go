package flight

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/progress"
)

func TestConcurrentCallersShareOneRun(t *testing.T) {
	var g Group[int]
	var runs atomic.Int32
	release := make(chan struct{})
	fn := func(ctx context.Context, p progress.Func) (int, error) {
		runs.Add(1)
		<-release
		p.Stage("work", "halfway")
		return 7, nil
	}
	var wg sync.WaitGroup
	var seen atomic.Int32
	results := make([]int, 5)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			v, _, err := g.Do(context.Background(), "k", func(progress.Update) { seen.Add(1) }, fn)
			if err != nil {
				t.Errorf("Do: %v", err)
			}
			results[i] = v
		}(i)
	}
	time.Sleep(50 * time.Millisecond) // let every caller join the run
	close(release)
	wg.Wait()
	if runs.Load() != 1 {
		t.Errorf("fn ran %d times, want once for concurrent callers", runs.Load())
	}
	for i, v := range results {
		if v != 7 {
			t.Errorf("caller %d got %d, want 7", i, v)
		}
	}
	if seen.Load() != 5 {
		t.Errorf("progress reached %d callers, want all 5", seen.Load())
	}
}

func TestLeavingCallerDoesNotCancelOthers(t *testing.T) {
	var g Group[string]
	started := make(chan struct{})
	release := make(chan struct{})
	fn := func(ctx context.Context, p progress.Func) (string, error) {
		close(started)
		select {
		case <-release:
			return "built", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	impatient, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, _, err := g.Do(impatient, "k", nil, fn); errc <- err }()
	<-started
	valc := make(chan string, 1)
	go func() { v, _, _ := g.Do(context.Background(), "k", nil, fn); valc <- v }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("impatient caller: err = %v, want context.Canceled", err)
	}
	close(release)
	if v := <-valc; v != "built" {
		t.Errorf("patient caller got %q, want the run to finish for it", v)
	}
}

func TestLastCallerLeavingCancelsTheRun(t *testing.T) {
	var g Group[int]
	cancelled := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(20 * time.Millisecond)
		cancel()
	}()
	_, _, err := g.Do(ctx, "k", nil, func(ctx context.Context, p progress.Func) (int, error) {
		<-ctx.Done()
		close(cancelled)
		return 0, ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	select {
	case <-cancelled:
	case <-time.After(2 * time.Second):
		t.Fatal("the run was not cancelled after its only caller left")
	}
}

func TestSequentialCallsRunAgain(t *testing.T) {
	var g Group[int]
	n := 0
	fn := func(context.Context, progress.Func) (int, error) { n++; return n, nil }
	a, _, _ := g.Do(context.Background(), "k", nil, fn)
	b, _, _ := g.Do(context.Background(), "k", nil, fn)
	if a != 1 || b != 2 {
		t.Errorf("got %d then %d, want a fresh run for a later call", a, b)
	}
}
