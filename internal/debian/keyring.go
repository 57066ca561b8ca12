package debian

import (
	"bytes"
	"embed"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// The Debian archive signing keys for bookworm and trixie, copied from the host's
// debian-archive-keyring package (/usr/share/keyrings). They are public keys.
//
//go:embed keys/*.gpg
var embeddedKeys embed.FS

// Keyring is a set of OpenPGP public keys trusted to sign archive Release files.
type Keyring struct {
	entities openpgp.EntityList
}

// DefaultKeyring returns the embedded Debian archive keys (bookworm and trixie, stable and
// automatic signing keys).
func DefaultKeyring() (*Keyring, error) {
	names, err := embeddedKeys.ReadDir("keys")
	if err != nil {
		return nil, fmt.Errorf("embedded Debian keys: %w", err)
	}
	k := &Keyring{}
	for _, n := range names {
		data, err := embeddedKeys.ReadFile("keys/" + n.Name())
		if err != nil {
			return nil, fmt.Errorf("embedded Debian key %s: %w", n.Name(), err)
		}
		el, err := readKeys(data)
		if err != nil {
			return nil, fmt.Errorf("embedded Debian key %s: %w", n.Name(), err)
		}
		k.entities = append(k.entities, el...)
	}
	return k, nil
}

// LoadKeyring reads public keys from a file, binary (.gpg, like /usr/share/keyrings) or
// ASCII-armored (.asc). Use it when configuration names a keyring other than the embedded one.
func LoadKeyring(path string) (*Keyring, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read keyring: %w", err)
	}
	el, err := readKeys(data)
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", path, err)
	}
	return &Keyring{entities: el}, nil
}

// NewKeyring wraps already parsed keys (tests and callers holding go-crypto entities).
func NewKeyring(entities openpgp.EntityList) *Keyring {
	return &Keyring{entities: entities}
}

func readKeys(data []byte) (openpgp.EntityList, error) {
	var r io.Reader = bytes.NewReader(data)
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte("-----BEGIN PGP")) {
		block, err := armor.Decode(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("decode armored keys: %w", err)
		}
		r = block.Body
	}
	el, err := openpgp.ReadKeyRing(r)
	if err != nil {
		return nil, fmt.Errorf("parse OpenPGP keys: %w", err)
	}
	if len(el) == 0 {
		return nil, fmt.Errorf("no OpenPGP public keys found")
	}
	return el, nil
}

// Fingerprints lists the primary key fingerprints (upper-case hex), sorted.
func (k *Keyring) Fingerprints() []string {
	var out []string
	for _, e := range k.entities {
		out = append(out, strings.ToUpper(fmt.Sprintf("%x", e.PrimaryKey.Fingerprint)))
	}
	sort.Strings(out)
	return out
}
