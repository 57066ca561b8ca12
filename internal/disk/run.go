package disk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// mkfsTool is the formatter CreateExt4 runs; a variable so tests can make it fail.
var mkfsTool = "mkfs.ext4"

// sbinPath holds the directories e2fsprogs lives in, which a daemon's PATH may lack.
var sbinPath = []string{"/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"}

// lookTool finds a program in PATH or the sbin directories.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range sbinPath {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or %s", name, strings.Join(sbinPath, ":"))
}

// maxOutput is how much of a failed program's output (its end) an error quotes.
const maxOutput = 2000

// toolError is a program that ran and failed.
type toolError struct {
	tool   string
	code   int // exit code; -1 when killed by a signal
	output string
}

func (e *toolError) Error() string {
	msg := fmt.Sprintf("%s failed (exit %d)", e.tool, e.code)
	if e.output != "" {
		msg += ": " + e.output
	}
	return msg
}

// run runs a short e2fsprogs command and returns its trimmed output in the error if it fails.
func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: %w", filepath.Base(name), ctxErr)
	}
	if err == nil {
		return nil
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		output := strings.TrimSpace(string(out))
		if len(output) > maxOutput {
			output = "…" + output[len(output)-maxOutput:]
		}
		return &toolError{tool: filepath.Base(name), code: exitErr.ExitCode(), output: output}
	}
	return fmt.Errorf("run %s: %w", filepath.Base(name), err)
}
