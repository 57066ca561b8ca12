package daemon

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

// apiRoutes reads every constant of package api whose name starts with Route from its source,
// so that a route added there is checked here without being listed twice.
func apiRoutes(t *testing.T) map[string]api.Route {
	t.Helper()
	files, err := filepath.Glob("../api/*.go")
	if err != nil {
		t.Fatal(err)
	}
	routes := map[string]api.Route{}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !strings.HasPrefix(name.Name, "Route") {
						continue
					}
					if typ, ok := vs.Type.(*ast.Ident); !ok || typ.Name != "Route" || i >= len(vs.Values) {
						t.Errorf("api.%s: want a constant of type Route with its own value", name.Name)
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Errorf("api.%s: want a string literal", name.Name)
						continue
					}
					s, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					routes[name.Name] = api.Route(s)
				}
			}
		}
	}
	if len(routes) == 0 {
		t.Fatal("found no routes in package api")
	}
	return routes
}

func TestEveryAPIRouteIsRegistered(t *testing.T) {
	mux := (&Daemon{}).routes().(*http.ServeMux)
	for name, route := range apiRoutes(t) {
		values := make([]string, strings.Count(string(route), "{"))
		for i := range values {
			values[i] = "x"
		}
		req := httptest.NewRequest(route.Method(), route.Path(values...), nil)
		if _, pattern := mux.Handler(req); pattern != string(route) {
			t.Errorf("api.%s (%s): the daemon serves %s %s with pattern %q, want the route itself", name, route, req.Method, req.URL.Path, pattern)
		}
	}
}
