package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// NewestDebianRelease returns the Date of the newest signed Debian Release accepted from
// mirror and suite; ok is false when none was recorded. (It implements debian.ReleaseHistory
// with RecordDebianRelease.)
func (s *Store) NewestDebianRelease(ctx context.Context, mirror, suite string) (time.Time, bool, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT newest_date FROM debian_releases WHERE mirror = ? AND suite = ?`, mirror, suite).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("debian release of %s %s: %w", mirror, suite, err)
	}
	t, err := parseTime("newest_date", v)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("debian release of %s %s: %w", mirror, suite, err)
	}
	return t, true, nil
}

// RecordDebianRelease records date as the newest Release accepted from mirror and suite,
// unless a later one is recorded already; the check and the write are one statement, so
// concurrent pulls cannot move it backwards.
func (s *Store) RecordDebianRelease(ctx context.Context, mirror, suite string, date time.Time) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO debian_releases (mirror, suite, newest_date, updated_at)
		VALUES (?, ?, ?, ?)
		ON CONFLICT (mirror, suite) DO UPDATE SET
			newest_date = max(newest_date, excluded.newest_date), updated_at = excluded.updated_at`,
		mirror, suite, formatTime(date), formatTime(now()))
	if err != nil {
		return fmt.Errorf("record debian release of %s %s: %w", mirror, suite, err)
	}
	return nil
}
