package flight

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/banger-dev/banger/internal/progress"
)

// The tests run in synctest bubbles: synctest.Wait returns once every goroutine of the test
// is blocked, so "every caller has joined" and "the run has reacted" are facts, not guesses
// made by sleeping.

func TestConcurrentCallersShareOneRun(t *testing.T) {
	synctest.Test(t, testConcurrentCallersShareOneRun)
}

func testConcurrentCallersShareOneRun(t *testing.T) {
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
	synctest.Wait() // every caller has joined the run and waits for it
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
	synctest.Test(t, testLeavingCallerDoesNotCancelOthers)
}

func testLeavingCallerDoesNotCancelOthers(t *testing.T) {
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
	synctest.Wait() // the patient caller has joined the run
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
	synctest.Test(t, testLastCallerLeavingCancelsTheRun)
}

func testLastCallerLeavingCancelsTheRun(t *testing.T) {
	var g Group[int]
	started := make(chan struct{})
	cancelled := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	_, _, err := g.Do(ctx, "k", nil, func(ctx context.Context, p progress.Func) (int, error) {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return 0, ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	synctest.Wait() // the run has reacted to its caller leaving, if it ever will
	select {
	case <-cancelled:
	default:
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

// The last caller to leave returns only once the run it cancelled has ended: the run's undo
// is over before Do returns, so nothing outlives the callers that wanted it.
func TestLastCallerWaitsForTheCancelledRunToEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g Group[int]
		var undone atomic.Bool
		ctx, cancel := context.WithCancel(context.Background())
		started := make(chan struct{})
		go func() {
			<-started
			cancel()
		}()
		_, _, err := g.Do(ctx, "k", nil, func(ctx context.Context, p progress.Func) (int, error) {
			close(started)
			<-ctx.Done()
			time.Sleep(time.Second) // the undo takes a while
			undone.Store(true)
			return 0, ctx.Err()
		})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
		if !undone.Load() {
			t.Error("Do returned before the run it cancelled had ended")
		}
	})
}
