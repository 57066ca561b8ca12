package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Image is a built root filesystem image shared read-only by VMs.
type Image struct {
	Name      string // primary key
	Dir       string
	Manifest  json.RawMessage // nil is stored as NULL
	SizeBytes int64
	CreatedAt time.Time // UTC
}

// PutImage inserts img, or replaces the image of the same name. It sets img.CreatedAt to now
// when zero.
func (s *Store) PutImage(ctx context.Context, img *Image) error {
	if img.Name == "" {
		return errors.New("put image: empty name")
	}
	manifest, err := jsonArg("manifest", img.Manifest)
	if err != nil {
		return fmt.Errorf("put image %q: %w", img.Name, err)
	}
	created := img.CreatedAt.UTC().Round(0)
	if created.IsZero() {
		created = now()
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO images (name, dir, manifest, size_bytes, created_at)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET dir = excluded.dir, manifest = excluded.manifest,
			size_bytes = excluded.size_bytes, created_at = excluded.created_at`,
		img.Name, img.Dir, manifest, img.SizeBytes, formatTime(created))
	if err != nil {
		return fmt.Errorf("put image %q: %w", img.Name, err)
	}
	img.CreatedAt = created
	return nil
}

// GetImage returns the image named name, or an error matching ErrNotFound.
func (s *Store) GetImage(ctx context.Context, name string) (Image, error) {
	imgs, err := s.queryImages(ctx, `WHERE name = ?`, name)
	if err == nil && len(imgs) == 0 {
		err = ErrNotFound
	}
	if err != nil {
		return Image{}, fmt.Errorf("image %q: %w", name, err)
	}
	return imgs[0], nil
}

// ListImages returns every image, ordered by name.
func (s *Store) ListImages(ctx context.Context) ([]Image, error) {
	imgs, err := s.queryImages(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return imgs, nil
}

// DeleteImage removes the image named name, or returns an error matching ErrNotFound. It does
// not check whether VMs still use the image.
func (s *Store) DeleteImage(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM images WHERE name = ?`, name)
	if err == nil {
		err = notFoundIfNone(res)
	}
	if err != nil {
		return fmt.Errorf("delete image %q: %w", name, err)
	}
	return nil
}

func (s *Store) queryImages(ctx context.Context, where string, args ...any) ([]Image, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, dir, manifest, size_bytes, created_at
		FROM images `+where+` ORDER BY name`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var imgs []Image
	for rows.Next() {
		var img Image
		var manifest sql.NullString
		var created string
		if err := rows.Scan(&img.Name, &img.Dir, &manifest, &img.SizeBytes, &created); err != nil {
			return nil, err
		}
		img.Manifest = jsonValue(manifest)
		if img.CreatedAt, err = parseTime("created_at", created); err != nil {
			return nil, fmt.Errorf("image %q: %w", img.Name, err)
		}
		imgs = append(imgs, img)
	}
	return imgs, rows.Err()
}
