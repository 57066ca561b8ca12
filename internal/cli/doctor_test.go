package cli

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/doctor"
)

// TestDoctorWithDaemonDown runs `banger doctor` where no daemon runs: runCLI fails the test if
// anything starts one or creates banger's state directory. The verdicts depend on this host;
// the shape does not.
func TestDoctorWithDaemonDown(t *testing.T) {
	r := runCLI(t, "doctor")
	if r.code != ExitOK && r.code != ExitError {
		t.Fatalf("banger doctor: exit %d, want 0 or 1; stderr:\n%s", r.code, r.stderr)
	}
	if r.stderr != "" {
		t.Errorf("banger doctor wrote to stderr: %q", r.stderr)
	}
	if strings.Contains(r.stdout, "\x1b[") {
		t.Errorf("banger doctor coloured output that is not a terminal:\n%s", r.stdout)
	}
	line := regexp.MustCompile(`^(PASS|WARN|FAIL)  \S+ +\S`)
	failed := false
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	for i, l := range lines {
		switch {
		case line.MatchString(l):
			failed = failed || strings.HasPrefix(l, "FAIL")
			if !strings.HasPrefix(l, "PASS") && (i+1 >= len(lines) || !strings.Contains(lines[i+1], "fix: ")) {
				t.Errorf("%q is not followed by a fix line", l)
			}
		case strings.Contains(l, "  fix: "), l == "", strings.Contains(l, " checks: "):
		default:
			t.Errorf("unexpected line in doctor's output: %q", l)
		}
	}
	if strings.Contains(r.stdout, "daemon                  running") {
		t.Error("doctor found a daemon running on the test's own socket")
	}
	if failed != (r.code == ExitError) {
		t.Errorf("exit %d, but a FAIL line present = %v", r.code, failed)
	}

	r = runCLI(t, "doctor", "--json")
	var rep doctor.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("banger doctor --json printed no JSON report: %v\n%s", err, r.stdout)
	}
	if len(rep.Checks) < 25 || rep.OK != (r.code == ExitOK) || rep.Summary.Fail > 0 == rep.OK {
		t.Errorf("report: %d checks, ok %v, summary %+v, exit %d", len(rep.Checks), rep.OK, rep.Summary, r.code)
	}
	for _, c := range rep.Checks {
		if c.Check == "daemon" && strings.HasPrefix(c.Detail, "running") {
			t.Errorf("daemon check says %q with no daemon", c.Detail)
		}
	}
}
