package peercred_test

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/peercred"
	"github.com/banger-dev/banger/internal/peercred/peercredtest"
)

func TestCheckSocketFile(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	me := os.Geteuid()
	if err := peercred.CheckSocketFile(sock, "", peercred.Trusted(me)...); err != nil {
		t.Errorf("own socket: %v", err)
	}
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(sock, link); err != nil {
		t.Fatal(err)
	}
	if err := peercred.CheckSocketFile(link, "", me); !errors.Is(err, peercred.ErrUntrusted) || !strings.Contains(err.Error(), "is a symlink") {
		t.Errorf("symlink: %v; want a refusal", err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	if err := peercred.CheckSocketFile(file, "", me); !errors.Is(err, peercred.ErrUntrusted) || !strings.Contains(err.Error(), "not a unix socket") {
		t.Errorf("regular file: %v; want a refusal", err)
	}
	if err := peercred.CheckSocketFile(filepath.Join(dir, "none"), "", me); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: %v; want ErrNotExist", err)
	}
	if me != 0 {
		return
	}
	if err := os.Lchown(sock, peercredtest.Nobody, peercredtest.Nobody); err != nil {
		t.Fatal(err)
	}
	err = peercred.CheckSocketFile(sock, "do this", 0)
	var ue *peercred.UntrustedError
	if !errors.As(err, &ue) || ue.UID != peercredtest.Nobody || !strings.Contains(err.Error(), "uid 65534") || !strings.HasSuffix(err.Error(), "; do this") {
		t.Errorf("nobody's socket: %v; want a refusal naming uid 65534 and the hint", err)
	}
}

func TestCheckPeer(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755) // t.TempDir makes both levels 0700
	os.Chmod(dir, 0o777)
	sock := filepath.Join(dir, "s.sock")
	var ln net.Listener
	var err error
	peercredtest.AsUser(t, peercredtest.Nobody, peercredtest.Nobody, func() {
		ln, err = net.Listen("unix", sock)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if os.Geteuid() != 0 {
		t.Fatal("AsUser changed the whole process")
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if uid, err := peercred.UID(c); err != nil || uid != peercredtest.Nobody {
		t.Errorf("UID = %d, %v; want nobody", uid, err)
	}
	if err := peercred.Check(c, "the server", "", 0); !errors.Is(err, peercred.ErrUntrusted) || !strings.Contains(err.Error(), "the server belongs to uid 65534") {
		t.Errorf("Check = %v; want a refusal", err)
	}
	if err := peercred.Check(c, "the server", "", 0, peercredtest.Nobody); err != nil {
		t.Errorf("Check with nobody trusted = %v", err)
	}
}
