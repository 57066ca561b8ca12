package debian

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

func TestDefaultKeyringHoldsDebianKeys(t *testing.T) {
	k, err := DefaultKeyring()
	if err != nil {
		t.Fatalf("DefaultKeyring: %v", err)
	}
	got := strings.Join(k.Fingerprints(), " ")
	for _, fp := range []string{
		"B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8", // Debian Archive Automatic Signing Key (12/bookworm)
		"4D64FEC119C2029067D6E791F8D2585B8783D481", // Debian Stable Release Key (12/bookworm)
		"41587F7DB8C774BCCF131416762F67A0B2C39DE4", // Debian Stable Release Key (13/trixie)
		"04B54C3CDCA79751B16BC6B5225629DF75B188BD", // Debian Archive Automatic Signing Key (13/trixie)
	} {
		if !strings.Contains(got, fp) {
			t.Errorf("embedded keyring lacks %s; have %s", fp, got)
		}
	}
}

func TestLoadKeyring(t *testing.T) {
	key := newTestKey(t, time.Time{})
	var bin bytes.Buffer
	if err := key.Serialize(&bin); err != nil {
		t.Fatal(err)
	}
	var arm bytes.Buffer
	w, _ := armor.Encode(&arm, "PGP PUBLIC KEY BLOCK", nil)
	w.Write(bin.Bytes())
	w.Close()

	dir := t.TempDir()
	for name, data := range map[string][]byte{"k.gpg": bin.Bytes(), "k.asc": arm.Bytes()} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		k, err := LoadKeyring(p)
		if err != nil {
			t.Fatalf("LoadKeyring(%s): %v", name, err)
		}
		if len(k.Fingerprints()) != 1 {
			t.Fatalf("LoadKeyring(%s) has %d keys; want 1", name, len(k.Fingerprints()))
		}
	}
	os.WriteFile(filepath.Join(dir, "junk"), []byte("not a key"), 0o644)
	for _, p := range []string{filepath.Join(dir, "junk"), filepath.Join(dir, "missing")} {
		if _, err := LoadKeyring(p); err == nil {
			t.Errorf("LoadKeyring(%s) succeeded; want an error", filepath.Base(p))
		}
	}
}
