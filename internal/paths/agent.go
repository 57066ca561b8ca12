package paths

import (
	"fmt"
	"os"
	"path/filepath"
)

// EnvAgent names the environment variable that points bangerd at a banger-agent of the
// user's choosing instead of the installed one.
const EnvAgent = "BANGER_AGENT"

// Agent finds the banger-agent that the bangerd binary at daemon uses, so that installs under
// any prefix work side by side: $BANGER_AGENT (read with getenv) when set; else, daemon's
// symlinks followed, $PREFIX/lib/banger/banger-agent for $PREFIX/bin/bangerd; else
// banger-agent beside bangerd (a build tree's bin/). It only looks (stat), and fails when the
// chosen file does not exist or is a directory. bangerd uses it on itself; doctor uses it to
// say whether a bangerd that is not running would start.
func Agent(daemon string, getenv func(string) string) (string, error) {
	if p := getenv(EnvAgent); p != "" {
		if err := isFile(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvAgent, p, err)
		}
		return p, nil
	}
	if resolved, err := filepath.EvalSymlinks(daemon); err == nil {
		daemon = resolved
	}
	dir := filepath.Dir(daemon)
	candidates := []string{filepath.Join(dir, "..", "lib", App, "banger-agent"), filepath.Join(dir, "banger-agent")}
	for _, c := range candidates {
		if isFile(c) == nil {
			return c, nil
		}
	}
	return "", fmt.Errorf("banger-agent not found at %s or %s", candidates[0], candidates[1])
}

// isFile says why p is not a file, or nil.
func isFile(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory, not the banger-agent binary", p)
	}
	return nil
}
