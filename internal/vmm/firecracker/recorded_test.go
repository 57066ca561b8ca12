package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Recorded answers of real Firecracker binaries live in testdata/responses-<version>.json.
// TestFirecrackerRealRecordedResponses replays the same requests against a real binary and
// compares (or, with BANGER_FIRECRACKER_RECORD=1, rewrites the recording); the unit tests
// below check banger's response handling against the recordings without any binary.

// exchange is one recorded request and answer. {{dir}} in a body stands for a scratch
// directory, {{version}} in an answer for the binary's version.
type exchange struct {
	Name     string          `json:"name"`
	Resource string          `json:"resource"` // how banger names the call in errors
	Method   string          `json:"method"`
	Path     string          `json:"path"`
	Body     json.RawMessage `json:"body,omitempty"`
	Status   int             `json:"status"`
	Response string          `json:"response"`
	// Note says where an answer comes from when it was not recorded by
	// TestFirecrackerRealRecordedResponses (testdata/snapshot-*.json: transcribed from notes).
	Note string `json:"note,omitempty"`
}

// script is the request sequence, in order, on a fresh (not started) Firecracker.
func script() []exchange {
	b := func(v any) json.RawMessage {
		data, _ := json.Marshal(v)
		return data
	}
	return []exchange{
		{Name: "describe", Resource: "instance info request", Method: "GET", Path: "/"},
		{Name: "version", Resource: "version request", Method: "GET", Path: "/version"},
		{Name: "logger", Resource: "logger", Method: "PUT", Path: "/logger", Body: b(Logger{LogPath: "{{dir}}/firecracker.log", Level: "Info", ShowLevel: true})},
		{Name: "logger missing file", Resource: "logger", Method: "PUT", Path: "/logger", Body: b(Logger{LogPath: "{{dir}}/missing/firecracker.log", Level: "Info"})},
		{Name: "metrics", Resource: "metrics", Method: "PUT", Path: "/metrics", Body: b(Metrics{MetricsPath: "{{dir}}/firecracker.metrics"})},
		{Name: "metrics missing file", Resource: "metrics", Method: "PUT", Path: "/metrics", Body: b(Metrics{MetricsPath: "{{dir}}/missing/m"})},
		{Name: "start without kernel", Resource: "InstanceStart", Method: "PUT", Path: "/actions", Body: b(Action{ActionType: ActionInstanceStart})},
		{Name: "zero vcpus", Resource: "machine-config", Method: "PUT", Path: "/machine-config", Body: b(MachineConfig{VCPUCount: 0, MemSizeMiB: 256})},
		{Name: "machine config", Resource: "machine-config", Method: "PUT", Path: "/machine-config", Body: b(MachineConfig{VCPUCount: 2, MemSizeMiB: 256})},
		{Name: "missing kernel", Resource: "boot-source", Method: "PUT", Path: "/boot-source", Body: b(BootSource{KernelImagePath: "/nonexistent/vmlinux", BootArgs: BootArgs("")})},
		{Name: "missing initrd", Resource: "boot-source", Method: "PUT", Path: "/boot-source", Body: b(BootSource{KernelImagePath: "{{dir}}/vmlinux", InitrdPath: "/nonexistent/initrd", BootArgs: BootArgs("")})},
		{Name: "missing drive file", Resource: "drive disk0", Method: "PUT", Path: "/drives/disk0", Body: b(Drive{DriveID: "disk0", PathOnHost: "/nonexistent/disk.ext4", IsReadOnly: true})},
		{Name: "drive unknown field", Resource: "drive disk0", Method: "PUT", Path: "/drives/disk0", Body: json.RawMessage(`{"drive_id":"disk0","path_on_host":"{{dir}}/disk.ext4","is_root_device":false,"is_read_only":false,"bogus":1}`)},
		{Name: "drive read-only", Resource: "drive disk0", Method: "PUT", Path: "/drives/disk0", Body: b(Drive{DriveID: "disk0", PathOnHost: "{{dir}}/image.ext4", IsReadOnly: true})},
		{Name: "drive writable", Resource: "drive disk1", Method: "PUT", Path: "/drives/disk1", Body: b(Drive{DriveID: "disk1", PathOnHost: "{{dir}}/disk.ext4"})},
		{Name: "vsock cid 2", Resource: "vsock", Method: "PUT", Path: "/vsock", Body: b(Vsock{GuestCID: 2, UDSPath: "{{dir}}/v.sock"})},
		{Name: "vsock", Resource: "vsock", Method: "PUT", Path: "/vsock", Body: b(Vsock{GuestCID: GuestCID, UDSPath: "{{dir}}/v.sock"})},
		{Name: "pause before start", Resource: "vm state Paused", Method: "PATCH", Path: "/vm", Body: b(VMState{State: VMPaused})},
		{Name: "unknown vm state", Resource: "vm state Bogus", Method: "PATCH", Path: "/vm", Body: b(VMState{State: "Bogus"})},
		{Name: "ctrl-alt-del before start", Resource: "SendCtrlAltDel", Method: "PUT", Path: "/actions", Body: b(Action{ActionType: ActionSendCtrlAltDel})},
		{Name: "unknown path", Resource: "nope", Method: "GET", Path: "/nope"},
	}
}

