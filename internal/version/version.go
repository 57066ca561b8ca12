// Package version holds the build's version, commit and date, stamped in by the linker
// (see the Makefile), and the API version the CLI and daemon speak.
package version

import (
	"fmt"
	"runtime/debug"
)

// Set by -ldflags "-X github.com/banger-dev/banger/internal/version.Version=…".
var (
	Version = "dev"
	Commit  = ""
	Date    = ""
)

// API is the version of the daemon's HTTP API; it is the path prefix of every route.
const API = "v1"

// Info describes one build.
type Info struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Date    string `json:"date"`
}

// Get returns this build's Info. When the linker stamped nothing, the commit comes from the
// Go toolchain's VCS stamp where there is one.
func Get() Info {
	info := Info{Version: Version, Commit: Commit, Date: Date}
	if info.Commit == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					info.Commit = s.Value
				case "vcs.time":
					if info.Date == "" {
						info.Date = s.Value
					}
				case "vcs.modified":
					if s.Value == "true" {
						info.Commit += "-dirty"
					}
				}
			}
		}
	}
	return info
}

// String is the one-line form printed by `banger --version`.
func (i Info) String() string {
	commit := i.Commit
	if len(commit) > 12 {
		commit = commit[:12]
	}
	if commit == "" {
		commit = "unknown"
	}
	date := i.Date
	if date == "" {
		date = "unknown"
	}
	return fmt.Sprintf("%s (commit %s, built %s)", i.Version, commit, date)
}

// Same reports whether two builds are the same build: version, commit and build date all
// match. The Makefile stamps the date of every build, so a rebuilt CLI restarts the daemon.
func (i Info) Same(o Info) bool {
	return i == o
}
