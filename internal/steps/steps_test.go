package steps

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// recorder builds steps that log what they do and undo.
type recorder struct{ log []string }

func (r *recorder) step(name string, fail bool) Step {
	return Step{
		Name: name,
		Do: func(context.Context) error {
			r.log = append(r.log, "do "+name)
			if fail {
				return errors.New(name + " broke")
			}
			return nil
		},
		Undo: func(context.Context) error {
			r.log = append(r.log, "undo "+name)
			return nil
		},
	}
}

func TestRunAllSucceed(t *testing.T) {
	var r recorder
	timings, err := Run(context.Background(), []Step{r.step("a", false), r.step("b", false)}, Hooks{})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if want := []string{"do a", "do b"}; !reflect.DeepEqual(r.log, want) {
		t.Errorf("log = %q, want %q (nothing undone on success)", r.log, want)
	}
	if len(timings) != 2 || timings[0].Name != "a" || timings[1].Name != "b" {
		t.Errorf("timings = %+v, want one per step in order", timings)
	}
}

func TestRunFailureUndoesCompletedStepsInReverse(t *testing.T) {
	var r recorder
	_, err := Run(context.Background(), []Step{r.step("a", false), r.step("b", false), r.step("c", true), r.step("d", false)}, Hooks{})
	want := []string{"do a", "do b", "do c", "undo b", "undo a"}
	if !reflect.DeepEqual(r.log, want) {
		t.Errorf("log = %q, want %q: the failed step is not undone, later steps never run", r.log, want)
	}
	var se *Error
	if !errors.As(err, &se) || se.Step != "c" || !strings.Contains(err.Error(), "c broke") {
		t.Errorf("err = %v, want *Error for step c carrying the root cause", err)
	}
}

func TestUndoFailureDoesNotHideRootCause(t *testing.T) {
	list := []Step{
		{Name: "a", Do: func(context.Context) error { return nil }, Undo: func(context.Context) error { return errors.New("undo exploded") }},
		{Name: "b", Do: func(context.Context) error { return errors.New("root cause") }},
	}
	_, err := Run(context.Background(), list, Hooks{})
	if err == nil || !strings.HasPrefix(err.Error(), "root cause") || !strings.Contains(err.Error(), "undo exploded") {
		t.Errorf("err = %v, want the root cause first and the undo failure mentioned", err)
	}
	if !errors.Is(err, err.(*Error).Err) {
		t.Errorf("errors.Is should reach the root cause")
	}
}

func TestBeforeHookInjectsFault(t *testing.T) {
	var r recorder
	inject := Hooks{Before: func(_ context.Context, name string) error {
		if name == "b" {
			return errors.New("injected")
		}
		return nil
	}}
	_, err := Run(context.Background(), []Step{r.step("a", false), r.step("b", false)}, inject)
	if want := []string{"do a", "undo a"}; !reflect.DeepEqual(r.log, want) {
		t.Errorf("log = %q, want %q: an injected fault stops the step before it runs", r.log, want)
	}
	if err == nil || !strings.Contains(err.Error(), "injected") {
		t.Errorf("err = %v, want the injected fault", err)
	}
}

func TestCancelledContextStopsBeforeNextStepAndUndoesStillRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var r recorder
	a := r.step("a", false)
	a.Do = func(context.Context) error { r.log = append(r.log, "do a"); cancel(); return nil }
	_, err := Run(ctx, []Step{a, r.step("b", false)}, Hooks{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if want := []string{"do a", "undo a"}; !reflect.DeepEqual(r.log, want) {
		t.Errorf("log = %q, want %q: undo runs even though the run's context is cancelled", r.log, want)
	}
}

func TestAfterHookSeesEveryStep(t *testing.T) {
	var seen []string
	h := Hooks{After: func(name string, d time.Duration, err error) {
		seen = append(seen, name)
		if d < 0 {
			t.Errorf("negative duration for %s", name)
		}
	}}
	var r recorder
	_, _ = Run(context.Background(), []Step{r.step("a", false), r.step("b", true)}, h)
	if want := []string{"a", "b"}; !reflect.DeepEqual(seen, want) {
		t.Errorf("After saw %q, want %q", seen, want)
	}
}
