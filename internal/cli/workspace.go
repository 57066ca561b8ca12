package cli

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/bytesize"
	"github.com/banger-dev/banger/internal/client"
	"github.com/banger-dev/banger/internal/wire"
	"github.com/banger-dev/banger/internal/workspace"
)

// wsOptions are the workspace flags of vm run.
type wsOptions struct {
	guestPath        string
	includeUntracked bool
	dryRun           bool
	branch, from     string
	noBootstrap      bool
}

// guestDir is where a repository goes in the guest.
func (o wsOptions) guestDir(repo *workspace.Repo) string {
	if o.guestPath != "" {
		return o.guestPath
	}
	return "/root/" + repo.Name
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// cacheDir is banger's directory in the guest for its own files.
const cacheDir = "/root/.cache/banger"

// shippedTar is where the guest keeps, per workspace, the stream that shipped it (outside the
// workspace itself): `vm workspace export` diffs against what it holds.
func shippedTar(guestDir string) string {
	return cacheDir + "/shipped" + strings.ReplaceAll(path.Clean(guestDir), "/", "_") + ".tar.zst"
}

// exportedTree is where the guest keeps the git tree of a plain workspace as `vm workspace
// export` last exported it: `vm exec --sync` may replace that state without losing work.
func exportedTree(guestDir string) string {
	return cacheDir + "/exported" + strings.ReplaceAll(path.Clean(guestDir), "/", "_")
}

// syncCheckScript is the guest side of `vm exec --sync` before the new state ships: it refuses
// (exit 10, listing the files) when the workspace has changes since it was shipped that
// were not exported, unless force; with force, files the guest added go (what it changed or
// deleted ships again). It keeps the old stream at $k.prev for pruneScript.
func syncCheckScript(dest string, force bool) string {
	return fmt.Sprintf(`set -e; k=%s; d=%s; e=%s; force=%t
[ -f "$k" ] || { echo "banger: the guest has no record of what was shipped to $d; ship it with banger vm run again" >&2; exit 3; }
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
%s extract --zstd "$k" "$t/shipped"
export GIT_DIR="$t/git" GIT_INDEX_FILE="$t/index"; git init -q --bare "$GIT_DIR"; git config core.compression 0
GIT_WORK_TREE="$t/shipped" git add -A -f; base=$(git write-tree)
GIT_WORK_TREE="$d" git add -A; now=$(git write-tree)
if [ "$now" != "$base" ] && [ "$now" != "$(cat "$e" 2>/dev/null)" ]; then
  if [ "$force" != true ]; then
    echo "banger: the workspace in the guest has changes that were not exported:" >&2
    git diff --cached --name-status "$base" | head -n 50 | sed 's/^/  /' >&2
    exit 10
  fi
  git diff --cached --name-only -z --diff-filter=A "$base" | (cd "$d" && xargs -0 -r rm -f --)
fi
cp -f "$k" "$k.prev"`, shellQuote(shippedTar(dest)), shellQuote(dest), shellQuote(exportedTree(dest)), force, agent.GuestBinary)
}

// pruneScript is the guest side of `vm exec --sync` after the new state shipped: what the old
// stream shipped and the new one does not is removed (files deleted on the host).
func pruneScript(dest string) string {
	return fmt.Sprintf(`set -e; k=%s; e=%s
%s prune "$k.prev" "$k" %s
rm -f "$k.prev" "$e"`, shellQuote(shippedTar(dest)), shellQuote(exportedTree(dest)), agent.GuestBinary, shellQuote(dest))
}

// shippedRef is the ref that marks, in a workspace shipped with --branch, the state it was
// shipped in (the branch's commit with the uncommitted changes on top).
const shippedRef = "refs/banger/shipped"

// listWorkspace opens the repository and lists what ships (with --branch: the tree of
// --from plus the uncommitted changes), telling about untracked files.
func (a *app) listWorkspace(dir string, o wsOptions) (*workspace.Repo, workspace.List, error) {
	repo, err := workspace.Open(dir)
	if err != nil {
		return nil, workspace.List{}, &api.Error{Code: "invalid", Message: err.Error()}
	}
	list, err := repo.Files(o.includeUntracked)
	if err != nil {
		return nil, list, err
	}
	if o.branch != "" {
		// --branch ships --from's tree with the uncommitted changes on top: count that.
		from := o.from
		if from == "" {
			from = "HEAD"
		}
		commit, err := repo.ResolveCommit(from)
		if err != nil {
			return nil, workspace.List{}, &api.Error{Code: "invalid", Message: err.Error()}
		}
		untracked := list.Untracked
		if list, err = repo.BranchFiles(commit); err != nil {
			return nil, list, err
		}
		if untracked > 0 {
			fmt.Fprintf(a.stderr, "note: %d untracked file(s) in %s are not shipped (--branch ships commits and changes to tracked files)\n", untracked, repo.Top)
		}
		return repo, list, nil
	}
	if list.Untracked > 0 {
		fmt.Fprintf(a.stderr, "note: %d untracked file(s) in %s are not shipped; --include-untracked ships them (ignored files never ship)\n", list.Untracked, repo.Top)
	}
	return repo, list, nil
}

// dryRun prints exactly what would ship: one path per line on stdout, the total on stderr.
func (a *app) dryRun(repo *workspace.Repo, list workspace.List, o wsOptions) error {
	for _, f := range list.Files {
		fmt.Fprintln(a.stdout, quotePath(f.Path))
	}
	fmt.Fprintf(a.stderr, "banger: %d files, %s, from %s to %s (dry run: nothing was shipped)\n",
		len(list.Files), bytesize.Format(list.Bytes), repo.Top, o.guestDir(repo))
	return nil
}

// ship sends the workspace into the VM and records it. In plain mode the tracked files are
// streamed as one zstd-compressed tar (read from the work tree as it goes: no copy on the
// host); with --branch the guest gets a git clone of a bundle of the history, on a new branch,
// with the work tree's uncommitted changes applied on top.
func (a *app) ship(ctx context.Context, cl *client.Client, vm string, repo *workspace.Repo, list workspace.List, o wsOptions) (api.Workspace, error) {
	dest := o.guestDir(repo)
	start := time.Now()
	ws := api.Workspace{HostPath: repo.Top, GuestPath: dest, Head: repo.Head(), Branch: o.branch}
	if o.branch != "" {
		if err := a.shipBranch(ctx, cl, vm, repo, o, dest); err != nil {
			return ws, err
		}
		ws.Files, ws.Bytes = len(list.Files), list.Bytes
	} else {
		// The guest keeps the stream as sent: `vm workspace export` rebuilds the shipped state
		// from it, so nothing has to snapshot the workspace before the command can change it.
		req := api.UploadRequest{Dest: dest, Keep: shippedTar(dest)}
		res, err := uploadTar(ctx, cl, vm, req, func(w io.Writer) error { return repo.WriteTar(w, list.Files) })
		if err != nil {
			return ws, err
		}
		ws.Files, ws.Bytes = res.Files, res.Bytes
	}
	if err := cl.SetWorkspace(ctx, vm, ws); err != nil {
		return ws, err
	}
	fmt.Fprintf(a.stderr, "banger: shipped %d files (%s) to %s:%s in %.2fs\n", ws.Files, bytesize.Format(ws.Bytes), vm, dest, time.Since(start).Seconds())
	return ws, nil
}

// uploadTar streams the tar that write produces, zstd-compressed, into req.Dest in the VM.
func uploadTar(ctx context.Context, cl *client.Client, vm string, req api.UploadRequest, write func(io.Writer) error) (client.UploadResult, error) {
	req.Compression = "zstd"
	pr, pw := io.Pipe()
	go func() {
		zw, err := zstd.NewWriter(pw, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(2))
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		err = write(zw)
		if cerr := zw.Close(); err == nil {
			err = cerr
		}
		pw.CloseWithError(err)
	}()
	res, err := cl.Upload(ctx, vm, req, pr)
	pr.Close()
	return res, err
}

// quotePath writes a path the way git ls-files does (core.quotePath): as it is when it is plain
// printable ASCII without '"' and '\\', else in double quotes with C escapes and octal bytes. A
// name with a newline stays on one line, and no name can send control sequences to a terminal.
func quotePath(p string) string {
	plain := true
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			plain = false
			break
		}
	}
	if plain {
		return p
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '\a':
			b.WriteString(`\a`)
		case '\b':
			b.WriteString(`\b`)
		case '\t':
			b.WriteString(`\t`)
		case '\n':
			b.WriteString(`\n`)
		case '\v':
			b.WriteString(`\v`)
		case '\f':
			b.WriteString(`\f`)
		case '\r':
			b.WriteString(`\r`)
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		default:
			if c < 0x20 || c >= 0x7f {
				fmt.Fprintf(&b, "\\%03o", c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// shipBranch clones a bundle of the history in the guest, checks out a new branch at --from
// and applies the work tree's uncommitted changes.
func (a *app) shipBranch(ctx context.Context, cl *client.Client, vm string, repo *workspace.Repo, o wsOptions, dest string) error {
	from := o.from
	if from == "" {
		from = "HEAD"
	}
	commit, err := repo.ResolveCommit(from)
	if err != nil {
		return &api.Error{Code: "invalid", Message: err.Error()}
	}
	diff, err := repo.UncommittedDiff()
	if err != nil {
		return err
	}
	ship := cacheDir + "/ship-" + repo.Name
	if err := uploadHistory(ctx, cl, vm, repo, commit, ship, diff); err != nil {
		return err
	}
	script := fmt.Sprintf(`set -e
s=%s; d=%s
if [ -e "$d" ] && [ -n "$(ls -A "$d" 2>/dev/null)" ]; then echo "banger: $d exists in the guest and is not empty" >&2; exit 3; fi
mkdir -p "$d"; cd "$d"
git init -q
git fetch -q "$s/ws.bundle" '+refs/banger/*:refs/banger/*'
git checkout -q -b %s %s
git for-each-ref --format='delete %%(refname)' refs/banger | git update-ref --stdin
if [ -s "$s/ws.patch" ]; then git apply --whitespace=nowarn "$s/ws.patch"; fi
rm -rf "$s"
i=$(mktemp); cp .git/index "$i"; export GIT_INDEX_FILE="$i"
git add -A; t=$(git write-tree); rm -f "$i"
git update-ref %s "$(git -c user.name=banger -c user.email=banger@localhost commit-tree -p HEAD -m "banger: the workspace as shipped" "$t")"`,
		shellQuote(ship), shellQuote(dest), shellQuote(o.branch), commit, shippedRef)
	code, err := a.guestScript(ctx, cl, vm, script)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("setting up branch %s in the guest failed (exit %d)", o.branch, code)
	}
	return nil
}

// uploadHistory puts into the guest directory dir a git bundle of everything reachable from
// commit (ws.bundle) and, when patch is not empty, the patch (ws.patch).
func uploadHistory(ctx context.Context, cl *client.Client, vm string, repo *workspace.Repo, commit, dir, patch string) error {
	_, err := uploadTar(ctx, cl, vm, api.UploadRequest{Dest: dir}, func(w io.Writer) error {
		var bundle bytes.Buffer
		if err := repo.Bundle(&bundle, commit); err != nil {
			return err
		}
		tw := tar.NewWriter(w)
		for _, f := range []struct {
			name string
			data []byte
		}{{"ws.bundle", bundle.Bytes()}, {"ws.patch", []byte(patch)}} {
			if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o600, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
				return err
			}
			if _, err := tw.Write(f.data); err != nil {
				return err
			}
		}
		return tw.Close()
	})
	return err
}

// exportBase resolves --base as the user typed it — a branch or tag of the host's repository,
// or any commit there — and makes sure the guest's copy of a --branch workspace has that
// commit (only the shipped branch's history went in), sending its history when it does not.
func (a *app) exportBase(ctx context.Context, cl *client.Client, vm api.VM, base string) (string, error) {
	w := vm.Workspace
	repo, err := workspace.Open(w.HostPath)
	if err != nil {
		return "", fmt.Errorf("--base %s needs the workspace's repository on the host: %w", base, err)
	}
	commit, err := repo.ResolveCommit(base)
	if err != nil {
		return "", usagef("--base: %v", err)
	}
	has := fmt.Sprintf("cd %s && git cat-file -e %s^{commit} 2>/dev/null", shellQuote(w.GuestPath), commit)
	if code, err := a.guestScript(ctx, cl, vm.Name, has); err != nil || code == 0 {
		return commit, err
	}
	dir := cacheDir + "/base-" + repo.Name
	if err := uploadHistory(ctx, cl, vm.Name, repo, commit, dir, ""); err != nil {
		return "", err
	}
	fetch := fmt.Sprintf(`set -e; s=%s; cd %s
git fetch -q "$s/ws.bundle" '+refs/banger/*:refs/banger/base/*'
git for-each-ref --format='delete %%(refname)' refs/banger/base | git update-ref --stdin
rm -rf "$s"`, shellQuote(dir), shellQuote(w.GuestPath))
	code, err := a.guestScript(ctx, cl, vm.Name, fetch)
	if err == nil && code != 0 {
		err = fmt.Errorf("sending %s (%s) to the guest's copy of the workspace failed (exit %d)", base, commit, code)
	}
	return commit, err
}

// guestScript runs a shell script in the guest with its output on banger's stderr.
func (a *app) guestScript(ctx context.Context, cl *client.Client, vm, script string) (int, error) {
	exit, err := cl.Exec(ctx, vm, api.ExecRequest{Argv: []string{"sh", "-c", script}}, wireIO(nil, a.stderr, a.stderr))
	if err != nil {
		return ExitError, err
	}
	return exit.Code, nil
}

// bootstrap runs `mise trust && mise install` for a repository with a mise config, when the
// image has mise: in the background (logged in the guest), or in the foreground for -d.
// Failures are reported, never fatal.
func (a *app) bootstrap(ctx context.Context, cl *client.Client, vm string, repo *workspace.Repo, dest string, foreground bool) {
	if !hasMiseConfig(repo.Top) {
		return
	}
	log := fmt.Sprintf("%s/vm-run-tooling-%s.log", cacheDir, repo.Name)
	inner := fmt.Sprintf("cd %s && mise trust && mise install", shellQuote(dest))
	check := `command -v mise >/dev/null 2>&1 || { echo "banger: the repository has a mise config, but the image has no mise; tooling not installed" >&2; exit 0; }; `
	var script string
	if foreground {
		fmt.Fprintf(a.stderr, "banger: installing the repository's tools (mise install); log in the guest at %s\n", log)
		script = check + fmt.Sprintf("mkdir -p %s && (%s) 2>&1 | tee %s", cacheDir, inner, shellQuote(log))
	} else {
		script = check + fmt.Sprintf("mkdir -p %s && setsid sh -c %s >%s 2>&1 </dev/null & echo \"banger: installing the repository's tools in the background; log in the guest at %s\" >&2",
			cacheDir, shellQuote(inner), shellQuote(log), log)
	}
	if code, err := a.guestScript(ctx, cl, vm, script); err != nil || code != 0 {
		fmt.Fprintf(a.stderr, "note: tooling bootstrap failed (exit %d, %v); see %s in the guest\n", code, err, log)
	}
}

// workspaceCmd is `banger vm workspace`.
func (a *app) vmWorkspaceCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "workspace",
		Short:   "Work with the repository shipped into a VM",
		Long:    "Commands for the workspace `banger vm run ./repo` shipped into a VM.",
		Example: "  banger vm workspace export dev | git apply",
	}
	var base, out string
	export := &cobra.Command{
		Use:   "export VM [--base REF] [-o FILE]",
		Short: "Get the guest's changes as a git patch",
		Long: `Print the changes made in the VM's workspace since it was shipped, as a binary git patch that
` + "`git apply`" + ` takes in the host's work tree (new, changed and deleted files; binary files too). With
--base REF (for a workspace shipped with --branch) the patch is against REF — a branch, tag or
commit of the host's repository, as you would give it to git there — so it includes commits
made in the guest.`,
		Example: `  banger vm workspace export dev | git apply
  banger vm workspace export dev -o guest.patch
  banger vm workspace export dev --base main > since-main.patch`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, vm, err := a.connectVM(c.Context(), args[0])
			if err != nil {
				return err
			}
			if vm.Workspace == nil {
				return &api.Error{Code: "invalid", Message: fmt.Sprintf("vm %s has no workspace", vm.Name), Hint: "ship one with `banger vm run ./repo`"}
			}
			dest := vm.Workspace.GuestPath
			var script string
			if base != "" {
				if vm.Workspace.Branch == "" {
					return usagef("--base needs a workspace shipped with --branch (it has git history in the guest)")
				}
				commit, err := a.exportBase(c.Context(), cl, vm, base)
				if err != nil {
					return err
				}
				script = fmt.Sprintf(`set -e; cd %s; i=$(mktemp); trap 'rm -f "$i"' EXIT; export GIT_INDEX_FILE="$i"; git read-tree HEAD; git add -A; git diff --cached --binary %s`, shellQuote(dest), commit)
			} else if vm.Workspace.Branch != "" {
				script = fmt.Sprintf(`set -e; cd %s; i=$(mktemp); trap 'rm -f "$i"' EXIT; cp .git/index "$i"; export GIT_INDEX_FILE="$i"; git add -A; git diff --cached --binary %s`, shellQuote(dest), shippedRef)
			} else {
				// The shipped state, rebuilt from the stream the guest kept, against the
				// workspace now; both go through one throwaway index so that git sees renames,
				// modes and binary files as it would in the host's work tree. Every shipped file
				// is added (-f: a tracked file that .gitignore also matches shipped too), so
				// that its changes are exported; new files count when not ignored.
				script = fmt.Sprintf(`set -e; k=%s; d=%s
[ -f "$k" ] || { echo "banger: the guest has no record of what was shipped to $d; ship it again with banger vm exec --sync" >&2; exit 3; }
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
%s extract --zstd "$k" "$t/shipped"
export GIT_DIR="$t/git" GIT_INDEX_FILE="$t/index"; git init -q --bare "$GIT_DIR"; git config core.compression 0
GIT_WORK_TREE="$t/shipped" git add -A -f; base=$(git write-tree)
GIT_WORK_TREE="$d" git add -A; git diff --cached --binary "$base"
git write-tree > %s`, shellQuote(shippedTar(dest)), shellQuote(dest), agent.GuestBinary, shellQuote(exportedTree(dest)))
			}
			w := a.stdout
			if out != "" {
				f, err := os.Create(out)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			exit, err := cl.Exec(c.Context(), vm.Name, api.ExecRequest{Argv: []string{"sh", "-c", script}}, wireIO(nil, w, a.stderr))
			if err != nil {
				return err
			}
			if exit.Code != 0 {
				return &exitError{ExitError}
			}
			return nil
		},
	}
	export.Flags().StringVar(&base, "base", "", "diff against this branch, tag or commit of the host's repository (workspaces shipped with --branch)")
	export.Flags().StringVarP(&out, "output", "o", "", "write the patch to this file instead of stdout")
	c.AddCommand(export)
	return c
}

func wireIO(stdin io.Reader, stdout, stderr io.Writer) wire.CallerIO {
	return wire.CallerIO{Stdin: stdin, Stdout: stdout, Stderr: stderr}
}
