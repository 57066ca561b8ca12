package debian

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
)

const seedRelease = `Origin: Debian
Suite: oldstable
Codename: bookworm
Date: Sat, 05 Dec 2026 10:00:00 UTC
Valid-Until: Sat, 12 Dec 2026 10:00:00 UTC
Acquire-By-Hash: yes
SHA256:
 0000000000000000000000000000000000000000000000000000000000000000     1234 main/binary-amd64/Packages.xz
 1111111111111111111111111111111111111111111111111111111111111111      99 main/binary-amd64/Packages.gz
`

// FuzzInRelease feeds arbitrary bytes to the InRelease verifier (clearsign framing, signature
// check) and to the Release parser behind it, which only ever sees verified text but must not
// misbehave on any.
func FuzzInRelease(f *testing.F) {
	key := newTestKey(f, time.Time{})
	keyring := NewKeyring(openpgp.EntityList{key})
	signed := clearsignBytes(f, key, nil, []byte(seedRelease))
	f.Add(signed)
	f.Add([]byte(seedRelease))
	f.Add(bytes.Replace(signed, []byte("bookworm"), []byte("trixie!!"), 1))
	f.Add([]byte("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nDate: x\n-----BEGIN PGP SIGNATURE-----\n\n-----END PGP SIGNATURE-----\n"))
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		if rel, err := VerifyInRelease(data, keyring, now); err == nil {
			if rel.Date.After(now.Add(MaxClockSkew)) {
				t.Fatalf("accepted a Release dated %v", rel.Date)
			}
		}
		if rel, err := parseRelease(data); err == nil && len(rel.SHA256) == 0 {
			t.Fatal("parseRelease accepted a Release without a SHA256 list")
		}
	})
}

// FuzzPackagesIndex feeds arbitrary bytes to the Packages index parser.
func FuzzPackagesIndex(f *testing.F) {
	f.Add([]byte("Package: a\nVersion: 1.0\nArchitecture: amd64\nDepends: b (= 2)\nFilename: pool/a.deb\nSize: 10\nSHA256: " +
		"0000000000000000000000000000000000000000000000000000000000000000\n\nPackage: b\nVersion: 2\nDescription: x\n long\n .\n more\n"))
	f.Add([]byte("# comment\nTypes: deb\nURIs: http://x/debian\nSuites: bookworm\nComponents: main\n"))
	f.Add([]byte(" continuation first\n"))
	f.Add([]byte("Package: a\n" + string(bytes.Repeat([]byte(" x\n"), 1000))))
	f.Fuzz(func(t *testing.T, data []byte) {
		index, err := parsePackages(bytes.NewReader(data))
		if err != nil {
			return
		}
		for name, versions := range index {
			for _, p := range versions {
				if p.Name != name || name == "" {
					t.Fatalf("package %q filed under %q", p.Name, name)
				}
			}
		}
	})
}

// FuzzAr feeds arbitrary bytes to the .deb container reader: the ar member list, the
// debian-binary check, and the data member's decompressor (read up to 1 MiB).
func FuzzAr(f *testing.F) {
	f.Add(buildDeb(f, "xz", tarEntry{name: "./boot/", typ: tar.TypeDir}, tarEntry{name: "./boot/vmlinuz", body: "bzImage"}))
	f.Add(buildDeb(f, "zst", tarEntry{name: "./f", body: "x"}))
	f.Add(buildDeb(f, "gz", tarEntry{name: "./f", body: "x"}))
	f.Add(buildDeb(f, "", tarEntry{name: "./f", body: "x"}))
	f.Add(buildAr(arFile{"a", []byte("odd")}, arFile{"bb", []byte("even")}))
	f.Add([]byte("!<arch>\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		members, err := readAr(bytes.NewReader(data), size)
		if err == nil {
			for _, m := range members {
				if m.Offset < 0 || m.Size < 0 || m.Offset+m.Size > size {
					t.Fatalf("member %q [%d, +%d) lies outside the %d-byte archive", m.Name, m.Offset, m.Size, size)
				}
			}
		}
		sr, name, err := debData(bytes.NewReader(data), size)
		if err != nil {
			return
		}
		r, closeDec, err := decompressor(name, sr)
		if err != nil {
			return
		}
		defer closeDec()
		_, _ = io.Copy(io.Discard, io.LimitReader(r, 1<<20))
	})
}
