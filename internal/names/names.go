// Package names owns VM names: the rule that they are DNS labels (so that <name>.vm resolves)
// and the generation of friendly ones when the user gives none.
package names

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"strings"
)

// MaxLen is the longest name: one DNS label.
const MaxLen = 63

// Validate checks that name is a DNS label: 1–63 characters of a-z, 0-9 and '-', neither
// starting nor ending with '-'. The error says what is wrong and what is allowed.
func Validate(name string) error {
	const rule = "names are 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
	problem := ""
	switch {
	case name == "":
		return fmt.Errorf("VM name is empty; %s", rule)
	case len(name) > MaxLen:
		problem = fmt.Sprintf("is %d characters long", len(name))
	case name[0] == '-' || name[len(name)-1] == '-':
		problem = "starts or ends with '-'"
	}
	for i, r := range name {
		if problem != "" {
			break
		}
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			problem = fmt.Sprintf("has %q at position %d", r, i+1)
		}
	}
	if problem == "" {
		return nil
	}
	if s := Suggest(name); s != "" {
		problem += fmt.Sprintf(" (try %q)", s)
	}
	return fmt.Errorf("VM name %q %s; %s", name, problem, rule)
}

// Suggest makes a valid name out of an invalid one — lower case, every run of other
// characters one '-', no '-' at either end, at most MaxLen long — or returns "" when nothing
// of it is left. Whatever it returns passes Validate.
func Suggest(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(r)
			continue
		}
		dash = true
	}
	s := b.String()
	if len(s) > MaxLen {
		s = strings.TrimRight(s[:MaxLen], "-")
	}
	return s
}

var adjectives = []string{
	"amber", "bold", "brave", "brisk", "calm", "clever", "crisp", "curious", "daring", "eager",
	"fancy", "fast", "fierce", "gentle", "glad", "golden", "happy", "hardy", "jolly", "keen",
	"kind", "lively", "lucky", "mellow", "merry", "nimble", "noble", "plucky", "proud", "quick",
	"quiet", "rapid", "rosy", "shiny", "snappy", "spry", "steady", "sunny", "swift", "tidy",
	"witty", "zesty",
}

var nouns = []string{
	"badger", "bear", "beaver", "bison", "crane", "eagle", "falcon", "ferret", "finch", "fox",
	"gecko", "heron", "ibex", "jaguar", "koala", "lemur", "lynx", "marten", "mole", "moose",
	"newt", "ocelot", "otter", "owl", "panda", "puffin", "quail", "raven", "robin", "seal",
	"shrew", "sparrow", "stoat", "swan", "tapir", "tern", "toad", "vole", "walrus", "wombat",
	"wren", "yak",
}

func pick(list []string) string {
	n, err := rand.Int(rand.Reader, big.NewInt(int64(len(list))))
	if err != nil {
		return list[0]
	}
	return list[n.Int64()]
}

// Generate returns a friendly name such as "brave-otter" that taken does not report as used.
// After a few collisions it appends a number.
func Generate(taken func(string) bool) string {
	for i := 0; i < 20; i++ {
		n := pick(adjectives) + "-" + pick(nouns)
		if i >= 10 {
			n = fmt.Sprintf("%s-%d", n, i)
		}
		if taken == nil || !taken(n) {
			return n
		}
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("vm-%x", b)
}
