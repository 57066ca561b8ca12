package firecracker

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/peercred"
	"github.com/banger-dev/banger/internal/peercred/peercredtest"
	"github.com/banger-dev/banger/internal/vmm"
)

// jailUID is the jail's uid in these tests: in DefaultJailerID's range, named by nobody.
const jailUID = 912346

// countingServer answers every HTTP request on ln with a Firecracker version and counts them.
type countingServer struct{ hits atomic.Int32 }

func (s *countingServer) serve(t *testing.T, ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		io.WriteString(w, `{"firecracker_version":"1.14.2"}`)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// listenAs listens on path as uid (SO_PEERCRED) with the socket file owned by owner: the socket
// is bound as root, then listen(2) runs on a thread acting as uid.
func listenAs(t *testing.T, path string, uid, owner int) net.Listener {
	t.Helper()
	var ln net.Listener
	var err error
	peercredtest.AsUser(t, uid, uid, func() { ln, err = net.Listen("unix", path) })
	if err != nil {
		t.Fatalf("listen on %s as uid %d: %v", path, uid, err)
	}
	t.Cleanup(func() { ln.Close() })
	if err := os.Lchown(path, owner, owner); err != nil {
		t.Fatal(err)
	}
	return ln
}

// jailedMachine is a jailed Machine as Start records it, without a process: its jail under a
// fresh chroot base (opened up so the jail's uid can reach it, as it could through its chroot)
// and the runtime-directory symlinks the daemon used to dial (kept in the record to show they
// are not followed).
func jailedMachine(t *testing.T) (*Machine, jail) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to build a jail owned by another uid")
	}
	base := shortDir(t, "bjs")
	j, err := newJail(base, "/usr/bin/firecracker", "vm1")
	if err != nil {
		t.Fatal(err)
	}
	j.UID, j.GID = jailUID, jailUID
	if err := j.create(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{base, filepath.Dir(j.Dir), j.Dir} {
		os.Chmod(d, 0o755)
	}
	rt := shortDir(t, "bjr")
	sockets := map[string]string{}
	for name, rel := range jailSockets {
		sockets[name] = filepath.Join(rt, name+".sock")
		if err := os.Symlink(filepath.Join(j.Root, rel), sockets[name]); err != nil {
			t.Fatal(err)
		}
	}
	m := &Machine{
		rec: vmm.Record{Driver: Name, Sockets: sockets},
		ex:  extra{Jail: j.Dir, JailID: "vm1", UID: j.UID, GID: j.GID},
	}
	return m, j
}

func TestJailedSocketServedByTheJailUID(t *testing.T) {
	m, j := jailedMachine(t)
	var fc countingServer
	fc.serve(t, listenAs(t, filepath.Join(j.Root, jailSockets["api"]), jailUID, jailUID))
	c := m.client()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if v, err := c.Version(ctx); err != nil || v != "1.14.2" || fc.hits.Load() != 1 {
		t.Fatalf("Version = %q, %v (%d requests); want the jail's Firecracker to answer", v, err, fc.hits.Load())
	}
}

// TestJailedSocketLinksAreRefused: the jail's uid owns the jail, so a compromised Firecracker
// can put a symlink where its socket was, to make the root daemon talk to a socket of the
// host. Nothing is sent there (issue 13, item 14).
func TestJailedSocketLinksAreRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A host service only root may use (think of a container runtime's socket).
	decoyDir := shortDir(t, "bjd")
	var decoy countingServer
	decoySock := filepath.Join(decoyDir, "host.sock")
	decoy.serve(t, listenAs(t, decoySock, 0, 0))

	t.Run("socket replaced by a symlink", func(t *testing.T) {
		m, j := jailedMachine(t)
		link := filepath.Join(j.Root, jailSockets["api"])
		if err := os.Symlink(decoySock, link); err != nil {
			t.Fatal(err)
		}
		os.Lchown(link, jailUID, jailUID)
		c := m.client()
		defer c.Close()
		_, err := c.Version(ctx)
		if !errors.Is(err, peercred.ErrUntrusted) || !strings.Contains(err.Error(), "is a symlink") {
			t.Errorf("Version = %v; want a refusal of the symlink", err)
		}
		vsockLink := filepath.Join(j.Root, jailSockets["vsock"])
		os.Symlink(decoySock, vsockLink)
		if _, err := m.DialAgent(ctx); !errors.Is(err, peercred.ErrUntrusted) {
			t.Errorf("DialAgent = %v; want a refusal of the symlink", err)
		}
	})
	t.Run("run directory replaced by a symlink", func(t *testing.T) {
		m, j := jailedMachine(t)
		run := filepath.Join(j.Root, "run")
		if err := os.Remove(run); err != nil {
			t.Fatal(err)
		}
		// The decoy's directory holds a socket named like Firecracker's.
		if err := os.Symlink(filepath.Join(decoyDir, "host.sock"), filepath.Join(decoyDir, apiSocket)); err != nil {
			t.Fatal(err)
		}
		os.Symlink(decoyDir, run)
		os.Lchown(run, jailUID, jailUID)
		c := m.client()
		defer c.Close()
		if _, err := c.Version(ctx); err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Errorf("Version = %v; want a refusal of the linked directory", err)
		}
	})
	t.Run("socket owned by another uid", func(t *testing.T) {
		m, j := jailedMachine(t)
		var other countingServer
		other.serve(t, listenAs(t, filepath.Join(j.Root, jailSockets["api"]), 0, 0))
		c := m.client()
		defer c.Close()
		if _, err := c.Version(ctx); !errors.Is(err, peercred.ErrUntrusted) || !strings.Contains(err.Error(), "uid 0") || other.hits.Load() != 0 {
			t.Errorf("Version = %v (%d requests); want a refusal naming the owner", err, other.hits.Load())
		}
	})
	t.Run("socket of the jail's uid served by another", func(t *testing.T) {
		m, j := jailedMachine(t)
		var other countingServer
		other.serve(t, listenAs(t, filepath.Join(j.Root, jailSockets["api"]), 0, jailUID))
		c := m.client()
		defer c.Close()
		if _, err := c.Version(ctx); !errors.Is(err, peercred.ErrUntrusted) || !strings.Contains(err.Error(), "the process serving") || other.hits.Load() != 0 {
			t.Errorf("Version = %v (%d requests); want a refusal of the listener's uid", err, other.hits.Load())
		}
	})
	if n := decoy.hits.Load(); n != 0 {
		t.Errorf("the host's socket received %d requests through the jail", n)
	}
}
