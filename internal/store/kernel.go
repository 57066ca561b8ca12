package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/banger-dev/banger/internal/failure"
)

// Kernel is a pulled guest kernel (and its modules).
type Kernel struct {
	Name      string // primary key
	Release   string // kernel release, as in uname -r
	Dir       string
	Manifest  json.RawMessage // nil is stored as NULL
	CreatedAt time.Time       // UTC
}

// PutKernel inserts k, or replaces the kernel of the same name. It sets k.CreatedAt to now
// when zero.
func (s *Store) PutKernel(ctx context.Context, k *Kernel) error {
	if k.Name == "" {
		return errors.New("put kernel: empty name")
	}
	manifest, err := jsonArg("manifest", k.Manifest)
	if err != nil {
		return fmt.Errorf("put kernel %q: %w", k.Name, err)
	}
	created := createdOrNow(k.CreatedAt)
	_, err = s.db.ExecContext(ctx, `INSERT INTO kernels (name, release, dir, manifest, created_at)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET release = excluded.release, dir = excluded.dir,
			manifest = excluded.manifest, created_at = excluded.created_at`,
		k.Name, k.Release, k.Dir, manifest, formatTime(created))
	if err != nil {
		return fmt.Errorf("put kernel %q: %w", k.Name, err)
	}
	k.CreatedAt = created
	return nil
}

// GetKernel returns the kernel named name, or an error matching failure.NotFound.
func (s *Store) GetKernel(ctx context.Context, name string) (Kernel, error) {
	ks, err := s.queryKernels(ctx, `WHERE name = ?`, name)
	if err == nil && len(ks) == 0 {
		err = failure.NotFound
	}
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel %q: %w", name, err)
	}
	return ks[0], nil
}

// ListKernels returns every kernel, ordered by name.
func (s *Store) ListKernels(ctx context.Context) ([]Kernel, error) {
	ks, err := s.queryKernels(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list kernels: %w", err)
	}
	return ks, nil
}

// DeleteKernel removes the kernel named name, or returns an error matching failure.NotFound.
// It does not check whether VMs still use the kernel.
func (s *Store) DeleteKernel(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM kernels WHERE name = ?`, name)
	if err == nil {
		err = notFoundIfNone(res)
	}
	if err != nil {
		return fmt.Errorf("delete kernel %q: %w", name, err)
	}
	return nil
}

func (s *Store) queryKernels(ctx context.Context, where string, args ...any) ([]Kernel, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, release, dir, manifest, created_at
		FROM kernels `+where+` ORDER BY name`, args...)
	if err != nil {
		return nil, err
	}
	return scanAll(rows, scanKernel)
}

func scanKernel(rows *sql.Rows) (k Kernel, err error) {
	var manifest sql.NullString
	var created string
	if err = rows.Scan(&k.Name, &k.Release, &k.Dir, &manifest, &created); err != nil {
		return Kernel{}, err
	}
	k.Manifest = jsonValue(manifest)
	if k.CreatedAt, err = parseTime("created_at", created); err != nil {
		return Kernel{}, fmt.Errorf("kernel %q: %w", k.Name, err)
	}
	return k, nil
}

// Helpers shared by the image and kernel records.

// createdOrNow is a creation time to store: t in UTC without a monotonic reading, or now when
// t is zero.
func createdOrNow(t time.Time) time.Time {
	if t = t.UTC().Round(0); t.IsZero() {
		return now()
	}
	return t
}

// scanAll scans every row with scan and closes rows.
func scanAll[T any](rows *sql.Rows, scan func(*sql.Rows) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
