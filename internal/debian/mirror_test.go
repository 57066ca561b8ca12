package debian

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDefaultMirror(t *testing.T) {
	const thisHost = `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`
	tests := []struct {
		name  string
		files map[string]string // path under etc/apt → content
		want  string
	}{
		{
			name: "no apt configuration",
			want: FallbackMirror,
		},
		{
			name:  "deb822 like this host",
			files: map[string]string{"sources.list.d/debian.sources": thisHost},
			want:  "http://deb.debian.org/debian",
		},
		{
			name: "one-line with options and trailing slash",
			files: map[string]string{"sources.list": `# comment
deb-src http://src.example.org/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://ftp.de.debian.org/debian/ bookworm main contrib # inline comment
`},
			want: "http://ftp.de.debian.org/debian",
		},
		{
			name:  "one-line with spaced brackets",
			files: map[string]string{"sources.list": "deb [ arch=amd64 ] https://mirror.example.net/debian trixie main\n"},
			want:  "https://mirror.example.net/debian",
		},
		{
			name: "security only",
			files: map[string]string{"sources.list": `deb http://security.debian.org/debian-security bookworm-security main
deb http://deb.debian.org/debian-security bookworm-security main
deb http://security.debian.org buster/updates main
`},
			want: FallbackMirror,
		},
		{
			name: "third-party repositories skipped, Debian one found later",
			files: map[string]string{
				"sources.list.d/a-google-cloud-sdk.list": "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n",
				"sources.list.d/b-nodesource.sources": `Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
`,
				"sources.list.d/c-docker.list": "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.gpg] https://download.docker.com/linux/debian bookworm stable\n",
				"sources.list.d/d-vendor.sources": `Types: deb
URIs: https://apt.vendor.example/debian
Suites: bookworm
Components: main
Signed-By: /etc/apt/keyrings/vendor.gpg
`,
				"sources.list.d/e-debian.list": "deb http://mirror.example.org/debian bookworm main\n",
			},
			want: "http://mirror.example.org/debian",
		},
		{
			name: "sources.list comes before sources.list.d",
			files: map[string]string{
				"sources.list":                  "deb http://first.example.org/debian bookworm main\n",
				"sources.list.d/aaa.list":       "deb http://second.example.org/debian bookworm main\n",
				"sources.list.d/debian.sources": thisHost,
			},
			want: "http://first.example.org/debian",
		},
		{
			name: "disabled deb822 entry and deb-src skipped",
			files: map[string]string{"sources.list.d/debian.sources": `Types: deb
URIs: http://disabled.example.org/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: http://src.example.org/debian
Suites: bookworm
Components: main

Types: deb deb-src
URIs: http://enabled.example.org/debian
Suites: bookworm
Components: main
`},
			want: "http://enabled.example.org/debian",
		},
		{
			name: "disabled file names ignored",
			files: map[string]string{
				"sources.list.d/debian.list.disabled-by-farm": "deb http://disabled.example.org/debian bookworm main\n",
				"sources.list.d/debian.list.save":             "deb http://save.example.org/debian bookworm main\n",
			},
			want: FallbackMirror,
		},
		{
			name:  "non-http schemes skipped",
			files: map[string]string{"sources.list": "deb file:/srv/debian bookworm main\ndeb cdrom:[Debian]/ bookworm main\ndeb mirror+http://m.example/list bookworm main\n"},
			want:  FallbackMirror,
		},
		{
			name:  "updates and backports suites count as Debian",
			files: map[string]string{"sources.list": "deb http://bp.example.org/debian bookworm-backports main\n"},
			want:  "http://bp.example.org/debian",
		},
		{
			name:  "malformed lines ignored",
			files: map[string]string{"sources.list": "deb\ndeb [arch=amd64 http://broken.example.org/debian bookworm main\ndeb http://ok.example.org/debian sid main\n"},
			want:  "http://ok.example.org/debian",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for name, content := range tt.files {
				p := filepath.Join(root, "etc/apt", name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := DefaultMirror(root); got != tt.want {
				t.Fatalf("DefaultMirror = %q; want %q", got, tt.want)
			}
		})
	}
}