func loadRecordings(t *testing.T) map[string][]exchange {
	t.Helper()
	files, _ := filepath.Glob("testdata/responses-*.json")
	if len(files) == 0 {
		t.Fatal("no recordings in testdata/responses-*.json")
	}
	out := map[string][]exchange{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var ex []exchange
		if err := json.Unmarshal(data, &ex); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		v := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "responses-"), ".json")
		out[v] = ex
	}
	return out
}

// TestRecordedResponses maps every recorded answer the way the client does: 204 is success,
// 200 decodes into the typed answer, anything else is an APIError whose message is
// "firecracker rejected <what>: <fault_message verbatim>".
func TestRecordedResponses(t *testing.T) {
	for version, exs := range loadRecordings(t) {
		for _, ex := range exs {
			t.Run(version+"/"+ex.Name, func(t *testing.T) {
				resp := strings.ReplaceAll(ex.Response, "{{version}}", version)
				var out any
				switch ex.Path {
				case "/":
					out = &InstanceInfo{}
				case "/version":
					out = &VersionInfo{}
				}
				err := decodeResponse(ex.Resource, ex.Status, []byte(resp), out)
				switch ex.Status {
				case http.StatusNoContent:
					if err != nil || resp != "" {
						t.Errorf("204 %q: err %v; want success with an empty body", resp, err)
					}
				case http.StatusOK:
					if err != nil {
						t.Fatalf("200 %s: %v", resp, err)
					}
					switch o := out.(type) {
					case *InstanceInfo:
						if o.State != StateNotStarted || o.VMMVersion != version || o.AppName != "Firecracker" {
							t.Errorf("instance info = %+v", o)
						}
					case *VersionInfo:
						if o.FirecrackerVersion != version {
							t.Errorf("version = %+v; want %s", o, version)
						}
					}
				default:
					var fault faultBody
					if json.Unmarshal([]byte(resp), &fault) != nil || fault.FaultMessage == "" {
						t.Fatalf("recorded error %q has no fault_message", resp)
					}
					var apiErr *APIError
					if !errors.As(err, &apiErr) {
						t.Fatalf("status %d: err = %v (%T); want *APIError", ex.Status, err, err)
					}
					want := "firecracker rejected " + ex.Resource + ": " + fault.FaultMessage
					if err.Error() != want {
						t.Errorf("error = %q\nwant    %q", err, want)
					}
				}
			})
		}
	}
}

// TestRecordedSuccessesMatchRequests: banger's own requests (the plan) are ones a real
// Firecracker answered 204: the recorded successful bodies are byte-for-byte what the typed
// structs encode.
func TestRecordedSuccessesMatchRequests(t *testing.T) {
	for version, exs := range loadRecordings(t) {
		for i, ex := range exs {
			sent := script()[i]
			if ex.Name != sent.Name {
				t.Fatalf("%s: recording %d is %q, script has %q; re-record", version, i, ex.Name, sent.Name)
			}
			var a, b bytes.Buffer
			_ = json.Compact(&a, ex.Body)
			_ = json.Compact(&b, sent.Body)
			if !bytes.Equal(a.Bytes(), b.Bytes()) {
				t.Errorf("%s %s: recorded body %s, script body %s; re-record", version, ex.Name, ex.Body, sent.Body)
			}
		}
	}
}

