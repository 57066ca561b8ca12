package vmservice

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/banger-dev/banger/internal/paths"
)

// The pause test hook holds the VM's lock: it must end with the operation's context (the
// client went away, the daemon stops), not sit out its ten minutes.
func TestPauseStepReturnsWhenCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		s := New(Options{Layout: paths.Layout{StateDir: dir}})
		before := s.hooks("dev", "", "vm.boot").Before
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- before(ctx, "vm.boot") }()
		synctest.Wait()
		select {
		case err := <-errc:
			t.Fatalf("the pause returned before its context ended: %v", err)
		default:
		}
		if b, err := os.ReadFile(filepath.Join(dir, "test-paused-at")); err != nil || string(b) != "vm.boot" {
			t.Errorf("marker = %q, %v; want the step's name", b, err)
		}
		cancel()
		start := time.Now()
		err := <-errc
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
		if waited := time.Since(start); waited != 0 {
			t.Errorf("the pause went on for %s after its context ended", waited)
		}
	})
}
