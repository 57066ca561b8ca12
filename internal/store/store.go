// Package store owns banger's persistent state: one SQLite database (modernc.org/sqlite, pure
// Go) holding VMs, images and kernels, and the schema migrations that shape it. A Store is
// safe for concurrent use by many goroutines.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Sentinel errors; test with errors.Is. A record that is not there (no record has that name
// or id) is failure.NotFound.
var (
	// ErrNameTaken: another VM already has that name.
	ErrNameTaken = errors.New("a vm with that name already exists")
	// ErrIPTaken: another VM already has that address.
	ErrIPTaken = errors.New("another vm already has that address")
)

// busyTimeout is how long a statement waits for another connection's write lock.
const busyTimeout = 5 * time.Second

// Store is an open state database.
type Store struct {
	db   *sql.DB
	path string
}

// Open opens (creating if needed, with its parent directory) the database at path, enables
// WAL, foreign keys and a busy timeout, and applies pending migrations. It refuses a
// database whose schema is newer than this binary knows.
func Open(path string) (*Store, error) {
	return open(context.Background(), path, migrations)
}

func open(ctx context.Context, path string, migs []string) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("open database %s: %w", abs, err)
	}
	db, err := sql.Open("sqlite", dsn(abs))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", abs, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", abs, err)
	}
	if err := migrate(ctx, db, abs, migs); err != nil {
		db.Close()
		return nil, err
	}
	return &Store{db: db, path: abs}, nil
}

// dsn builds a file: URI (so any byte in the path is escaped) with the per-connection settings.
// _txlock=immediate makes every transaction take the write lock up front, which avoids
// SQLITE_BUSY on lock upgrade when transactions race.
func dsn(path string) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	u := url.URL{Scheme: "file", Path: path, RawQuery: q.Encode()}
	return u.String()
}

// Path is the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// Close closes the database. The Store must not be used afterwards.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close database %s: %w", s.path, err)
	}
	return nil
}
