package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/version"
)

// TestSnapshotUsageErrors checks the snapshot, fork and start-flag command lines refused
// before the daemon is contacted: each exits 2 and says why.
func TestSnapshotUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "snapshot", "dev", "--name", "Bad_Name"}, "--name: snapshot name"},
		{[]string{"vm", "fork", "dev", "--name", "Bad_Name"}, "--name: VM name"},
		{[]string{"vm", "fork", "dev", "--name", "a", "--name", "a"}, "--name a is given twice"},
		{[]string{"vm", "fork", "dev", "-n", "0"}, "-n 0: a fork makes at least one clone"},
		{[]string{"vm", "fork", "dev", "-n", "3", "--name", "a", "--name", "b"}, "-n 3 with 2 --name flags"},
		{[]string{"vm", "create", "--cold", "--from-snapshot", "base"}, "pick one"},
		{[]string{"vm", "create", "--from-snapshot", "base", "--image", "alpine"}, "--image cannot change them"},
		{[]string{"vm", "run", "--from-snapshot", "base", "--memory", "2G", "--", "true"}, "--memory cannot change them"},
		{[]string{"snapshot", "rm"}, "snapshot rm needs a snapshot name; see `banger snapshot list`"},
		{[]string{"vm", "fork"}, "vm fork needs a VM name"},
	} {
		r := runCLI(t, tt.args...)
		cmdline := "banger " + strings.Join(tt.args, " ")
		if r.code != ExitUsage || !strings.Contains(r.stderr, tt.want) || !strings.HasSuffix(r.stderr, helpLine+"\n") || r.stdout != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr\n%s\nwant exit 2 mentioning %q", cmdline, r.code, r.stdout, r.stderr, tt.want)
		}
	}
}

// request is one request a fake daemon received.
type request struct {
	route, body, fault string
}

// fakeAPI serves this build's version and the given answers on a unix socket, records what it
// received, and returns a runner like runCLI that talks to it.
func fakeAPI(t *testing.T, answers map[api.Route]http.HandlerFunc) (run func(args ...string) result, received func() []request) {
	t.Helper()
	var (
		mu   sync.Mutex
		reqs []request
	)
	mux := http.NewServeMux()
	mux.HandleFunc(string(api.RouteVersion), func(w http.ResponseWriter, r *http.Request) {
		v := version.Get()
		_ = json.NewEncoder(w).Encode(api.Version{Version: v.Version, Commit: v.Commit, Date: v.Date, API: version.API})
	})
	for route, answer := range answers {
		mux.HandleFunc(string(route), func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			reqs = append(reqs, request{route: r.Method + " " + r.URL.Path, body: strings.TrimSpace(string(b)), fault: r.Header.Get(api.HeaderInjectFault)})
			mu.Unlock()
			answer(w, r)
		})
	}
	dir := t.TempDir()
	socket := filepath.Join(dir, "d.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	t.Setenv("HOME", dir)
	t.Setenv("XDG_STATE_HOME", filepath.Join(dir, "state"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("BANGER_SOCKET", socket)
	t.Setenv("PATH", dir) // no bangerd to start
	run = func(args ...string) result {
		var stdout, stderr bytes.Buffer
		a := &app{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}
		root := a.rootCmd()
		root.SetArgs(args)
		code := a.exitCode(root.Execute())
		return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	}
	received = func() []request {
		mu.Lock()
		defer mu.Unlock()
		out := reqs
		reqs = nil
		return out
	}
	return run, received
}

// stream answers with events as an operation's stream.
func stream(events ...api.Event) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", api.ContentNDJSON)
		for _, ev := range events {
			_ = json.NewEncoder(w).Encode(ev)
		}
	}
}

func TestForkPrintsTheClonesNames(t *testing.T) {
	run, received := fakeAPI(t, map[api.Route]http.HandlerFunc{
		api.RouteForkVM: stream(api.Event{Type: api.EventProgress, Stage: "capture", Message: "saving dev"},
			api.Event{Type: api.EventResult, VMs: []api.VM{{Name: "try-a"}, {Name: "try-b"}}}),
	})
	t.Setenv("BANGER_INJECT_FAULT", "clone")
	r := run("vm", "fork", "dev", "--name", "try-a", "--name", "try-b")
	if r.code != ExitOK || r.stdout != "try-a\ntry-b\n" || !regexp.MustCompile(`(?m)^banger: forked dev in \d+\.\ds$`).MatchString(r.stderr) {
		t.Errorf("vm fork: exit %d, stdout %q, stderr %q; want the clones' names, one a line, and a done line", r.code, r.stdout, r.stderr)
	}
	want := []request{{route: "POST " + api.RouteForkVM.Path("dev"), body: `{"names":["try-a","try-b"]}`, fault: "clone"}}
	if got := received(); len(got) != 1 || got[0] != want[0] {
		t.Errorf("requests %+v, want %+v (the names, and BANGER_INJECT_FAULT as the test header)", got, want)
	}

	run("vm", "fork", "dev", "-n", "3")
	if got := received(); len(got) != 1 || got[0].body != `{"count":3}` {
		t.Errorf("vm fork -n 3 sent %+v, want count 3", got)
	}
	run("vm", "fork", "dev")
	if got := received(); len(got) != 1 || got[0].body != `{}` {
		t.Errorf("vm fork sent %+v, want an empty request (one clone, named by the daemon)", got)
	}
}

