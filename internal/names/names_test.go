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
