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

// Image is an installed root filesystem image shared read-only by VMs: its current version.
type Image struct {
	Name      string          // primary key
	Version   string          // the current version (see ImageVersion)
	Dir       string          // the current version's directory
	Manifest  json.RawMessage // nil is stored as NULL
	SizeBytes int64
	Kernel    string    // the kernel VMs of this image boot unless told otherwise; "" for the default
	Source    string    // where it came from ("recipe:…", "oci:…", "bundle:…", "register:…"); "" for a recipe build
	CreatedAt time.Time // UTC
}

// ImageVersion is one build, pull or import of an image. Versions stay while VMs use them.
type ImageVersion struct {
	Name      string
	Version   string
	Dir       string
	Manifest  json.RawMessage
	SizeBytes int64
	CreatedAt time.Time // UTC
}

// putImageVersionSQL records a version of an image, or updates its directory, manifest and size.
const putImageVersionSQL = `INSERT INTO image_versions (name, version, dir, manifest, size_bytes, created_at)
	VALUES (?, ?, ?, ?, ?, ?)
	ON CONFLICT (name, version) DO UPDATE SET dir = excluded.dir, manifest = excluded.manifest,
		size_bytes = excluded.size_bytes`

// PutImage records img.Version as a version of the image and makes it the current one,
// inserting the image or replacing the current version of an image of the same name; other
// versions stay. It sets img.CreatedAt to now when zero.
func (s *Store) PutImage(ctx context.Context, img *Image) error {
	if img.Name == "" {
		return errors.New("put image: empty name")
	}
	manifest, err := jsonArg("manifest", img.Manifest)
	if err != nil {
		return fmt.Errorf("put image %q: %w", img.Name, err)
	}
	if img.Version == "" {
		return fmt.Errorf("put image %q: empty version", img.Name)
	}
	created := createdOrNow(img.CreatedAt)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("put image %q: %w", img.Name, err)
	}
	defer tx.Rollback() // no-op after Commit
	_, err = tx.ExecContext(ctx, putImageVersionSQL,
		img.Name, img.Version, img.Dir, manifest, img.SizeBytes, formatTime(created))
	if err == nil {
		_, err = tx.ExecContext(ctx, `INSERT INTO images (name, version, dir, manifest, size_bytes, kernel, source, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET version = excluded.version, dir = excluded.dir,
				manifest = excluded.manifest, size_bytes = excluded.size_bytes, kernel = excluded.kernel,
				source = excluded.source, created_at = excluded.created_at`,
			img.Name, img.Version, img.Dir, manifest, img.SizeBytes, img.Kernel, img.Source, formatTime(created))
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		return fmt.Errorf("put image %q: %w", img.Name, err)
	}
	img.CreatedAt = created
	return nil
}

// PutImageVersion records (or updates the directory and manifest of) one version of an
// image without making it current.
func (s *Store) PutImageVersion(ctx context.Context, v *ImageVersion) error {
	if v.Name == "" || v.Version == "" {
		return fmt.Errorf("put image %q version %q: empty name or version", v.Name, v.Version)
	}
	manifest, err := jsonArg("manifest", v.Manifest)
	if err != nil {
		return fmt.Errorf("put image %q version %q: %w", v.Name, v.Version, err)
	}
	created := createdOrNow(v.CreatedAt)
	_, err = s.db.ExecContext(ctx, putImageVersionSQL,
		v.Name, v.Version, v.Dir, manifest, v.SizeBytes, formatTime(created))
	if err != nil {
		return fmt.Errorf("put image %q version %q: %w", v.Name, v.Version, err)
	}
	v.CreatedAt = created
	return nil
}

// GetImage returns the image named name, or an error matching failure.NotFound.
func (s *Store) GetImage(ctx context.Context, name string) (Image, error) {
	imgs, err := s.queryImages(ctx, `WHERE name = ?`, name)
	if err == nil && len(imgs) == 0 {
		err = failure.NotFound
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

// DeleteImage removes the image named name and the records of all its versions, or returns an
// error matching failure.NotFound. It does not check whether VMs still use the image.
func (s *Store) DeleteImage(ctx context.Context, name string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete image %q: %w", name, err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM images WHERE name = ?`, name)
	if err == nil {
		err = notFoundIfNone(res)
	}
	if err == nil {
		_, err = tx.ExecContext(ctx, `DELETE FROM image_versions WHERE name = ?`, name)
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		return fmt.Errorf("delete image %q: %w", name, err)
	}
	return nil
}

// ImageVersions returns the recorded versions of the image named name (all images when name
// is ""), newest first.
func (s *Store) ImageVersions(ctx context.Context, name string) ([]ImageVersion, error) {
	where, args := "", []any{}
	if name != "" {
		where, args = "WHERE name = ?", []any{name}
	}
	rows, err := s.db.QueryContext(ctx, `SELECT name, version, dir, manifest, size_bytes, created_at
		FROM image_versions `+where+` ORDER BY name, created_at DESC, version`, args...)
	if err != nil {
		return nil, fmt.Errorf("list image versions: %w", err)
	}
	return scanAll(rows, scanImageVersion)
}

func scanImageVersion(rows *sql.Rows) (v ImageVersion, err error) {
	var manifest sql.NullString
	var created string
	if err = rows.Scan(&v.Name, &v.Version, &v.Dir, &manifest, &v.SizeBytes, &created); err != nil {
		return ImageVersion{}, err
	}
	v.Manifest = jsonValue(manifest)
	if v.CreatedAt, err = parseTime("created_at", created); err != nil {
		return ImageVersion{}, fmt.Errorf("image %q version %q: %w", v.Name, v.Version, err)
	}
	return v, nil
}

// GetImageVersion returns one version of an image, or an error matching failure.NotFound.
func (s *Store) GetImageVersion(ctx context.Context, name, version string) (ImageVersion, error) {
	vs, err := s.ImageVersions(ctx, name)
	if err != nil {
		return ImageVersion{}, err
	}
	for _, v := range vs {
		if v.Version == version {
			return v, nil
		}
	}
	return ImageVersion{}, fmt.Errorf("image %q version %q: %w", name, version, failure.NotFound)
}

// DeleteImageVersion forgets one version of an image; the current version cannot be deleted
// this way (delete the image instead).
func (s *Store) DeleteImageVersion(ctx context.Context, name, version string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM image_versions WHERE name = ? AND version = ?
		AND NOT EXISTS (SELECT 1 FROM images WHERE images.name = ? AND images.version = ?)`, name, version, name, version)
	if err == nil {
		err = notFoundIfNone(res)
	}
	if err != nil {
		if errors.Is(err, failure.NotFound) {
			return fmt.Errorf("image %q version %q is not a deletable version: %w", name, version, err)
		}
		return fmt.Errorf("delete image %q version %q: %w", name, version, err)
	}
	return nil
}

func (s *Store) queryImages(ctx context.Context, where string, args ...any) ([]Image, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, version, dir, manifest, size_bytes, kernel, source, created_at
		FROM images `+where+` ORDER BY name`, args...)
	if err != nil {
		return nil, err
	}
	return scanAll(rows, scanImage)
}

func scanImage(rows *sql.Rows) (img Image, err error) {
	var manifest sql.NullString
	var created string
	if err = rows.Scan(&img.Name, &img.Version, &img.Dir, &manifest, &img.SizeBytes, &img.Kernel, &img.Source, &created); err != nil {
		return Image{}, err
	}
	img.Manifest = jsonValue(manifest)
	if img.CreatedAt, err = parseTime("created_at", created); err != nil {
		return Image{}, fmt.Errorf("image %q: %w", img.Name, err)
	}
	return img, nil
}
