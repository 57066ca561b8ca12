package debian

import (
	"strings"
	"testing"
	"time"
)

func TestReadParagraphs(t *testing.T) {
	const text = "Package: a\nDescription: short\n line one\n .\n line three\n\n\n# comment\nPackage: b\r\nDepends: x,\n  y\n"
	var got []paragraph
	err := readParagraphs(strings.NewReader(text), func(p paragraph) error {
		got = append(got, p)
		return nil
	})
	if err != nil {
		t.Fatalf("readParagraphs: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d paragraphs; want 2", len(got))
	}
	if d := got[0].get("description"); d != "short\nline one\n.\nline three" {
		t.Errorf("Description = %q; want the continuation lines joined by newlines", d)
	}
	if d := got[1].get("Depends"); d != "x,\ny" {
		t.Errorf("Depends = %q; want %q", d, "x,\ny")
	}
	if p := got[1].get("Package"); p != "b" {
		t.Errorf("Package = %q; want b (CRLF line ending trimmed)", p)
	}
}

func TestReadParagraphsErrors(t *testing.T) {
	for _, text := range []string{
		" continuation first\n",
		"no colon here\n",
		"Bad Name: x\n",
		"Field: " + strings.Repeat("x", maxControlLine+10) + "\n",
	} {
		err := readParagraphs(strings.NewReader(text), func(paragraph) error { return nil })
		if err == nil {
			t.Errorf("readParagraphs(%q) succeeded; want an error", truncate(text, 30))
		}
	}
}

func TestParseRelease(t *testing.T) {
	text := "Suite: oldstable\nCodename: bookworm\nDate: Sat, 11 Jul 2026 10:16:37 UTC\n" +
		"Valid-Until: Sat, 18 Jul 2026 10:16:37 +0000\nAcquire-By-Hash: yes\nSHA256:\n" +
		" 9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5  8790396 main/binary-amd64/Packages.xz\n"
	rel, err := parseRelease([]byte(text))
	if err != nil {
		t.Fatalf("parseRelease: %v", err)
	}
	want := time.Date(2026, 7, 11, 10, 16, 37, 0, time.UTC)
	if !rel.Date.Equal(want) || rel.ValidUntil.Sub(rel.Date) != 7*24*time.Hour || !rel.AcquireByHash {
		t.Fatalf("Release = %+v; want Date %v, Valid-Until a week later, Acquire-By-Hash", rel, want)
	}
	fh := rel.SHA256["main/binary-amd64/Packages.xz"]
	if fh.Size != 8790396 || !strings.HasPrefix(fh.SHA256, "9e0b5a") {
		t.Fatalf("Packages.xz entry = %+v; want size 8790396 and the listed hash", fh)
	}

	for name, bad := range map[string]string{
		"no date":      "Suite: x\nSHA256:\n " + strings.Repeat("a", 64) + " 1 f\n",
		"bad date":     "Date: yesterday\nSHA256:\n " + strings.Repeat("a", 64) + " 1 f\n",
		"no hashes":    "Date: Sat, 11 Jul 2026 10:16:37 UTC\n",
		"short hash":   "Date: Sat, 11 Jul 2026 10:16:37 UTC\nSHA256:\n abc 1 f\n",
		"bad size":     "Date: Sat, 11 Jul 2026 10:16:37 UTC\nSHA256:\n " + strings.Repeat("a", 64) + " -1 f\n",
		"empty":        "",
		"bad validity": "Date: Sat, 11 Jul 2026 10:16:37 UTC\nValid-Until: never\nSHA256:\n " + strings.Repeat("a", 64) + " 1 f\n",
	} {
		if _, err := parseRelease([]byte(bad)); err == nil {
			t.Errorf("parseRelease(%s) succeeded; want an error", name)
		}
	}
}
