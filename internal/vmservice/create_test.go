package vmservice

import (
	"strings"
	"sync"
	"testing"

	"github.com/banger-dev/banger/internal/catalog"
)

// releasingArtifacts counts the image versions a create hands back.
type releasingArtifacts struct {
	fakeArtifacts
	mu       sync.Mutex
	released []string
}

func (a *releasingArtifacts) Release(img catalog.Image) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.released = append(a.released, img.Name)
}

// A create hands its image version back exactly once, whether its plan fails after getting
// the image, its steps fail, or it succeeds (the VM's record holds the version from then on).
func TestCreateReleasesTheImageOnce(t *testing.T) {
	for _, c := range []struct {
		name string
		req  CreateRequest
		err  string
	}{
		{"kernel missing", CreateRequest{Name: "dev", Kernel: "nope"}, "unknown kernel nope"},
		{"step fails", CreateRequest{Name: "dev", FailStep: StepDisk}, "fault injected"},
		{"created", CreateRequest{Name: "dev", NoStart: true}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			arts := &releasingArtifacts{}
			e.svc.artifacts = arts
			_, err := e.create(c.req)
			if (err == nil) != (c.err == "") || (err != nil && !strings.Contains(err.Error(), c.err)) {
				t.Fatalf("create: %v, want %q", err, c.err)
			}
			if len(arts.released) != 1 {
				t.Errorf("image released %d times (%v), want once", len(arts.released), arts.released)
			}
		})
	}
}
