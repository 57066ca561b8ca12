package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func openTest(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state", "banger.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func schemaVersions(t *testing.T, db *sql.DB) []int {
	t.Helper()
	rows, err := db.Query(`SELECT version, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var vs []int
	for rows.Next() {
		var v int
		var at string
		if err := rows.Scan(&v, &at); err != nil {
			t.Fatal(err)
		}
		if _, err := parseTime("applied_at", at); err != nil {
			t.Errorf("version %d: %v", v, err)
		}
		vs = append(vs, v)
	}
	return vs
}

func TestOpenMigratesEmptyDatabase(t *testing.T) {
	s := openTest(t)
	got := schemaVersions(t, s.db)
	if len(got) != SchemaVersion() || got[len(got)-1] != SchemaVersion() {
		t.Errorf("schema_migrations versions = %v, want 1..%d", got, SchemaVersion())
	}
	for _, table := range []string{"vms", "images", "kernels"} {
		var n int
		if err := s.db.QueryRow(`SELECT count(*) FROM ` + table).Scan(&n); err != nil {
			t.Errorf("table %s: %v", table, err)
		}
	}
}

func TestOpenSetsPragmas(t *testing.T) {
	s := openTest(t)
	var mode string
	var fk, busy int
	if err := s.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if err := s.db.QueryRow(`PRAGMA foreign_keys`).Scan(&fk); err != nil {
		t.Fatal(err)
	}
	if err := s.db.QueryRow(`PRAGMA busy_timeout`).Scan(&busy); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" || fk != 1 || busy != 5000 {
		t.Errorf("journal_mode, foreign_keys, busy_timeout = %s, %d, %d; want wal, 1, 5000", mode, fk, busy)
	}
}

func TestReopenIsIdempotentAndKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v := &VM{Name: "keep"}
	if err := s.CreateVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = Open(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if got := schemaVersions(t, s.db); len(got) != SchemaVersion() {
		t.Errorf("after reopen schema_migrations = %v, want exactly one row per version up to %d", got, SchemaVersion())
	}
	if _, err := s.GetVM(ctx, "keep"); err != nil {
		t.Errorf("GetVM after reopen: %v", err)
	}
}

func TestMigrationsApplyInOrderAndIncrementally(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	steps := []string{
		`CREATE TABLE a (x INTEGER) STRICT`,
		`ALTER TABLE a ADD COLUMN y TEXT; CREATE TABLE b (z TEXT) STRICT`,
	}
	s, err := open(ctx, path, steps[:1])
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = open(ctx, path, steps)
	if err != nil {
		t.Fatalf("open with a new migration: %v", err)
	}
	defer s.Close()
	if got := schemaVersions(t, s.db); len(got) != 2 {
		t.Errorf("versions = %v, want [1 2]", got)
	}
	if _, err := s.db.Exec(`INSERT INTO a (x, y) VALUES (1, 'one'); INSERT INTO b (z) VALUES ('b')`); err != nil {
		t.Errorf("second migration not applied: %v", err)
	}
}

func TestFailedMigrationRollsBack(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	steps := []string{
		`CREATE TABLE a (x INTEGER) STRICT`,
		`CREATE TABLE c (x INTEGER) STRICT; THIS IS NOT SQL`,
	}
	_, err := open(ctx, path, steps)
	if err == nil || !strings.Contains(err.Error(), "apply schema migration 2") || !strings.Contains(err.Error(), path) {
		t.Fatalf("open = %v, want an error naming %s and migration 2", err, path)
	}
	s, err := open(ctx, path, steps[:1])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := schemaVersions(t, s.db); len(got) != 1 {
		t.Errorf("versions = %v, want [1]", got)
	}
	if _, err := s.db.Exec(`SELECT * FROM c`); err == nil {
		t.Errorf("table c exists; the failed migration was not rolled back")
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	future := SchemaVersion() + 1
	if _, err := s.db.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, future, formatTime(time.Now())); err != nil {
		t.Fatal(err)
	}
	s.Close()

	_, err = Open(path)
	if err == nil {
		t.Fatal("Open succeeded on a database from a newer banger")
	}
	want := "database " + path + " has schema version " + strconv.Itoa(future) +
		", but this banger only knows versions up to " + strconv.Itoa(SchemaVersion()) +
		"; upgrade banger, or move the database aside to start afresh"
	if err.Error() != want {
		t.Errorf("Open error\n got: %s\nwant: %s", err, want)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(dir) // a directory is not a database
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("Open(directory) = %v, want an error naming %s", err, dir)
	}
}

func TestOpenPathWithSpecialCharacters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "we?ird #dir %20", "banger.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	defer s.Close()
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	if err := s.CreateVM(context.Background(), &VM{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at %s: %v", path, err)
	}
}

func TestJSONColumnsRejectInvalidJSON(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	err := s.CreateVM(ctx, &VM{Name: "bad", Spec: json.RawMessage(`{nope`)})
	if err == nil || !strings.Contains(err.Error(), `create vm "bad": spec is not valid JSON`) {
		t.Errorf("CreateVM with bad spec = %v, want a JSON error", err)
	}
	err = s.PutImage(ctx, &Image{Name: "i", Manifest: json.RawMessage(`[`)})
	if err == nil || !strings.Contains(err.Error(), `put image "i": manifest is not valid JSON`) {
		t.Errorf("PutImage with bad manifest = %v, want a JSON error", err)
	}
}

func TestEmptyNamesAreRejected(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	checks := []struct {
		name string
		err  error
		want string
	}{
		{"CreateVM", s.CreateVM(ctx, &VM{}), "create vm: empty name"},
		{"PutImage", s.PutImage(ctx, &Image{}), "put image: empty name"},
		{"PutKernel", s.PutKernel(ctx, &Kernel{}), "put kernel: empty name"},
	}
	for _, c := range checks {
		if c.err == nil || c.err.Error() != c.want {
			t.Errorf("%s with empty name = %v, want %q", c.name, c.err, c.want)
		}
	}
}
