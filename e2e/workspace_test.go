package e2e

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := userCommand("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t", "GIT_CONFIG_GLOBAL=/dev/null",
		// No gc in the background: it would still be writing into .git when the test removes it.
		"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=gc.autoDetach", "GIT_CONFIG_VALUE_0=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// writeFile writes path, making its directory; in a directory of banger's user, what it makes
// belongs to that user.
func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if bangerUser == nil {
		return
	}
	// The file, and the directories MkdirAll made: up to the first that is the user's already.
	giveToUser(t, path)
	for d := filepath.Dir(path); strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err != nil || fi.Sys().(*syscall.Stat_t).Uid == bangerUser.uid {
			break
		}
		_ = os.Chown(d, int(bangerUser.uid), int(bangerUser.gid))
	}
}

// testRepo makes a repository with tracked, executable, symlinked, binary, ignored and
// untracked files, names with a space and a newline, a submodule, and a second commit.
func testRepo(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(userDir(t), "proj")
	sub := filepath.Join(filepath.Dir(dir), "lib")
	git(t, filepath.Dir(dir), "init", "-q", "-b", "main", sub)
	writeFile(t, filepath.Join(sub, "lib.c"), "int lib;\n", 0o644)
	git(t, sub, "add", ".")
	git(t, sub, "commit", "-q", "-m", "lib")
	git(t, filepath.Dir(dir), "init", "-q", "-b", "main", dir)
	writeFile(t, filepath.Join(dir, "two words.txt"), "space\n", 0o644)
	writeFile(t, filepath.Join(dir, "new\nline"), "newline\n", 0o644)
	git(t, dir, "-c", "protocol.file.allow=always", "submodule", "add", "-q", sub, "third_party/lib")
	writeFile(t, filepath.Join(dir, "README.md"), "v1\n", 0o644)
	writeFile(t, filepath.Join(dir, "scripts/run.sh"), "#!/bin/sh\necho ran from $(pwd)\n", 0o755)
	writeFile(t, filepath.Join(dir, "data.bin"), "\x00\x01\x02binary\xff", 0o644)
	writeFile(t, filepath.Join(dir, ".gitignore"), "*.log\n", 0o644)
	if err := os.Symlink("README.md", filepath.Join(dir, "readme-link")); err != nil {
		t.Fatal(err)
	}
	// Tracked although .gitignore matches it (cJSON has 72 such files): it ships, and its
	// changes in the guest come back.
	writeFile(t, filepath.Join(dir, "tracked.log"), "tracked and ignored\n", 0o644)
	git(t, dir, "add", "-f", "tracked.log")
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-q", "-m", "one")
	writeFile(t, filepath.Join(dir, "README.md"), "v2\n", 0o644)
	git(t, dir, "commit", "-q", "-am", "two")
	writeFile(t, filepath.Join(dir, "debug.log"), "ignored\n", 0o644)
	writeFile(t, filepath.Join(dir, "scratch.txt"), "untracked\n", 0o644)
	giveToUser(t, filepath.Dir(dir))
	return dir
}

func TestWorkspaceDryRunIsExactAndStartsNothing(t *testing.T) {
	repo := testRepo(t)
	r, err := banger(nil, "vm", "run", "--dry-run", repo)
	if err != nil || r.code != 0 {
		t.Fatalf("dry run: %v %+v", err, r)
	}
	got := strings.Split(strings.TrimSpace(r.stdout), "\n")
	sort.Strings(got)
	// Quoted as git ls-files quotes them; the submodule's files are listed, not the submodule.
	want := []string{`"new\nline"`, ".gitignore", ".gitmodules", "README.md", "data.bin", "readme-link", "scripts/run.sh", "third_party/lib/lib.c", "tracked.log", "two words.txt"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("dry-run list %q, want %q", got, want)
	}
	if !regexp.MustCompile(`10 files, \d+B, from .*proj to /root/proj \(dry run`).MatchString(r.stderr) || !strings.Contains(r.stderr, "1 untracked file(s)") {
		t.Errorf("dry-run stderr:\n%s", r.stderr)
	}
	r, _ = banger(nil, "vm", "run", "--dry-run", "--include-untracked", repo)
	if !strings.Contains(r.stdout, "scratch.txt") || strings.Contains(r.stdout, "debug.log") {
		t.Errorf("--include-untracked: %q (want scratch.txt, never the ignored debug.log)", r.stdout)
	}
	r, _ = banger(nil, "vm", "run", "--dry-run", userDir(t))
	if r.code != 1 || !strings.Contains(r.stderr, "not inside a git work tree") {
		t.Errorf("not a repo: exit %d %s", r.code, r.stderr)
	}
}

