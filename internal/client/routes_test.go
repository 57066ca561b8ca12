package client

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestNoPathsOutsideAPIRoutes checks that the client and the CLI build every request from a
// route of package api: no string in their code spells an API path or a piece of one
// ("/v1/…", "/exec", "/logs?"), which could drift from what the daemon serves.
func TestNoPathsOutsideAPIRoutes(t *testing.T) {
	// The fixed segments of the routes in package api (v1, vms, exec, …).
	segments := map[string]bool{}
	src, err := filepath.Glob("../api/*.go")
	if err != nil {
		t.Fatal(err)
	}
	route := regexp.MustCompile(`Route\s*=\s*"[A-Z]+ (/[^"]*)"`)
	for _, file := range src {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range route.FindAllSubmatch(b, -1) {
			for _, seg := range strings.Split(string(m[1]), "/") {
				if seg != "" && !strings.HasPrefix(seg, "{") {
					segments[seg] = true
				}
			}
		}
	}
	if !segments["v1"] || !segments["exec"] {
		t.Fatalf("found no routes in ../api (segments %v)", segments)
	}
	var files []string
	for _, dir := range []string{".", "../cli"} {
		fs, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, fs...)
	}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			// A path piece starts with a slash and a route segment, which ends the string
			// or is followed by another slash or a query.
			rest, ok := strings.CutPrefix(s, "/")
			if !ok {
				return true
			}
			if i := strings.IndexAny(rest, "/?"); i >= 0 {
				rest = rest[:i]
			}
			if segments[rest] {
				t.Errorf("%s: %s spells a piece of an API path; build it from an api.Route", fset.Position(lit.Pos()), lit.Value)
			}
			return true
		})
	}
}
