package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// tomlKeys lists every key the decoder accepts, from the toml tags of t (dotted for tables and
// arrays of tables).
func tomlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("toml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		key := prefix + tag
		keys = append(keys, key)
		ft := f.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			keys = append(keys, tomlKeys(ft, key+".")...)
		}
	}
	return keys
}

// TestEveryKeyIsDocumented is the docs drift test for configuration: every key config.toml
// accepts (the decoder's tags and the key list errors use) has a section in docs/config.md,
// written as `key` (dotted inside tables: `vm_defaults.vcpu`).
func TestEveryKeyIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	keys := tomlKeys(reflect.TypeOf(file{}), "")
	if len(keys) < 20 {
		t.Fatalf("found only %d keys in the decoder's tags: %v", len(keys), keys)
	}
	known := map[string]bool{}
	for _, k := range keyTypes {
		known[k.key] = true
	}
	for _, k := range keys {
		if !known[k] {
			t.Errorf("config key %q is decoded but missing from keyTypes in keys.go (errors could not name its type)", k)
		}
		if !strings.Contains(string(doc), "`"+k+"`") {
			t.Errorf("config key %q is not documented in docs/config.md: add a section `%s` with its type, default and an example", k, k)
		}
	}
	for k := range known {
		if !strings.Contains(string(doc), "`"+k+"`") {
			t.Errorf("config key %q (keys.go) is not documented in docs/config.md", k)
		}
	}
}