func TestWorkspaceCommandRunsInTheRepoWithItsStatus(t *testing.T) {
	ensureWarm(t)
	repo := testRepo(t)
	r, err := banger(nil, "vm", "run", "--rm", repo, "--", "sh", "-c",
		`pwd; ./scripts/run.sh; cat README.md; readlink readme-link; test -x scripts/run.sh && echo exec-bit; test -e scratch.txt || echo no-untracked; test -e debug.log || echo no-ignored; cat third_party/lib/lib.c "two words.txt" new*line; exit 42`)
	if err != nil {
		t.Fatal(err)
	}
	want := "/root/proj\nran from /root/proj\nv2\nREADME.md\nexec-bit\nno-untracked\nno-ignored\nint lib;\nspace\nnewline\n"
	if r.code != 42 || r.stdout != want {
		t.Errorf("exit %d stdout %q, want 42 and %q\nstderr:\n%s", r.code, r.stdout, want, r.stderr)
	}
	if !strings.Contains(r.stderr, "1 untracked file(s)") || !strings.Contains(r.stderr, "--include-untracked") {
		t.Errorf("no untracked notice:\n%s", r.stderr)
	}
	for _, tc := range []struct {
		cmd  string
		code int
	}{{"exit 0", 0}, {"exit 1", 1}, {"kill -TERM $$", 143}} {
		r, _ := banger(nil, "vm", "run", "--rm", "--guest-path", "/srv/x", repo, "--", "sh", "-c", "test \"$(pwd)\" = /srv/x || exit 99; "+tc.cmd)
		if r.code != tc.code {
			t.Errorf("%q: exit %d, want %d\n%s", tc.cmd, r.code, tc.code, r.stderr)
		}
	}
	assertNothingLeft(t)
}

