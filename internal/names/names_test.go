package names

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	ok := []string{"a", "dev", "my-vm-2", "0", strings.Repeat("a", 63)}
	for _, n := range ok {
		if err := Validate(n); err != nil {
			t.Errorf("Validate(%q) = %v, want nil", n, err)
		}
	}
	bad := []struct{ name, want string }{
		{"", "empty"},
		{strings.Repeat("a", 64), "64 characters"},
		{"-dev", "starts or ends"},
		{"dev-", "starts or ends"},
		{"Dev", `try "dev"`},
		{"my_vm", `'_'`},
		{"dev.vm", `'.'`},
		{"dév", `'é'`},
		{"a b", `' '`},
	}
	for _, tc := range bad {
		err := Validate(tc.name)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%q) = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestGenerateIsValidAndAvoidsTakenNames(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		n := Generate(func(s string) bool { return seen[s] })
		if err := Validate(n); err != nil {
			t.Fatalf("generated invalid name %q: %v", n, err)
		}
		if seen[n] {
			t.Fatalf("generated %q twice although it was taken", n)
		}
		seen[n] = true
	}
	if n := Generate(func(string) bool { return true }); Validate(n) != nil {
		t.Errorf("fallback name %q is invalid", n)
	}
}

// Every suggestion in an error is itself a valid name: "Bad_Name" once suggested "bad_name",
// which was then refused for its '_'.
func TestSuggestionsAreValidNames(t *testing.T) {
	for name, want := range map[string]string{
		"Bad_Name":                "bad-name",
		"my_vm":                   "my-vm",
		"Dev":                     "dev",
		"__x__":                   "x",
		"dév.VM":                  "d-v-vm",
		"___":                     "",
		strings.Repeat("Ab_", 40): strings.TrimRight(strings.Repeat("ab-", 21)[:63], "-"),
	} {
		got := Suggest(name)
		if got != want {
			t.Errorf("Suggest(%q) = %q, want %q", name, got, want)
		}
		if got != "" && Validate(got) != nil {
			t.Errorf("Suggest(%q) = %q, which is not valid: %v", name, got, Validate(got))
		}
		if err := Validate(name); err != nil && got != "" && !strings.Contains(err.Error(), `try "`+got+`"`) {
			t.Errorf("Validate(%q) = %v, want it to suggest %q", name, err, got)
		}
	}
	if err := Validate("___"); err == nil || strings.Contains(err.Error(), "try") {
		t.Errorf("Validate(___) = %v; want no suggestion when nothing valid is left", err)
	}
}

func FuzzSuggestIsValid(f *testing.F) {
	for _, s := range []string{"Bad_Name", "-x-", "", "é", strings.Repeat("A", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if s := Suggest(name); s != "" && Validate(s) != nil {
			t.Fatalf("Suggest(%q) = %q, invalid: %v", name, s, Validate(s))
		}
	})
}
