package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// migrations are the schema, one step per entry. Version n is migrations[n-1]. Append only:
// never edit or reorder an entry that has shipped.
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE vms (
	id          TEXT PRIMARY KEY,
	name        TEXT NOT NULL UNIQUE,
	state       TEXT NOT NULL,
	image       TEXT NOT NULL,
	kernel      TEXT NOT NULL,
	vmm         TEXT NOT NULL,
	accel       TEXT NOT NULL,
	vcpu        INTEGER NOT NULL,
	memory_mib  INTEGER NOT NULL,
	disk_bytes  INTEGER NOT NULL,
	dir         TEXT NOT NULL,
	auto_remove INTEGER NOT NULL,
	spec        TEXT,
	runtime     TEXT,
	last_error  TEXT NOT NULL,
	created_at  TEXT NOT NULL,
	updated_at  TEXT NOT NULL
) STRICT;
CREATE INDEX vms_created_at ON vms (created_at);

CREATE TABLE images (
	name       TEXT PRIMARY KEY,
	dir        TEXT NOT NULL,
	manifest   TEXT,
	size_bytes INTEGER NOT NULL,
	created_at TEXT NOT NULL
) STRICT;

CREATE TABLE kernels (
	name       TEXT PRIMARY KEY,
	release    TEXT NOT NULL,
	dir        TEXT NOT NULL,
	manifest   TEXT,
	created_at TEXT NOT NULL
) STRICT;
`,
	// 2: guest networking: each VM's address on the bridge (unique while the VM exists) and
	// whether its traffic is masqueraded out of the host.
	`
ALTER TABLE vms ADD COLUMN ip TEXT NOT NULL DEFAULT '';
ALTER TABLE vms ADD COLUMN nat INTEGER NOT NULL DEFAULT 1;
CREATE UNIQUE INDEX vms_ip ON vms (ip) WHERE ip != '';
`,
	// 3: image versions. An image name points at its current version; every version stays while
	// a VM was created from it (vms.image is "name@version"), so rebuilding or re-pulling an
	// image never changes the lower layer under a VM's disk. Images gain their default kernel
	// and where they came from. Existing images become their own first version, and the VMs on
	// them are pinned to it.
	`
CREATE TABLE image_versions (
	name       TEXT NOT NULL,
	version    TEXT NOT NULL,
	dir        TEXT NOT NULL,
	manifest   TEXT,
	size_bytes INTEGER NOT NULL,
	created_at TEXT NOT NULL,
	PRIMARY KEY (name, version)
) STRICT;
ALTER TABLE images ADD COLUMN version TEXT NOT NULL DEFAULT '';
ALTER TABLE images ADD COLUMN kernel TEXT NOT NULL DEFAULT '';
ALTER TABLE images ADD COLUMN source TEXT NOT NULL DEFAULT '';
UPDATE images SET version = COALESCE(
	CASE WHEN json_valid(manifest) THEN substr(json_extract(manifest, '$.rootfs_sha256'), 1, 12) END, 'legacy');
INSERT INTO image_versions (name, version, dir, manifest, size_bytes, created_at)
	SELECT name, version, dir, manifest, size_bytes, created_at FROM images;
UPDATE vms SET image = image || '@' || (SELECT version FROM images WHERE images.name = vms.image)
	WHERE instr(image, '@') = 0 AND image IN (SELECT name FROM images);
`,
	// 4: Debian rollback protection: the Date of the newest signed Release accepted from each
	// mirror and suite (fixed-width UTC text, so it orders as time), so an older one is refused.
	`
CREATE TABLE debian_releases (
	mirror      TEXT NOT NULL,
	suite       TEXT NOT NULL,
	newest_date TEXT NOT NULL,
	updated_at  TEXT NOT NULL,
	PRIMARY KEY (mirror, suite)
) STRICT;
`,
}

// SchemaVersion is the schema version this binary creates and understands.
func SchemaVersion() int { return len(migrations) }

// migrate brings db (the file at path) up to len(migs), one transaction per step, recording
// each applied version in schema_migrations. It fails if the database is newer than migs.
func migrate(ctx context.Context, db *sql.DB, path string, migs []string) error {
	const create = `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at TEXT NOT NULL
	) STRICT`
	if _, err := db.ExecContext(ctx, create); err != nil {
		return fmt.Errorf("database %s: create schema_migrations: %w", path, err)
	}
	for {
		done, err := migrateStep(ctx, db, path, migs)
		if err != nil || done {
			return err
		}
	}
}

// migrateStep applies the version after the database's current one, reading the current
// version inside the transaction so that two processes opening one database cannot both
// apply a step. done reports that the schema is up to date.
func migrateStep(ctx context.Context, db *sql.DB, path string, migs []string) (done bool, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("database %s: begin migration: %w", path, err)
	}
	defer tx.Rollback() // no-op after Commit

	var cur int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
		return false, fmt.Errorf("database %s: read schema version: %w", path, err)
	}
	if cur > len(migs) {
		return false, fmt.Errorf("database %s has schema version %d, but this banger only knows versions up to %d; "+
			"upgrade banger, or move the database aside to start afresh", path, cur, len(migs))
	}
	if cur == len(migs) {
		return true, nil
	}
	v := cur + 1
	if _, err := tx.ExecContext(ctx, migs[v-1]); err != nil {
		return false, fmt.Errorf("database %s: apply schema migration %d: %w", path, v, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
		v, formatTime(time.Now())); err != nil {
		return false, fmt.Errorf("database %s: record schema migration %d: %w", path, v, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("database %s: commit schema migration %d: %w", path, v, err)
	}
	return false, nil
}
