package debian

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/store"
)

// A mirror that, after serving a Release, serves an older one — validly signed, within its
// Valid-Until (here it has none), as a replaying mirror would — is refused with ErrRollback;
// the same or a newer Release is accepted.
func TestArchiveRefusesRollback(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	f := newFakeArchive(t)
	now := time.Now().Truncate(time.Second)
	release := func(date time.Time) error {
		f.publish(releaseSpec{date: date})
		a := f.archive(t) // a fresh Archive fetches the Release again
		a.History = st
		_, err := a.Release(ctx)
		return err
	}
	if err := release(now.Add(-time.Hour)); err != nil {
		t.Fatalf("first Release: %v", err)
	}
	yearsAgo := now.AddDate(-3, 0, 0)
	err = release(yearsAgo)
	if !errors.Is(err, ErrRollback) {
		t.Fatalf("Release signed three years ago after a recent one: %v; want ErrRollback", err)
	}
	if !strings.Contains(err.Error(), "another mirror") || !strings.Contains(err.Error(), "InRelease") {
		t.Errorf("rollback error %q should name the InRelease and say what to do", err)
	}
	if err := release(now.Add(-time.Hour)); err != nil {
		t.Fatalf("the same Release again: %v", err)
	}
	if err := release(now.Add(-time.Minute)); err != nil {
		t.Fatalf("a newer Release: %v", err)
	}
	if err := release(now.Add(-time.Hour)); !errors.Is(err, ErrRollback) {
		t.Fatalf("the previous Release after a newer one: %v; want ErrRollback", err)
	}
	// Without history (as before any pull) the old one verifies: the record is what refuses it.
	f.publish(releaseSpec{date: yearsAgo})
	if _, err := f.archive(t).Release(ctx); err != nil {
		t.Fatalf("old Release without history: %v", err)
	}
}

func TestArchiveRefusesFutureRelease(t *testing.T) {
	f := newFakeArchive(t)
	f.publish(releaseSpec{date: time.Now().Add(MaxClockSkew + time.Hour)})
	_, err := f.archive(t).Release(context.Background())
	if !errors.Is(err, ErrFutureRelease) || !strings.Contains(err.Error(), "clock") {
		t.Fatalf("Release dated beyond MaxClockSkew: %v; want ErrFutureRelease mentioning the clock", err)
	}
	f.publish(releaseSpec{date: time.Now().Add(time.Hour)})
	if _, err := f.archive(t).Release(context.Background()); err != nil {
		t.Fatalf("Release dated an hour ahead (clock skew): %v", err)
	}
}
