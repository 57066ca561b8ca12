package debian

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// Release is the verified content of a suite's InRelease file.
type Release struct {
	Suite         string              // e.g. "oldstable"
	Codename      string              // e.g. "bookworm"
	Date          time.Time           // when the archive generated it
	ValidUntil    time.Time           // zero when the archive sets no expiry
	AcquireByHash bool                // indices may be fetched from by-hash/SHA256/<hash>
	SHA256        map[string]FileHash // index path relative to dists/<suite>/ → size and hash
	SignedBy      string              // fingerprint of the key whose signature was accepted
}

// FileHash is the size and SHA-256 (lower-case hex) of one file.
type FileHash struct {
	Size   int64
	SHA256 string
}

// MaxClockSkew is how far in the future a Release's Date may lie: a clock that far off here,
// or a Release dated that far ahead, is refused.
const MaxClockSkew = 24 * time.Hour

// ErrFutureRelease is matched by the error for a Release dated more than MaxClockSkew ahead.
var ErrFutureRelease = errors.New("the Release is dated in the future")

// VerifyInRelease checks that data is an OpenPGP clearsigned message with a valid, unexpired
// signature by a key in keyring, then parses the signed text (and only that) as a Release.
// A Valid-Until in the past is rejected: it means a stale mirror or replayed metadata.
func VerifyInRelease(data []byte, keyring *Keyring, now time.Time) (*Release, error) {
	if keyring == nil || len(keyring.entities) == 0 {
		return nil, errors.New("no trusted keys to verify the signature against")
	}
	block, rest := clearsign.Decode(data)
	if block == nil {
		return nil, errors.New("not an OpenPGP clearsigned message (unsigned or corrupted)")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("unexpected data after the signature block")
	}
	signer, err := block.VerifySignature(keyring.entities, &packet.Config{Time: func() time.Time { return now }})
	if err != nil {
		return nil, describeSignatureError(err)
	}
	rel, err := parseRelease(block.Plaintext)
	if err != nil {
		return nil, fmt.Errorf("parse signed Release: %w", err)
	}
	rel.SignedBy = fingerprint(signer)
	if rel.Date.After(now.Add(MaxClockSkew)) {
		return nil, fmt.Errorf("%w: Date %s is more than %s after this host's clock (%s); check the host's clock, or the mirror serves forged metadata",
			ErrFutureRelease, rel.Date.UTC().Format(time.RFC3339), MaxClockSkew, now.UTC().Format(time.RFC3339))
	}
	if !rel.ValidUntil.IsZero() && now.After(rel.ValidUntil) {
		return nil, fmt.Errorf("expired at %s (Valid-Until); the mirror serves stale or replayed metadata",
			rel.ValidUntil.UTC().Format(time.RFC3339))
	}
	return rel, nil
}

func describeSignatureError(err error) error {
	switch {
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return fmt.Errorf("not signed by any trusted key (is the keyring right for this suite?): %w", err)
	case errors.Is(err, pgperrors.ErrSignatureExpired):
		return fmt.Errorf("signature has expired: %w", err)
	case errors.Is(err, pgperrors.ErrKeyExpired):
		return fmt.Errorf("signed by an expired key: %w", err)
	case errors.Is(err, pgperrors.ErrKeyRevoked):
		return fmt.Errorf("signed by a revoked key: %w", err)
	default:
		return fmt.Errorf("invalid signature (tampered or corrupted data): %w", err)
	}
}

func fingerprint(e *openpgp.Entity) string {
	if e == nil || e.PrimaryKey == nil {
		return ""
	}
	return strings.ToUpper(fmt.Sprintf("%x", e.PrimaryKey.Fingerprint))
}

// parseRelease parses the (already verified) Release paragraph.
func parseRelease(text []byte) (*Release, error) {
	var p paragraph
	err := readParagraphs(bytes.NewReader(text), func(q paragraph) error {
		p = q
		return errStop
	})
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, errors.New("empty Release")
	}
	rel := &Release{
		Suite:         p.get("Suite"),
		Codename:      p.get("Codename"),
		AcquireByHash: strings.EqualFold(p.get("Acquire-By-Hash"), "yes"),
		SHA256:        map[string]FileHash{},
	}
	if rel.Date, err = parseReleaseTime(p.get("Date")); err != nil {
		return nil, fmt.Errorf("field Date: %w", err)
	}
	if vu := p.get("Valid-Until"); vu != "" {
		if rel.ValidUntil, err = parseReleaseTime(vu); err != nil {
			return nil, fmt.Errorf("field Valid-Until: %w", err)
		}
	}
	for _, line := range strings.Split(p.get("SHA256"), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 || !isSHA256Hex(f[0]) {
			return nil, fmt.Errorf("malformed SHA256 entry %q", truncate(line, 80))
		}
		size, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("malformed size in SHA256 entry %q", truncate(line, 80))
		}
		rel.SHA256[f[2]] = FileHash{Size: size, SHA256: f[0]}
	}
	if len(rel.SHA256) == 0 {
		return nil, errors.New("the Release has no SHA256 file list")
	}
	return rel, nil
}

func parseReleaseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("missing")
	}
	for _, layout := range []string{time.RFC1123, time.RFC1123Z, "Mon, 2 Jan 2006 15:04:05 MST", "Mon, 2 Jan 2006 15:04:05 -0700"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("unrecognised time %q", s)
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
