package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

func TestDebianReleasesOnlyMoveForward(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const mirror, suite = "http://deb.example/debian", "bookworm"
	if _, ok, err := s.NewestDebianRelease(ctx, mirror, suite); ok || err != nil {
		t.Fatalf("fresh store: ok=%v err=%v; want nothing recorded", ok, err)
	}
	newer := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	older := newer.Add(-30 * 24 * time.Hour)
	for _, d := range []time.Time{newer, older} {
		if err := s.RecordDebianRelease(ctx, mirror, suite, d); err != nil {
			t.Fatal(err)
		}
	}
	got, ok, err := s.NewestDebianRelease(ctx, mirror, suite)
	if err != nil || !ok || !got.Equal(newer) {
		t.Fatalf("NewestDebianRelease = %v, %v, %v; want %v (an older date must not replace it)", got, ok, err, newer)
	}
	if _, ok, _ := s.NewestDebianRelease(ctx, mirror, "trixie"); ok {
		t.Fatal("another suite shares the record")
	}
}
