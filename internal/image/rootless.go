package image

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/banger-dev/banger/internal/userns"
)

// Functions this package runs inside a user namespace (see package userns) when the daemon is
// not root: the tree then holds files owned by the user's subordinate ids, which only root of
// the namespace may change, chown or remove.
const (
	fnApplySteps  = "image.apply-steps"
	fnRemoveTree  = "image.remove-tree"
	fnPrepareRoot = "image.prepare-root"
)

// maxFuncInput bounds what a function reads on stdin (the recipe's steps, an image's env).
const maxFuncInput = 16 << 20

func init() {
	userns.Register(fnApplySteps, func(args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%s: want the tree", fnApplySteps)
		}
		var steps []Step
		if err := readJSON(&steps); err != nil {
			return fmt.Errorf("%s: %w", fnApplySteps, err)
		}
		return applySteps(args[0], steps)
	})
	userns.Register(fnRemoveTree, func(args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%s: want the tree", fnRemoveTree)
		}
		return removeTree(args[0])
	})
	userns.Register(fnPrepareRoot, func(args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%s: want the tree", fnPrepareRoot)
		}
		var env []string
		if err := readJSON(&env); err != nil {
			return fmt.Errorf("%s: %w", fnPrepareRoot, err)
		}
		notes, err := prepareRoot(args[0], env)
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(notes)
	})
}

func readJSON(v any) error {
	data, err := io.ReadAll(io.LimitReader(os.Stdin, maxFuncInput+1))
	if err != nil {
		return err
	}
	if len(data) > maxFuncInput {
		return fmt.Errorf("input larger than %d bytes", maxFuncInput)
	}
	return json.Unmarshal(data, v)
}

// buildNamespace returns the user namespace a build works in: nil as root.
func buildNamespace() (*userns.Mapping, error) {
	ns, err := userns.ForTrees()
	if err != nil {
		return nil, fmt.Errorf("cannot build without root: %w", err)
	}
	return ns, nil
}

// funcIn runs a registered function inside ns with stdin holding in as JSON and returns its
// stdout.
func funcIn(ctx context.Context, ns *userns.Mapping, name string, in any, args ...string) ([]byte, error) {
	c := ns.Func(ctx, name, args...)
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		defer r.Close()
		go func() {
			_, _ = w.Write(data)
			w.Close()
		}()
		c.Stdin = r
	}
	return c.Output()
}

// applyStepsIn is applySteps, inside ns when it is not nil.
func applyStepsIn(ctx context.Context, ns *userns.Mapping, tree string, steps []Step) error {
	if ns == nil {
		return applySteps(tree, steps)
	}
	_, err := funcIn(ctx, ns, fnApplySteps, steps, tree)
	return err
}

// removeTreeIn is removeTree, inside ns when it is not nil. It runs even when ctx has ended:
// it is how a cancelled build cleans up.
func removeTreeIn(ctx context.Context, ns *userns.Mapping, tree string) error {
	if ns == nil {
		return removeTree(tree)
	}
	if _, err := os.Lstat(tree); os.IsNotExist(err) {
		return nil
	}
	_, err := funcIn(context.WithoutCancel(ctx), ns, fnRemoveTree, nil, tree)
	return err
}

// RemoveTree removes an image tree (a flattened OCI image, a bootstrap), whoever owns its
// files: as an ordinary user, from inside the user namespace that made them.
func RemoveTree(tree string) error {
	ns, err := userns.ForTrees()
	if err != nil {
		// No namespace: the tree can only hold the user's own files.
		return removeTree(tree)
	}
	return removeTreeIn(context.Background(), ns, tree)
}

// prepareRootIn is prepareRoot, inside ns when it is not nil.
func prepareRootIn(ctx context.Context, ns *userns.Mapping, tree string, env []string) ([]string, error) {
	if ns == nil {
		return prepareRoot(tree, env)
	}
	if env == nil {
		env = []string{}
	}
	out, err := funcIn(ctx, ns, fnPrepareRoot, env, tree)
	if err != nil {
		return nil, err
	}
	var notes []string
	if err := json.Unmarshal(out, &notes); err != nil {
		return nil, fmt.Errorf("%s: bad result: %w", fnPrepareRoot, err)
	}
	return notes, nil
}
