package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

func TestConcurrentCreatesWithDistinctNames(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.CreateVM(ctx, sampleVM(fmt.Sprintf("vm-%02d", i)))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("goroutine %d: CreateVM: %v", i, err)
		}
	}
	vms, err := s.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, v := range vms {
		ids[v.ID] = true
	}
	if len(vms) != n || len(ids) != n {
		t.Errorf("after %d concurrent creates: %d VMs with %d distinct ids, want %d", n, len(vms), len(ids), n)
	}
}

func TestConcurrentCreatesRacingOnOneName(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = s.CreateVM(ctx, sampleVM("contested"))
		}()
	}
	close(start)
	wg.Wait()
	won, taken := 0, 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case errors.Is(err, ErrNameTaken):
			taken++
		default:
			t.Errorf("goroutine %d: CreateVM = %v, want nil or ErrNameTaken", i, err)
		}
	}
	if won != 1 || taken != n-1 {
		t.Errorf("%d won and %d got ErrNameTaken, want 1 and %d", won, taken, n-1)
	}
	vms, err := s.FindVMs(ctx, "contested")
	if err != nil || len(vms) != 1 {
		t.Errorf("FindVMs(contested) = %d VMs, %v; want exactly 1", len(vms), err)
	}
}

func TestConcurrentMixedOperations(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n*4)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := sampleVM(fmt.Sprintf("m-%02d", i))
			if err := s.CreateVM(ctx, v); err != nil {
				errs <- err
				return
			}
			if err := s.SetVMState(ctx, v.ID, "running", ""); err != nil {
				errs <- err
			}
			if _, err := s.ListVMs(ctx); err != nil {
				errs <- err
			}
			if err := s.DeleteVM(ctx, v.ID); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