func TestWorkspaceBranchFromAnOlderCommitWithUncommittedChanges(t *testing.T) {
	ensureWarm(t)
	repo := testRepo(t)
	first := git(t, repo, "rev-parse", "HEAD~1")
	writeFile(t, filepath.Join(repo, "data.bin"), "changed, uncommitted", 0o644)
	r, err := banger(nil, "vm", "run", "--rm", "--branch", "feature", "--from", "HEAD~1", repo, "--", "sh", "-c",
		`git branch --show-current; git rev-parse HEAD; cat README.md; cat data.bin; echo; git status --porcelain`)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(r.stdout, "\n")
	if r.code != 0 || len(lines) < 5 || lines[0] != "feature" || lines[1] != first || lines[2] != "v1" || lines[3] != "changed, uncommitted" || !strings.Contains(r.stdout, " M data.bin") {
		t.Errorf("exit %d stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	r, _ = banger(nil, "vm", "run", "--rm", "--branch", "bad..name", repo, "--", "true")
	if r.code != 2 || !strings.Contains(r.stderr, "not a valid branch name") {
		t.Errorf("bad branch name: exit %d %s", r.code, r.stderr)
	}
	assertNothingLeft(t)
}

func TestWorkspaceDetachExecSyncAndExport(t *testing.T) {
	ensureWarm(t)
	repo := testRepo(t)
	r := mustBanger(t, "vm", "run", "-d", "--name", "wsd", "--memory", "768M", repo)
	if strings.TrimSpace(r.stdout) != "wsd" || !strings.Contains(r.stderr, "workspace at /root/proj") {
		t.Fatalf("-d: stdout %q stderr %s", r.stdout, r.stderr)
	}
	defer mustBanger(t, "vm", "delete", "-f", "wsd")
	if got := guest(t, "wsd", "sh", "-c", "pwd; cat README.md"); got != "/root/proj\nv2" {
		t.Errorf("vm exec in the workspace: %q", got)
	}

	// The host moves on: exec warns, --sync ships again.
	writeFile(t, filepath.Join(repo, "README.md"), "v3\n", 0o644)
	git(t, repo, "commit", "-q", "-am", "three")
	r = mustBanger(t, "vm", "exec", "wsd", "--", "cat", "README.md")
	if strings.TrimSpace(r.stdout) != "v2" || !strings.Contains(r.stderr, "--sync ships it again") {
		t.Errorf("stale workspace: stdout %q stderr %s", r.stdout, r.stderr)
	}
	r = mustBanger(t, "vm", "exec", "wsd", "--sync", "--", "cat", "README.md")
	if strings.TrimSpace(r.stdout) != "v3" {
		t.Errorf("after --sync: %q", r.stdout)
	}

	// Changes in the guest come back as a patch the host applies.
	guest(t, "wsd", "sh", "-c", `printf 'v4 from the guest\n' > README.md && printf '\000\001new binary' > new.bin && rm scripts/run.sh && mkdir -p docs && echo doc > docs/a.md && echo changed in the guest > tracked.log && echo build output > build.log`)
	r = mustBanger(t, "vm", "workspace", "export", "wsd")
	patch := r.stdout
	if !strings.Contains(patch, "GIT binary patch") || !strings.Contains(patch, "deleted file mode") {
		t.Errorf("patch lacks a binary file or a deletion:\n%.2000s", patch)
	}
	patchFile := filepath.Join(userDir(t), "guest.patch")
	_ = os.WriteFile(patchFile, []byte(patch), 0o644)
	giveToUser(t, patchFile)
	git(t, repo, "apply", patchFile)
	if b, _ := os.ReadFile(filepath.Join(repo, "README.md")); string(b) != "v4 from the guest\n" {
		t.Errorf("README after apply: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(repo, "new.bin")); string(b) != "\x00\x01new binary" {
		t.Errorf("new.bin after apply: %q", b)
	}
	if _, err := os.Stat(filepath.Join(repo, "scripts/run.sh")); !os.IsNotExist(err) {
		t.Errorf("run.sh should be deleted by the patch: %v", err)
	}
	// The tracked file .gitignore matches came back; a new ignored file did not.
	if b, _ := os.ReadFile(filepath.Join(repo, "tracked.log")); string(b) != "changed in the guest\n" {
		t.Errorf("tracked.log after apply: %q; a change to a shipped file that .gitignore matches must be exported", b)
	}
	if strings.Contains(patch, "build.log") {
		t.Errorf("the patch carries build.log, a new file .gitignore matches:\n%.2000s", patch)
	}

	// Everything the guest changed was exported, so a sync may replace it; a file deleted on
	// the host is deleted in the guest too, and the next export does not bring it back.
	git(t, repo, "add", "-A")
	git(t, repo, "commit", "-q", "-m", "the guest's work")
	git(t, repo, "rm", "-q", "data.bin")
	git(t, repo, "commit", "-q", "-m", "rm data.bin")
	r = mustBanger(t, "vm", "exec", "wsd", "--sync", "--", "sh", "-c", "test -e data.bin && echo data.bin-still-there; cat README.md")
	if r.stdout != "v4 from the guest\n" {
		t.Errorf("after a sync of a host deletion: %q (stderr %s)", r.stdout, r.stderr)
	}
	if r := mustBanger(t, "vm", "workspace", "export", "wsd"); r.stdout != "" {
		t.Errorf("export right after a sync: %.1500s; want no change", r.stdout)
	}
	// A change in the guest that was not exported stops a sync, and nothing is overwritten.
	guest(t, "wsd", "sh", "-c", "echo unexported guest edit > README.md")
	writeFile(t, filepath.Join(repo, "README.md"), "v5\n", 0o644)
	git(t, repo, "commit", "-q", "-am", "five")
	r, _ = banger(nil, "vm", "exec", "wsd", "--sync", "--", "true")
	if r.code != 1 || !strings.Contains(r.stderr, "M  README.md") && !strings.Contains(r.stderr, "M\tREADME.md") || !strings.Contains(r.stderr, "vm workspace export wsd") {
		t.Errorf("sync over an unexported change: exit %d stderr %s; want 1, the file and the way out", r.code, r.stderr)
	}
	if got := guest(t, "wsd", "cat", "README.md"); got != "unexported guest edit" {
		t.Errorf("a refused sync changed README.md: %q", got)
	}
	// --force discards it.
	if r := mustBanger(t, "vm", "exec", "wsd", "--sync", "--force", "--", "cat", "README.md"); r.stdout != "v5\n" {
		t.Errorf("sync --force: %q", r.stdout)
	}
}

func TestFileSync(t *testing.T) {
	ensureWarm(t)
	src := userDir(t)
	writeFile(t, filepath.Join(src, "gitconfig"), "[user]\n\tname = t\n", 0o644)
	writeFile(t, filepath.Join(src, "dots/app/settings.json"), "{}\n", 0o644)
	secret := filepath.Join(userDir(t), "secret")
	writeFile(t, secret, "never copied\n", 0o600)
	if err := os.Symlink(secret, filepath.Join(src, "dots/escape")); err != nil {
		t.Fatal(err)
	}
	// A named pipe must be skipped with a notice, not read (that would block vm create).
	if err := syscall.Mkfifo(filepath.Join(src, "dots/pipe"), 0o600); err != nil {
		t.Fatal(err)
	}
	content := fmt.Sprintf("[[file_sync]]\nhost = %q\nguest = \"~/.gitconfig\"\n\n[[file_sync]]\nhost = %q\nguest = \"~/.config/dots\"\nmode = \"0640\"\n\n[[file_sync]]\nhost = %q\nguest = \"~/missing\"\n",
		filepath.Join(src, "gitconfig"), filepath.Join(src, "dots"), filepath.Join(src, "missing"))
	writeConfig(t, content)
	r, err := banger(nil, "vm", "run", "--rm", "--", "sh", "-c", `stat -c '%a %n' /root/.gitconfig /root/.config/dots/app/settings.json; test -e /root/.config/dots/escape || echo no-escape; test -e /root/missing || echo no-missing`)
	if err != nil {
		t.Fatal(err)
	}
	want := "600 /root/.gitconfig\n640 /root/.config/dots/app/settings.json\nno-escape\nno-missing\n"
	if r.code != 0 || r.stdout != want {
		t.Errorf("exit %d stdout %q, want %q\nstderr:\n%s", r.code, r.stdout, want, r.stderr)
	}
	if !strings.Contains(r.stderr, "escape is a symlink; skipped") || !strings.Contains(r.stderr, "pipe is a named pipe; skipped") || !strings.Contains(r.stderr, "file_sync[3]") {
		t.Errorf("warnings missing:\n%s", r.stderr)
	}
}

func TestBareWorkspaceOpensAShellInTheRepo(t *testing.T) {
	ensureWarm(t)
	repo := testRepo(t)
	// Without a command: ssh. With stdin not a terminal, the remote shell reads its commands
	// from it, which is how this test drives the interactive shape.
	// It runs outside the bridge's namespace: ssh goes through banger, not to the guest's address.
	r := outside(t, strings.NewReader("pwd\ncat README.md\nexit 5\n"), filepath.Join(h.bin, "banger"), "vm", "run", "--rm", repo)
	if r.code != 5 || r.stdout != "/root/proj\nv2\n" {
		t.Errorf("bare workspace: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	assertNothingLeft(t)
}

func TestShippingTenThousandFiles(t *testing.T) {
	ensureWarm(t)
	dir := filepath.Join(userDir(t), "big")
	git(t, filepath.Dir(dir), "init", "-q", dir)
	chunk := strings.Repeat("0123456789abcdef", 640) // 10 KiB
	for i := 0; i < 10000; i++ {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("d%02d/f%05d.txt", i%100, i)), fmt.Sprintf("%d\n%s", i, chunk), 0o644)
	}
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-q", "-m", "big")
	// The host's share of shipping is the CLI's CPU time (listing, tar, zstd; the whole run is
	// an upper bound) and the daemon's (splicing the stream to the guest), next to what merely
	// reading the files costs.
	readStart := time.Now()
	var read int64
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			read += int64(len(b))
		}
		return nil
	})
	readTook := time.Since(readStart)
	mustBanger(t, "vm", "list") // starts the daemon
	daemonBefore := processCPU(t, daemonPID(t))
	r, err := banger(nil, "vm", "run", "--rm", dir, "--", "sh", "-c", "find . -type f | wc -l; du -sm . | cut -f1")
	if err != nil || r.code != 0 {
		t.Fatalf("%v %+v", err, r)
	}
	daemonCPU := processCPU(t, daemonPID(t)) - daemonBefore
	lines := strings.Fields(r.stdout)
	if len(lines) < 1 || lines[0] != "10000" {
		t.Errorf("files in the guest: %q", r.stdout)
	}
	m := regexp.MustCompile(`shipped 10000 files \(([^)]*)\) to \S+ in ([0-9.]+)s`).FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no shipping line:\n%s", r.stderr)
	}
	t.Logf("shipped 10,000 files (%s) in %ss wall; host CPU for the whole run: CLI %.2fs, daemon %.2fs; reading the files alone: %.2fs (%d bytes)",
		m[1], m[2], r.cpu.Seconds(), daemonCPU.Seconds(), readTook.Seconds(), read)
}

