// Package steps runs a sequence of named steps, each with an undo. When a step fails, the
// steps that succeeded are undone in reverse order and the failing step's error is returned
// as the root cause; undo failures are reported alongside it, never instead of it. Every step
// is timed, so the caller can report where the time went.
package steps

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Step is one unit of work. Undo may be nil when there is nothing to take back.
type Step struct {
	Name string
	Do   func(ctx context.Context) error
	Undo func(ctx context.Context) error
}

// Timing is how long one step took.
type Timing struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration"`
}

// Error is a failed run: the step that failed, its error, and any undo that failed as well.
type Error struct {
	Step       string
	Err        error
	UndoErrors []error
}

func (e *Error) Error() string {
	msg := e.Err.Error()
	if len(e.UndoErrors) > 0 {
		msg += fmt.Sprintf(" (and cleanup failed: %v)", errors.Join(e.UndoErrors...))
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Hooks observe a run. Any field may be nil.
type Hooks struct {
	// Before is called before a step starts, with the run's context; a non-nil error fails
	// that step (tests inject faults with it). It must return when ctx is done.
	Before func(ctx context.Context, name string) error
	// After is called when a step has finished, with its duration and error.
	After func(name string, d time.Duration, err error)
}

// undoTimeout bounds the whole undo phase; it runs on a fresh context because the run's own
// context is often the reason for the failure (cancellation).
const undoTimeout = 2 * time.Minute

// Run executes steps in order. On failure it undoes the completed steps in reverse and
// returns an *Error. It returns the timings of the steps that ran.
func Run(ctx context.Context, list []Step, h Hooks) ([]Timing, error) {
	var timings []Timing
	for i, s := range list {
		start := time.Now()
		var err error
		if h.Before != nil {
			err = h.Before(ctx, s.Name)
		}
		if err == nil {
			err = ctx.Err()
		}
		if err == nil {
			err = s.Do(ctx)
		}
		d := time.Since(start)
		timings = append(timings, Timing{Name: s.Name, Duration: d})
		if h.After != nil {
			h.After(s.Name, d, err)
		}
		if err != nil {
			return timings, &Error{Step: s.Name, Err: err, UndoErrors: Undo(list[:i])}
		}
	}
	return timings, nil
}

// Undo takes back the given (completed) steps in reverse order and returns the errors of the
// undos that failed.
func Undo(done []Step) []error {
	ctx, cancel := context.WithTimeout(context.Background(), undoTimeout)
	defer cancel()
	var errs []error
	for i := len(done) - 1; i >= 0; i-- {
		if done[i].Undo == nil {
			continue
		}
		if err := done[i].Undo(ctx); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", done[i].Name, err))
		}
	}
	return errs
}
