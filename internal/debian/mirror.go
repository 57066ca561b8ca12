package debian

import (
	"bufio"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// FallbackMirror is used when the host's apt sources name no usable Debian mirror.
const FallbackMirror = "http://deb.debian.org/debian"

// DefaultMirror returns the first http(s) Debian archive mirror that the apt sources under root
// name ("/" for this host), in apt's reading order: etc/apt/sources.list, then the *.list and
// *.sources files of etc/apt/sources.list.d sorted by name. Security mirrors and third-party
// repositories are skipped (see isDebianSource). Unreadable or malformed files are ignored; when
// nothing qualifies the result is FallbackMirror. The returned URI has no trailing slash.
func DefaultMirror(root string) string {
	files := []string{filepath.Join(root, "etc/apt/sources.list")}
	parts, _ := filepath.Glob(filepath.Join(root, "etc/apt/sources.list.d/*"))
	sort.Strings(parts)
	files = append(files, parts...)
	for _, f := range files {
		var sources []aptSource
		switch {
		case strings.HasSuffix(f, ".list"):
			sources = readOneLineSources(f)
		case strings.HasSuffix(f, ".sources"):
			sources = readDeb822Sources(f)
		}
		for _, s := range sources {
			if isDebianSource(s) {
				return strings.TrimRight(s.uri, "/")
			}
		}
	}
	return FallbackMirror
}

// aptSource is one (type deb, URI, suite) combination named by an apt sources file.
type aptSource struct {
	uri        string
	suite      string
	components []string
	signedBy   string // Signed-By / signed-by option, "" when absent
}

// readOneLineSources parses the classic format:
// deb [ option=value ... ] uri suite [component ...]
func readOneLineSources(path string) []aptSource {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []aptSource
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 3 || fields[0] != "deb" {
			continue
		}
		fields = fields[1:]
		signedBy := ""
		if strings.HasPrefix(fields[0], "[") {
			// Options run to the token that closes the bracket; "[" and "]" may stand alone.
			opts := strings.Join(fields, " ")
			end := strings.Index(opts, "]")
			if end < 0 {
				continue
			}
			for _, o := range strings.Fields(strings.Trim(opts[:end], "[ ")) {
				if k, v, ok := strings.Cut(o, "="); ok && strings.EqualFold(k, "signed-by") {
					signedBy = v
				}
			}
			fields = strings.Fields(opts[end+1:])
		}
		if len(fields) < 2 {
			continue
		}
		out = append(out, aptSource{uri: fields[0], suite: fields[1], components: fields[2:], signedBy: signedBy})
	}
	return out
}

// readDeb822Sources parses the deb822 format (Types/URIs/Suites/Components, Enabled: no skips).
func readDeb822Sources(path string) []aptSource {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []aptSource
	_ = readParagraphs(f, func(p paragraph) error {
		if !hasWord(p.get("Types"), "deb") || strings.EqualFold(strings.TrimSpace(p.get("Enabled")), "no") {
			return nil
		}
		signedBy := strings.TrimSpace(p.get("Signed-By"))
		if strings.Contains(signedBy, "\n") {
			signedBy = "inline-key" // an embedded key block: not the Debian archive keyring file
		}
		for _, uri := range strings.Fields(p.get("URIs")) {
			for _, suite := range strings.Fields(p.get("Suites")) {
				out = append(out, aptSource{uri: uri, suite: suite, components: strings.Fields(p.get("Components")), signedBy: signedBy})
			}
		}
		return nil
	})
	return out
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

// debianSuites are the codenames and aliases of the Debian archive. Suites of other
// repositories ("nodistro", "cloud-sdk-bookworm", "jammy") are not in it.
var debianSuites = map[string]bool{
	"stable": true, "oldstable": true, "oldoldstable": true, "testing": true, "unstable": true,
	"sid": true, "experimental": true,
	"hamm": true, "slink": true, "potato": true, "woody": true, "sarge": true, "etch": true,
	"lenny": true, "squeeze": true, "wheezy": true, "jessie": true, "stretch": true,
	"buster": true, "bullseye": true, "bookworm": true, "trixie": true, "forky": true,
	"duke": true,
}

// isDebianSource reports whether s looks like the main Debian archive: http(s) URI, a Debian
// suite (optionally -updates, -backports, …) that is not a security suite, the "main"
// component, no debian-security path and, when a Signed-By keyring is named, a Debian archive
// keyring. Third-party repositories that reuse Debian codenames (Docker's "bookworm stable")
// fail the component or keyring test.
func isDebianSource(s aptSource) bool {
	u, err := url.Parse(s.uri)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return false
	}
	if strings.Contains(u.Path, "debian-security") {
		return false
	}
	base, suffix, _ := strings.Cut(s.suite, "-")
	if !debianSuites[base] || strings.Contains(s.suite, "/") {
		return false
	}
	switch suffix {
	case "", "updates", "backports", "backports-sloppy", "proposed-updates":
	default:
		return false // security and anything unknown
	}
	hasMain := false
	for _, c := range s.components {
		hasMain = hasMain || c == "main"
	}
	if !hasMain {
		return false
	}
	if s.signedBy != "" && !strings.HasPrefix(filepath.Base(s.signedBy), "debian-archive-") {
		return false
	}
	return true
}
