package image

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strings"

	"github.com/banger-dev/banger/internal/untar"
	"github.com/pelletier/go-toml/v2"
)

// DefaultRecipe names the recipe banger builds when nobody asks for another one.
const DefaultRecipe = "debian-bookworm"

//go:embed recipes/*.toml
var builtinRecipes embed.FS

// Recipe describes how to build an image: what to bootstrap from a Debian mirror and which
// customization steps to apply afterwards. Recipes are data (TOML files in recipes/).
type Recipe struct {
	Name       string   `json:"name"`
	Suite      string   `json:"suite"`
	Variant    string   `json:"variant"`
	Components []string `json:"components"`
	Packages   []string `json:"packages"`
	// Optional packages are installed when the archive has them and otherwise left out, with
	// a note in the manifest saying so (e.g. tools Debian does not package in every suite).
	Optional []string `json:"optional_packages,omitempty"`
	Steps    []Step   `json:"steps"`
}

// StepKind names what a customization step does.
type StepKind string

// The step kinds a recipe may use.
const (
	StepWrite        StepKind = "write"         // replace Path with a file holding Content, mode Mode
	StepRemove       StepKind = "remove"        // remove Path recursively; its last element may be a glob
	StepSymlink      StepKind = "symlink"       // replace Path with a symlink to Target
	StepMask         StepKind = "mask"          // symlink /etc/systemd/system/Unit -> /dev/null
	StepTruncate     StepKind = "truncate"      // make Path an empty regular file
	StepLockPassword StepKind = "lock_password" // lock User's password in /etc/shadow
)

var stepKinds = []StepKind{StepWrite, StepRemove, StepSymlink, StepMask, StepTruncate, StepLockPassword}

// Step is one customization of the bootstrapped tree. Which fields are used depends on Kind.
type Step struct {
	Kind    StepKind    `json:"kind"`
	Path    string      `json:"path,omitempty"`    // absolute path inside the image
	Content string      `json:"content,omitempty"` // write
	Mode    fs.FileMode `json:"mode,omitempty"`    // write; 0644 when not given
	Target  string      `json:"target,omitempty"`  // symlink
	Unit    string      `json:"unit,omitempty"`    // mask
	User    string      `json:"user,omitempty"`    // lock_password
}

func (s Step) String() string {
	switch s.Kind {
	case StepMask:
		return fmt.Sprintf("%s %s", s.Kind, s.Unit)
	case StepLockPassword:
		return fmt.Sprintf("%s %s", s.Kind, s.User)
	case StepSymlink:
		return fmt.Sprintf("%s %s -> %s", s.Kind, s.Path, s.Target)
	default:
		return fmt.Sprintf("%s %s", s.Kind, s.Path)
	}
}

// BuiltinRecipes lists the names of the recipes embedded in banger, sorted.
func BuiltinRecipes() []string {
	entries, _ := fs.ReadDir(builtinRecipes, "recipes") // embedded: cannot fail
	var names []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".toml"); ok {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// BuiltinRecipe returns the embedded recipe called name, parsed and validated.
func BuiltinRecipe(name string) (Recipe, error) {
	if !namePattern.MatchString(name) {
		return Recipe{}, fmt.Errorf("image recipe %q: no such recipe; known recipes: %s", name, strings.Join(BuiltinRecipes(), ", "))
	}
	data, err := builtinRecipes.ReadFile("recipes/" + name + ".toml")
	if err != nil {
		return Recipe{}, fmt.Errorf("image recipe %q: no such recipe; known recipes: %s", name, strings.Join(BuiltinRecipes(), ", "))
	}
	r, err := ParseRecipe(data)
	if err != nil {
		return Recipe{}, err
	}
	if r.Name != name {
		return Recipe{}, fmt.Errorf("image recipe %q: file declares name %q; they must match", name, r.Name)
	}
	return r, nil
}

// rawRecipe is the TOML shape of a recipe. Steps stay untyped so that validation can name the
// step (by index) that is wrong and say why.
type rawRecipe struct {
	Name       string           `toml:"name"`
	Suite      string           `toml:"suite"`
	Variant    string           `toml:"variant"`
	Components []string         `toml:"components"`
	Packages   []string         `toml:"packages"`
	Optional   []string         `toml:"optional_packages"`
	Steps      []map[string]any `toml:"steps"`
}

// ParseRecipe parses a TOML recipe and validates it.
func ParseRecipe(data []byte) (Recipe, error) {
	var raw rawRecipe
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			var keys []string
			for _, e := range strict.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return Recipe{}, fmt.Errorf("image recipe: unknown field(s) %s; known fields: name, suite, variant, components, packages, optional_packages, steps",
				strings.Join(keys, ", "))
		}
		var derr *toml.DecodeError
		if errors.As(err, &derr) {
			row, col := derr.Position()
			return Recipe{}, fmt.Errorf("image recipe: line %d, column %d: %v", row, col, derr)
		}
		return Recipe{}, fmt.Errorf("image recipe: %w", err)
	}
	r := Recipe{
		Name:       raw.Name,
		Suite:      raw.Suite,
		Variant:    raw.Variant,
		Components: raw.Components,
		Packages:   raw.Packages,
		Optional:   raw.Optional,
	}
	for i, m := range raw.Steps {
		s, err := parseStep(m)
		if err != nil {
			return Recipe{}, fmt.Errorf("image recipe %s: step %d: %w", r.displayName(), i, err)
		}
		r.Steps = append(r.Steps, s)
	}
	if err := r.Validate(); err != nil {
		return Recipe{}, err
	}
	return r, nil
}

