package api

import "testing"

func TestRouteMethodAndPath(t *testing.T) {
	for _, tc := range []struct {
		route        Route
		values       []string
		method, path string
	}{
		{RouteVersion, nil, "GET", "/v1/version"},
		{RouteGetVM, []string{"dev"}, "GET", "/v1/vms/dev"},
		{RouteExec, []string{"dev"}, "POST", "/v1/vms/dev/exec"},
		{RouteWatchOperation, []string{"op-1"}, "GET", "/v1/operations/op-1/events"},
		// A value is one segment, whatever it holds.
		{RouteExportImage, []string{"a/b c?d#e"}, "POST", "/v1/images/a%2Fb%20c%3Fd%23e/export"},
	} {
		if got := tc.route.Method(); got != tc.method {
			t.Errorf("%s: Method() = %q, want %q", tc.route, got, tc.method)
		}
		if got := tc.route.Path(tc.values...); got != tc.path {
			t.Errorf("%s: Path(%q) = %q, want %q", tc.route, tc.values, got, tc.path)
		}
	}
}

func TestRoutePathPanicsOnAWrongNumberOfValues(t *testing.T) {
	for _, tc := range []struct {
		route  Route
		values []string
	}{
		{RouteVersion, []string{"x"}},
		{RouteGetVM, nil},
		{RouteExec, []string{"a", "b"}},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: Path(%q) did not panic", tc.route, tc.values)
				}
			}()
			tc.route.Path(tc.values...)
		}()
	}
}