// replay runs the script against a fresh process of bin and returns the answers.
func replay(t *testing.T, bin string) []exchange {
	t.Helper()
	dir := shortDir(t, "bfr")
	for _, f := range []string{"firecracker.log", "firecracker.metrics"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sparse(t, filepath.Join(dir, "image.ext4"), 1<<20)
	sparse(t, filepath.Join(dir, "disk.ext4"), 1<<20)
	kernel, _ := testKernel(t)
	if err := os.Symlink(kernel, filepath.Join(dir, "vmlinux")); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "api.sock")
	cmd := exec.Command(bin, "--api-sock", sock, "--id", "rec", "--level", "Warning")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for i := 0; i < 2000; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	c := NewClient(sock)
	defer c.Close()
	var got []exchange
	for _, ex := range script() {
		body := strings.ReplaceAll(string(ex.Body), "{{dir}}", dir)
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequestWithContext(context.Background(), ex.Method, "http://localhost"+ex.Path, rd)
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.http.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", ex.Name, err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ex.Status = resp.StatusCode
		ex.Response = strings.ReplaceAll(string(data), dir, "{{dir}}")
		got = append(got, ex)
	}
	return got
}

func TestFirecrackerRealRecordedResponses(t *testing.T) {
	bins := []string{realFirecracker(t)}
	if old := os.Getenv(envOldFirecracker); old != "" {
		bins = append(bins, old)
	}
	for _, bin := range bins {
		v, err := BinaryVersion(context.Background(), bin)
		if err != nil {
			t.Fatal(err)
		}
		got := replay(t, bin)
		for i := range got {
			got[i].Response = strings.ReplaceAll(got[i].Response, `"`+v.String()+`"`, `"{{version}}"`)
		}
		file := filepath.Join("testdata", "responses-"+v.String()+".json")
		if os.Getenv("BANGER_FIRECRACKER_RECORD") == "1" {
			data, _ := json.MarshalIndent(got, "", "  ")
			if err := os.WriteFile(file, append(data, '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("recorded %s", file)
			continue
		}
		data, err := os.ReadFile(file)
		if err != nil {
			t.Logf("no recording for firecracker %s (%v); BANGER_FIRECRACKER_RECORD=1 makes one", v, err)
			continue
		}
		var want []exchange
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if i >= len(got) || got[i].Status != want[i].Status || got[i].Response != want[i].Response {
				t.Errorf("firecracker %s, %s: got %d %s\nrecorded %d %s", v, want[i].Name, got[i].Status, got[i].Response, want[i].Status, want[i].Response)
			}
		}
	}
}

// TestTranscribedSnapshotAnswers maps the snapshot answers of testdata/snapshot-*.json
// (transcribed from notes on a real v1.14.2) the way the client does: Firecracker's refusals
// reach the caller verbatim.
func TestTranscribedSnapshotAnswers(t *testing.T) {
	files, _ := filepath.Glob("testdata/snapshot-*.json")
	if len(files) == 0 {
		t.Fatal("no snapshot answers in testdata/snapshot-*.json")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var exs []exchange
		if err := json.Unmarshal(data, &exs); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, ex := range exs {
			if ex.Note == "" {
				t.Errorf("%s: %q does not say where it comes from", f, ex.Name)
			}
			err := decodeResponse(ex.Resource, ex.Status, []byte(ex.Response), nil)
			if ex.Status == http.StatusNoContent {
				if err != nil {
					t.Errorf("%s: %v", ex.Name, err)
				}
				continue
			}
			var fault faultBody
			_ = json.Unmarshal([]byte(ex.Response), &fault)
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.Fault != fault.FaultMessage || !strings.Contains(err.Error(), fault.FaultMessage) {
				t.Errorf("%s: %v; want an APIError carrying %q", ex.Name, err, fault.FaultMessage)
			}
		}
	}
}
