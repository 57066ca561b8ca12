package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmtest"
)

// envRecordedFirecracker, set to a recording (testdata/responses-<version>.json), makes the
// test binary act as that Firecracker: see recordedFirecracker.
const envRecordedFirecracker = "BANGER_TEST_RECORDED_FIRECRACKER"

// envRecordedRoot, set to a directory, makes the recorded Firecracker take the paths it is
// given (API socket, kernel, vsock socket) as inside that directory, as a chrooted one would
// (see fakeJails).
const envRecordedRoot = "BANGER_TEST_RECORDED_ROOT"

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "fake-jailer" {
		os.Exit(fakeJailer(os.Args[1:]))
	}
	if rec := os.Getenv(envRecordedFirecracker); rec != "" {
		os.Exit(recordedFirecracker(rec, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestConformance runs package vmm's contract suite against the driver with a Firecracker that
// answers its API as the recorded real one did (a process of this test binary: no KVM, no
// guest), and against a real Firecracker when BANGER_FIRECRACKER_BIN is set (see real_test.go).
func TestConformance(t *testing.T) {
	const version = "1.14.2"
	recording, err := filepath.Abs(filepath.Join("testdata", "responses-"+version+".json"))
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(shortDir(t, "bfcbin"), "firecracker")
	script := fmt.Sprintf("#!/bin/sh\n%s=%s exec %s \"$@\"\n", envRecordedFirecracker, recording, self)
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	unjailed := false
	vmmtest.Conformance(t, func(t *testing.T) vmmtest.Harness {
		config := func(t *testing.T, kernel string) vmm.Config {
			dir := t.TempDir()
			return vmm.Config{
				ID: "conformance", Name: "conformance", Dir: filepath.Join(dir, "vm"), RuntimeDir: shortDir(t, "bfc"),
				VCPU: 1, MemoryMiB: 128, Kernel: kernel,
				Disks: []vmm.Disk{{Path: sparse(t, filepath.Join(dir, "disk.ext4"), 1<<20)}},
			}
		}
		kernel := filepath.Join(t.TempDir(), "vmlinux")
		if err := os.WriteFile(kernel, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		return vmmtest.Harness{
			Driver: &Driver{Binary: bin, Jailer: JailerOptions{Enabled: &unjailed}},
			Config: func(t *testing.T) vmm.Config { return config(t, kernel) },
			// Firecracker rejects the boot source (as recorded) after it started.
			FailingConfig: func(t *testing.T) vmm.Config { return config(t, "/nonexistent/vmlinux") },
			Running:       running,
		}
	})
}

func TestFirecrackerRealConformance(t *testing.T) {
	bin := realFirecracker(t)
	testKernel(t)
	unjailed := false
	vmmtest.Conformance(t, func(t *testing.T) vmmtest.Harness {
		d := &Driver{Binary: bin, Jailer: JailerOptions{Enabled: &unjailed}}
		if j := os.Getenv(envJailer); j != "" {
			d.Jailer = JailerOptions{Binary: j, ChrootBase: shortDir(t, "bjc")}
		}
		return vmmtest.Harness{
			Driver: d,
			Config: func(t *testing.T) vmm.Config { return testConfig(t, newID(t)) },
			FailingConfig: func(t *testing.T) vmm.Config {
				cfg := testConfig(t, newID(t))
				cfg.Kernel = filepath.Join(t.TempDir(), "no-such-vmlinux")
				return cfg
			},
			Running: running,
		}
	})
}

// recordedFirecracker is a Firecracker whose API gives the answers in the recording (see
// recorded_test.go): --version prints the recorded version; with --api-sock it serves each
// request with the recorded success of the same method and path, and a boot source whose kernel
// does not exist with the recorded rejection. Successes the recording cannot hold (the boot
// source, InstanceStart, pausing, resuming and Ctrl-Alt-Del of a started machine) get
// Firecracker's documented 204. PUT /vsock makes the vsock socket, as Firecracker does.
// running asks Firecracker whether m's vCPUs run (GET /).
func running(t *testing.T, m vmm.Machine) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := m.(*Machine).State(ctx)
	if err != nil {
		t.Errorf("GET /: %v", err)
	}
	return st == StateRunning
}

// recordedState is what the recorded Firecracker writes as a snapshot's state file (16.5 KB,
// as the real one's): the network interfaces and vsock socket a load restores.
type recordedState struct {
	Magic  string   `json:"magic"`
	Ifaces []string `json:"ifaces"`
	Vsock  string   `json:"vsock"`
}

const recordedStateMagic = "recorded firecracker snapshot"

func recordedFirecracker(recording string, args []string) int {
	version := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(recording), "responses-"), ".json")
	root := os.Getenv(envRecordedRoot)
	inRoot := func(p string) string {
		if root == "" {
			return p
		}
		return filepath.Join(root, p)
	}
	var sock string
	for i, a := range args {
		switch {
		case a == "--version":
			fmt.Printf("Firecracker v%s\n", version)
			return 0
		case a == "--api-sock" && i+1 < len(args):
			sock = args[i+1]
		}
	}
	data, err := os.ReadFile(recording)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var exs []exchange
	if err := json.Unmarshal(data, &exs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	answer := func(w http.ResponseWriter, status int, body string) {
		body = strings.ReplaceAll(body, "{{version}}", version)
		if body != "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
	recorded := func(name string) (exchange, bool) {
		for _, ex := range exs {
			if ex.Name == name {
				return ex, true
			}
		}
		return exchange{}, false
	}
	// The snapshot answers (transcribed, see testdata/snapshot-<version>.json).
	if data, err := os.ReadFile(filepath.Join(filepath.Dir(recording), "snapshot-"+version+".json")); err == nil {
		var more []exchange
		if err := json.Unmarshal(data, &more); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		exs = append(exs, more...)
	}
	var mu sync.Mutex
	var listeners []net.Listener
	state := StateNotStarted
	memMiB := 128
	var vsockPath string
	var ifaces []string
	answerRecorded := func(w http.ResponseWriter, name string) {
		ex, ok := recorded(name)
		if !ok {
			answer(w, http.StatusBadRequest, fmt.Sprintf(`{"fault_message":"the recording has no answer %q"}`, name))
			return
		}
		answer(w, ex.Status, ex.Response)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == "GET" && r.URL.Path == "/":
			ex, _ := recorded("describe")
			answer(w, ex.Status, strings.Replace(ex.Response, StateNotStarted, state, 1))
			return
		case r.Method == "PUT" && r.URL.Path == "/machine-config":
			var mc MachineConfig
			if json.Unmarshal(body, &mc) == nil && mc.MemSizeMiB > 0 {
				memMiB = mc.MemSizeMiB
			}
		case r.Method == "PUT" && r.URL.Path == "/network-interfaces/"+strings.TrimPrefix(r.URL.Path, "/network-interfaces/"):
			ifaces = append(ifaces, strings.TrimPrefix(r.URL.Path, "/network-interfaces/"))
			answer(w, http.StatusNoContent, "")
			return
		case r.Method == "PUT" && r.URL.Path == "/actions" && strings.Contains(string(body), ActionInstanceStart):
			state = StateRunning
			answer(w, http.StatusNoContent, "")
			return
		case r.Method == "PATCH" && r.URL.Path == "/vm" && state != StateNotStarted:
			var v VMState
			_ = json.Unmarshal(body, &v)
			if v.State == VMPaused {
				state = StatePaused
				answerRecorded(w, "pause running")
			} else {
				state = StateRunning
				answerRecorded(w, "resume loaded")
			}
			return
		case r.Method == "PATCH" && strings.HasPrefix(r.URL.Path, "/drives/"):
			answer(w, http.StatusNoContent, "")
			return
		case r.Method == "PUT" && r.URL.Path == "/snapshot/create":
			var c SnapshotCreate
			_ = json.Unmarshal(body, &c)
			if state != StatePaused {
				answer(w, http.StatusBadRequest, `{"fault_message":"the recording has no answer to a snapshot of a machine that is not paused"}`)
				return
			}
			st, _ := json.Marshal(recordedState{Magic: recordedStateMagic, Ifaces: ifaces, Vsock: vsockPath})
			err := os.WriteFile(c.SnapshotPath, append(st, make([]byte, 16500-len(st))...), 0o600)
			if err == nil {
				err = os.WriteFile(c.MemFilePath, nil, 0o600)
			}
			if err == nil {
				err = os.Truncate(c.MemFilePath, int64(memMiB)<<20)
			}
			if err != nil {
				answer(w, http.StatusBadRequest, fmt.Sprintf(`{"fault_message":%q}`, err.Error()))
				return
			}
			answerRecorded(w, "snapshot create")
			return
		case r.Method == "PUT" && r.URL.Path == "/snapshot/load":
			if state != StateNotStarted {
				answerRecorded(w, "second snapshot load")
				return
			}
			var l SnapshotLoad
			_ = json.Unmarshal(body, &l)
			var st recordedState
			b, err := os.ReadFile(l.SnapshotPath)
			if err == nil {
				err = json.NewDecoder(strings.NewReader(string(b))).Decode(&st)
			}
			if err == nil && st.Magic != recordedStateMagic {
				err = errors.New("not a snapshot")
			}
			if err == nil {
				_, err = os.Stat(l.MemBackend.BackendPath)
			}
			if err != nil {
				answer(w, http.StatusBadRequest, fmt.Sprintf(`{"fault_message":"Load snapshot error: %s"}`, err))
				go os.Exit(1)
				return
			}
			for _, o := range l.NetworkOverrides {
				if !slices.Contains(st.Ifaces, o.IfaceID) {
					answerRecorded(w, "snapshot load unknown network device")
					go os.Exit(1) // Firecracker exits after this failure
					return
				}
			}
			uds := st.Vsock
			if l.VsockOverride != nil {
				uds = l.VsockOverride.UDSPath
			}
			if uds != "" {
				ln, err := net.Listen("unix", uds)
				if err != nil {
					answer(w, http.StatusBadRequest, fmt.Sprintf(`{"fault_message":%q}`, err.Error()))
					go os.Exit(1)
					return
				}
				listeners = append(listeners, ln)
			}
			state = StatePaused
			answerRecorded(w, "snapshot load")
			return
		case r.Method == "PUT" && r.URL.Path == "/boot-source":
			var b BootSource
			_ = json.Unmarshal(body, &b)
			if _, err := os.Stat(inRoot(b.KernelImagePath)); err != nil {
				if ex, ok := recorded("missing kernel"); ok {
					answer(w, ex.Status, ex.Response)
					return
				}
			}
			answer(w, http.StatusNoContent, "")
			return
		case r.Method == "PUT" && r.URL.Path == "/vsock":
			var v Vsock
			_ = json.Unmarshal(body, &v)
			ln, err := net.Listen("unix", inRoot(v.UDSPath))
			if err != nil {
				answer(w, http.StatusBadRequest, fmt.Sprintf(`{"fault_message":%q}`, err.Error()))
				return
			}
			listeners = append(listeners, ln)
			vsockPath = v.UDSPath
		case r.Method == "PUT" && r.URL.Path == "/actions", r.Method == "PATCH" && r.URL.Path == "/vm":
			answer(w, http.StatusNoContent, "")
			return
		}
		for _, ex := range exs {
			if ex.Method == r.Method && ex.Path == r.URL.Path && ex.Status/100 == 2 {
				answer(w, ex.Status, ex.Response)
				return
			}
		}
		answer(w, http.StatusBadRequest, `{"fault_message":"the recording has no answer to this request"}`)
	})
	ln, err := net.Listen("unix", inRoot(sock))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = http.Serve(ln, handler)
	return 1
}