func TestSnapshotPrintsItsName(t *testing.T) {
	run, received := fakeAPI(t, map[api.Route]http.HandlerFunc{
		api.RouteSnapshotVM: stream(api.Event{Type: api.EventResult, Snapshot: &api.Snapshot{Name: "dev-ready", Kind: api.SnapshotUser}}),
	})
	r := run("vm", "snapshot", "dev", "--name", "dev-ready")
	if r.code != ExitOK || r.stdout != "dev-ready\n" {
		t.Errorf("vm snapshot: exit %d, stdout %q, stderr %q; want the snapshot's name", r.code, r.stdout, r.stderr)
	}
	if got := received(); len(got) != 1 || got[0].route != "POST "+api.RouteSnapshotVM.Path("dev") || got[0].body != `{"name":"dev-ready"}` {
		t.Errorf("requests %+v, want the snapshot of dev named dev-ready", got)
	}
}

func TestSnapshotListAndRm(t *testing.T) {
	created := time.Now().Add(-3 * time.Hour)
	run, received := fakeAPI(t, map[api.Route]http.HandlerFunc{
		api.RouteListSnapshots: func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewEncoder(w).Encode([]api.Snapshot{
				{Name: "boot-0123456789abcdef01234567", Kind: api.SnapshotBoot, Image: "debian-bookworm@2", VMM: "firecracker", SizeBytes: 300 << 20, Spares: 1, Created: created},
				{Name: "dev-ready", Kind: api.SnapshotUser, From: "dev", Image: "debian-bookworm@2", VMM: "qemu", SizeBytes: 1 << 30, Created: created},
			})
		},
		api.RouteDeleteSnapshot: func(w http.ResponseWriter, r *http.Request) {
			if r.PathValue("name") == "gone" {
				w.WriteHeader(http.StatusNotFound)
				_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: "not_found", Message: `no snapshot named "gone"`}})
				return
			}
			_, _ = io.WriteString(w, "{}")
		},
	})
	r := run("snapshot", "list")
	want := "NAME                           KIND  FROM  IMAGE              VMM          SIZE    SPARES  CREATED\n" +
		"boot-0123456789abcdef01234567  boot  -     debian-bookworm@2  firecracker  300MiB  1       3h ago\n" +
		"dev-ready                      user  dev   debian-bookworm@2  qemu         1GiB    -       3h ago\n"
	if r.code != ExitOK || r.stdout != want {
		t.Errorf("snapshot list: exit %d, stdout\n%s\nwant\n%s", r.code, r.stdout, want)
	}
	r = run("snapshot", "list", "--json")
	var list []api.Snapshot
	if r.code != ExitOK || json.Unmarshal([]byte(r.stdout), &list) != nil || len(list) != 2 || list[1].From != "dev" {
		t.Errorf("snapshot list --json: exit %d, %q", r.code, r.stdout)
	}
	received()

	r = run("snapshot", "rm", "dev-ready", "gone")
	if r.code != ExitError || r.stdout != "removed snapshot dev-ready\n" || !strings.Contains(r.stderr, `banger: gone: no snapshot named "gone"`) {
		t.Errorf("snapshot rm dev-ready gone: exit %d, stdout %q, stderr %q; want the first removed and the second reported", r.code, r.stdout, r.stderr)
	}
	if got := received(); len(got) != 2 || got[0].route != "DELETE "+api.RouteDeleteSnapshot.Path("dev-ready") {
		t.Errorf("requests %+v, want a delete of each", got)
	}
}

func TestCreatePassesColdAndFromSnapshot(t *testing.T) {
	run, received := fakeAPI(t, map[api.Route]http.HandlerFunc{
		api.RouteCreateVM: stream(api.Event{Type: api.EventResult, VM: &api.VM{Name: "t1", State: "running"}}),
	})
	for args, want := range map[string]func(api.CreateVMRequest) bool{
		"vm create --cold":                         func(r api.CreateVMRequest) bool { return r.Cold && r.FromSnapshot == "" },
		"vm create --from-snapshot dev-ready":      func(r api.CreateVMRequest) bool { return !r.Cold && r.FromSnapshot == "dev-ready" },
		"vm run --rm -d --from-snapshot dev-ready": nil, // -d and --rm: a usage error before any request
		"vm run -d --cold":                         func(r api.CreateVMRequest) bool { return r.Cold },
	} {
		r := run(strings.Fields(args)...)
		got := received()
		if want == nil {
			if r.code != ExitUsage || len(got) != 0 {
				t.Errorf("banger %s: exit %d, %d requests; want a usage error", args, r.code, len(got))
			}
			continue
		}
		var req api.CreateVMRequest
		if r.code != ExitOK || len(got) == 0 || json.Unmarshal([]byte(got[0].body), &req) != nil || !want(req) {
			t.Errorf("banger %s: exit %d (stderr %q), requests %+v", args, r.code, r.stderr, got)
		}
	}
}

// vm watch of a fork prints the clones when it ends.
func TestWatchOfAForkPrintsTheClones(t *testing.T) {
	run, _ := fakeAPI(t, map[api.Route]http.HandlerFunc{
		api.RouteListOperations: func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewEncoder(w).Encode([]api.Operation{{ID: "op1", Kind: "vm.fork", Target: "dev"}})
		},
		api.RouteWatchOperation: stream(api.Event{Type: api.EventResult, VMs: []api.VM{{Name: "a", State: "running"}, {Name: "b", State: "running"}}}),
	})
	r := run("vm", "watch", "dev")
	if r.code != ExitOK || r.stdout != "a: running\nb: running\n" || !strings.Contains(r.stderr, "vm.fork of dev finished") {
		t.Errorf("vm watch of a fork: exit %d, stdout %q, stderr %q; want the clones", r.code, r.stdout, r.stderr)
	}
}
