package guestagent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// hungUpFIFO returns the read end of a FIFO whose only writer has come and gone: its poll
// reports EPOLLHUP, as a virtio-serial port's does while its host side is closed, until a
// writer opens it again (openHost), which wakes its pollers as a host's arrival does.
func hungUpFIFO(t *testing.T) (*os.File, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "port")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	return r, path
}

// openHost opens the FIFO's write end and writes a line, as a host that connects sends its
// first SYNC.
func openHost(t *testing.T, path string) {
	t.Helper()
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	if _, err := w.WriteString("BANGER-SYNC 0\n"); err != nil {
		t.Fatal(err)
	}
}

type awaited struct {
	connected bool
	err       error
	after     time.Duration
}

func startAwait(ctx context.Context, f *os.File, wait time.Duration) <-chan awaited {
	done := make(chan awaited, 1)
	t0 := time.Now()
	go func() {
		ok, err := awaitHost(ctx, f, wait)
		done <- awaited{ok, err, time.Since(t0)}
	}()
	return done
}

func TestAwaitHostSleepsUntilTheOtherSideOpens(t *testing.T) {
	r, path := hungUpFIFO(t)
	done := startAwait(context.Background(), r, time.Minute)
	select {
	case a := <-done:
		t.Fatalf("awaitHost returned with nobody on the other side: %+v", a)
	case <-time.After(300 * time.Millisecond):
	}
	openHost(t, path)
	select {
	case a := <-done:
		if !a.connected || a.err != nil {
			t.Fatalf("awaitHost = %v, %v after the other side opened; want true, nil", a.connected, a.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("awaitHost did not wake when the other side opened")
	}
}

func TestAwaitHostReturnsAtOnceWhenTheHostIsThere(t *testing.T) {
	r, path := hungUpFIFO(t)
	openHost(t, path)
	a := <-startAwait(context.Background(), r, time.Minute)
	if !a.connected || a.err != nil || a.after > 5*time.Second {
		t.Fatalf("awaitHost with a writer already there = %+v; want true at once", a)
	}
}

func TestAwaitHostGivesUpAfterItsWait(t *testing.T) {
	r, _ := hungUpFIFO(t)
	a := <-startAwait(context.Background(), r, 200*time.Millisecond)
	if a.connected || a.err != nil {
		t.Fatalf("awaitHost with nobody there = %v, %v; want false, nil", a.connected, a.err)
	}
	if a.after < 200*time.Millisecond {
		t.Fatalf("awaitHost gave up after %s, before its wait of 200ms", a.after)
	}
}

func TestAwaitHostEndsWithItsContext(t *testing.T) {
	r, _ := hungUpFIFO(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := startAwait(ctx, r, time.Minute)
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case a := <-done:
		if a.connected || !errors.Is(a.err, context.Canceled) {
			t.Fatalf("awaitHost after its context ended = %v, %v; want false, context.Canceled", a.connected, a.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("awaitHost went on waiting after its context ended")
	}
}