// parseStep turns one TOML table into a Step: exactly one kind key, plus the keys that kind
// allows.
func parseStep(m map[string]any) (Step, error) {
	var s Step
	var kinds []string
	for key := range m {
		if slices.Contains(stepKinds, StepKind(key)) {
			kinds = append(kinds, key)
		}
	}
	sort.Strings(kinds)
	switch len(kinds) {
	case 0:
		var keys []string
		for key := range m {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		return s, fmt.Errorf("unknown step kind (keys: %s); a step needs one of: %s", strings.Join(keys, ", "), kindList())
	case 1:
	default:
		return s, fmt.Errorf("more than one step kind (%s); split it into one step per kind", strings.Join(kinds, ", "))
	}
	s.Kind = StepKind(kinds[0])
	value, ok := m[kinds[0]].(string)
	if !ok {
		return s, fmt.Errorf("%s: value must be a string, got %T", s.Kind, m[kinds[0]])
	}
	allowed := map[StepKind][]string{
		StepWrite:   {"content", "mode"},
		StepSymlink: {"target"},
	}[s.Kind]
	for key := range m {
		if key != kinds[0] && !slices.Contains(allowed, key) {
			return s, fmt.Errorf("%s: unexpected key %q", s.Kind, key)
		}
	}
	switch s.Kind {
	case StepMask:
		s.Unit = value
	case StepLockPassword:
		s.User = value
	default:
		s.Path = value
	}
	if v, ok := m["content"]; ok {
		if s.Content, ok = v.(string); !ok {
			return s, fmt.Errorf("%s: content must be a string, got %T", s.Kind, v)
		}
	}
	if v, ok := m["target"]; ok {
		if s.Target, ok = v.(string); !ok {
			return s, fmt.Errorf("%s: target must be a string, got %T", s.Kind, v)
		}
	}
	if v, ok := m["mode"]; ok {
		mode, err := parseMode(v)
		if err != nil {
			return s, fmt.Errorf("%s: %w", s.Kind, err)
		}
		s.Mode = mode
	}
	return s, nil
}

// parseMode accepts an octal string ("0644") or a TOML integer (0o644).
func parseMode(v any) (fs.FileMode, error) {
	var n int64
	switch v := v.(type) {
	case string:
		if _, err := fmt.Sscanf(v, "%o", &n); err != nil || strings.TrimLeft(v, "01234567") != "" {
			return 0, fmt.Errorf("mode %q is not an octal number like \"0644\"", v)
		}
	case int64:
		n = v
	default:
		return 0, fmt.Errorf("mode must be an octal string like \"0644\", got %T", v)
	}
	if n <= 0 || n > 0o7777 {
		return 0, fmt.Errorf("mode %#o is out of range (0001-07777)", n)
	}
	return untar.FileMode(uint32(n)), nil
}

// Hash returns the hex sha256 of the recipe's canonical JSON form: it changes whenever what the
// recipe builds changes, and not when only comments or formatting of its file do.
func (r Recipe) Hash() string {
	data, _ := json.Marshal(r) // a Recipe holds only strings, numbers and slices: cannot fail
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func (r Recipe) displayName() string {
	if r.Name == "" {
		return "(unnamed)"
	}
	return r.Name
}

func kindList() string {
	var names []string
	for _, k := range stepKinds {
		names = append(names, string(k))
	}
	return strings.Join(names, ", ")
}
