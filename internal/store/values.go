package store

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/banger-dev/banger/internal/failure"
)

// timeLayout is fixed-width, so stored timestamps sort as text in time order.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// now is the store's clock, UTC without a monotonic reading.
func now() time.Time { return time.Now().UTC().Round(0) }

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func parseTime(col, s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("column %s: bad timestamp %q: %w", col, s, err)
	}
	return t, nil
}

// jsonArg turns a JSON column value into an argument: nil or empty is NULL; anything else must
// be valid JSON.
func jsonArg(col string, m json.RawMessage) (any, error) {
	if len(m) == 0 {
		return nil, nil
	}
	if !json.Valid(m) {
		return nil, fmt.Errorf("%s is not valid JSON", col)
	}
	return string(m), nil
}

// jsonValue turns a scanned JSON column back into a RawMessage; NULL is nil.
func jsonValue(s sql.NullString) json.RawMessage {
	if !s.Valid {
		return nil
	}
	return json.RawMessage(s.String)
}

// newID returns 16 random lower-case hex characters.
func newID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate vm id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// validID reports whether id looks like one newID makes.
func validID(id string) bool {
	if len(id) != 16 {
		return false
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// uniqueViolation reports whether err is a UNIQUE or PRIMARY KEY violation.
func uniqueViolation(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// notFoundIfNone maps a zero-row update or delete to failure.NotFound.
func notFoundIfNone(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return failure.NotFound
	}
	return nil
}
