package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/banger-dev/banger/internal/paths"
)

// Load reads l.ConfigFile(). A missing file yields Default(l).
func Load(l paths.Layout) (Config, error) {
	return LoadFile(l.ConfigFile(), l)
}

// LoadFile reads the configuration at path; l supplies the home directory for "~/" and the
// state directory for defaults. A missing file yields Default(l) with Path set to path.
//
// Every error names path, and the offending key when there is one: unknown keys, values of
// the wrong TOML type, invalid values and TOML syntax errors (those also carry line:column).
func LoadFile(path string, l paths.Layout) (Config, error) {
	c := Default(l)
	c.Path = path
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	var f file
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Config{}, decodeError(path, err)
	}
	if err := apply(&c, &f, l.Home); err != nil {
		return Config{}, locate(path, data, err)
	}
	return c, nil
}

// keyError is a bad value of one key, before the file and line are known.
type keyError struct {
	key string
	msg string
}

func (e *keyError) Error() string { return e.key + ": " + e.msg }

func badKey(key, format string, args ...any) error {
	return &keyError{key: key, msg: fmt.Sprintf(format, args...)}
}

// locate prefixes err with path, and with the line of its key when it can be found.
func locate(path string, data []byte, err error) error {
	var ke *keyError
	if errors.As(err, &ke) {
		if line := keyLines(data).find(ke.key); line > 0 {
			return fmt.Errorf("%s:%d: %w", path, line, err)
		}
	}
	return fmt.Errorf("%s: %w", path, err)
}

// typeMismatch matches go-toml's messages for a value of the wrong type and captures the TOML
// type that was found.
var typeMismatch = regexp.MustCompile(`^(?:cannot decode TOML (\w+) into|cannot store an? ([\w ]+?) in )`)

// decodeError turns go-toml's errors into one line naming the file, position and key.
func decodeError(path string, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		return unknownKeysError(path, strict)
	}
	var de *toml.DecodeError
	if !errors.As(err, &de) {
		return fmt.Errorf("%s: %w", path, err)
	}
	row, col := de.Position()
	where := fmt.Sprintf("%s:%d:%d", path, row, col)
	key := strings.Join(de.Key(), ".")
	msg := strings.TrimPrefix(de.Error(), "toml: ")

	if m := typeMismatch.FindStringSubmatch(msg); m != nil {
		// A dotted key into a scalar ("vmm.x = 1") reports the longer key; name the known one.
		for k := key; k != ""; k = trimLastPart(k) {
			if want := wantType(k); want != "" {
				return fmt.Errorf("%s: %s: want %s, got %s", where, k, want, article(m[1]+m[2]))
			}
		}
	}
	if key == "" {
		return fmt.Errorf("%s: invalid TOML: %s", where, msg)
	}
	if strings.Contains(msg, key) {
		return fmt.Errorf("%s: %s", where, msg)
	}
	return fmt.Errorf("%s: %s: %s", where, key, msg)
}

func trimLastPart(key string) string {
	i := strings.LastIndexByte(key, '.')
	if i < 0 {
		return ""
	}
	return key[:i]
}

// article prefixes a TOML type name with "a" or "an".
func article(typ string) string {
	if typ == "" {
		return "a value"
	}
	switch typ[0] {
	case 'a', 'e', 'i', 'o', 'u':
		return "an " + typ
	}
	return "a " + typ
}

func unknownKeysError(path string, s *toml.StrictMissingError) error {
	var parts []string
	firstRow, firstCol := 0, 0
	for i := range s.Errors {
		e := &s.Errors[i]
		key := strings.Join(e.Key(), ".")
		row, col := e.Position()
		if i == 0 {
			firstRow, firstCol = row, col
		}
		what := "key"
		if strings.Contains(e.Error(), "table") {
			what = "table"
		}
		part := fmt.Sprintf("unknown %s %q", what, key)
		if len(s.Errors) > 1 {
			part += fmt.Sprintf(" (line %d)", row)
		}
		if sug := suggest(key); sug != "" {
			part += fmt.Sprintf(" (did you mean %q?)", sug)
		}
		parts = append(parts, part)
	}
	where := path
	if len(s.Errors) == 1 {
		where = fmt.Sprintf("%s:%d:%d", path, firstRow, firstCol)
	}
	return fmt.Errorf("%s: %s; known keys are %s", where, strings.Join(parts, ", "), knownKeys())
}