// processCPU is the user and system CPU time a process has used, from /proc.
func processCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ is 100 on Linux
}

// workspace export --base takes what the user would type on the host: a branch, a tag, or a
// branch with commits the guest never got (its history is sent first).
func TestWorkspaceExportBaseTakesHostRefs(t *testing.T) {
	ensureWarm(t)
	repo := testRepo(t)
	git(t, repo, "tag", "v1", "HEAD~1")
	r := mustBanger(t, "vm", "run", "-d", "--name", "wsbase", "--memory", "768M", "--branch", "feature", repo)
	if strings.TrimSpace(r.stdout) != "wsbase" {
		t.Fatalf("vm run -d --branch: %q %s", r.stdout, r.stderr)
	}
	defer mustBanger(t, "vm", "delete", "-f", "wsbase")
	guest(t, "wsbase", "sh", "-c", `echo from the guest > guest.txt && git add guest.txt && git -c user.name=g -c user.email=g@g commit -q -m guest`)
	// A host branch the guest never saw.
	git(t, repo, "checkout", "-q", "-b", "other")
	writeFile(t, filepath.Join(repo, "other.txt"), "only on the host\n", 0o644)
	git(t, repo, "add", "other.txt")
	git(t, repo, "commit", "-q", "-m", "other")
	git(t, repo, "checkout", "-q", "main")

	for _, tc := range []struct {
		base      string
		want, not []string
	}{
		{"main", []string{"guest.txt"}, []string{"README.md", "other.txt"}},
		{"v1", []string{"guest.txt", "README.md"}, []string{"other.txt"}},
		{"other", []string{"guest.txt", "other.txt"}, nil}, // other.txt: the guest's tree lacks it
	} {
		r, _ := banger(nil, "vm", "workspace", "export", "wsbase", "--base", tc.base)
		if r.code != 0 {
			t.Errorf("--base %s: exit %d stderr %s", tc.base, r.code, r.stderr)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(r.stdout, "b/"+w) {
				t.Errorf("--base %s: the patch lacks %s:\n%.1500s", tc.base, w, r.stdout)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(r.stdout, "b/"+n) {
				t.Errorf("--base %s: the patch has %s:\n%.1500s", tc.base, n, r.stdout)
			}
		}
	}
	if r, _ := banger(nil, "vm", "workspace", "export", "wsbase", "--base", "no-such-ref"); r.code != 2 || !strings.Contains(r.stderr, `"no-such-ref" is not a commit`) {
		t.Errorf("--base no-such-ref: exit %d stderr %s", r.code, r.stderr)
	}
}
