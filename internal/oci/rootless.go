package oci

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/progress"
	"github.com/banger-dev/banger/internal/userns"
)

// Without root, layers are flattened inside a user namespace mapping the user to root and its
// subordinate ids above (package userns): there the extractor may give files away, so the
// tree keeps the layers' owners exactly (with every rule of package untar still applied), and
// mkfs.ext4 -d, run in the same mapping, records them.
const (
	fnFlatten  = "oci.flatten"
	fnEmptyDir = "oci.empty-dir"
)

// flattenJob is what the flatten function reads on stdin.
type flattenJob struct {
	Limits Limits   `json:"limits"`
	Blobs  []string `json:"blobs"`  // paths of the layer blobs, oldest first
	Digest []string `json:"digest"` // their digests, for errors
}

// flattenEvent is a line the flatten function writes on stdout.
type flattenEvent struct {
	Layer *int   `json:"layer,omitempty"` // starting this layer
	Stats *Stats `json:"stats,omitempty"` // done
}

// maxJob bounds the job's size (paths and digests of at most Limits.Layers layers).
const maxJob = 4 << 20

func init() {
	userns.Register(fnFlatten, func(args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%s: want the tree", fnFlatten)
		}
		data, err := io.ReadAll(io.LimitReader(os.Stdin, maxJob+1))
		if err != nil {
			return err
		}
		var job flattenJob
		if len(data) > maxJob || json.Unmarshal(data, &job) != nil || len(job.Blobs) != len(job.Digest) {
			return fmt.Errorf("%s: bad job", fnFlatten)
		}
		enc := json.NewEncoder(os.Stdout)
		stats, err := flattenBlobs(args[0], job, func(i int) { _ = enc.Encode(flattenEvent{Layer: &i}) })
		if err != nil {
			emptyDir(args[0])
			return err
		}
		return enc.Encode(flattenEvent{Stats: &stats})
	})
	userns.Register(fnEmptyDir, func(args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%s: want the directory", fnEmptyDir)
		}
		emptyDir(args[0])
		return nil
	})
}

// flattenBlobs flattens the blobs, oldest first, into tree.
func flattenBlobs(tree string, job flattenJob, layer func(int)) (Stats, error) {
	fl, err := NewFlattener(tree, job.Limits)
	if err != nil {
		return Stats{}, err
	}
	defer fl.Close()
	for i, p := range job.Blobs {
		layer(i)
		f, err := os.Open(p)
		if err != nil {
			return Stats{}, fmt.Errorf("layer %s: %w", job.Digest[i], err)
		}
		err = fl.Apply(f, job.Digest[i])
		f.Close()
		if err != nil {
			return Stats{}, err
		}
	}
	if err := fl.Finish(); err != nil {
		return Stats{}, err
	}
	return fl.Stats(), nil
}

// flattenIn flattens the cached layers into tree inside ns, reporting each layer's start.
func flattenIn(ctx context.Context, ns *userns.Mapping, tree string, c Cache, layers []Layer, limits Limits, p progress.Func) (Stats, error) {
	job := flattenJob{Limits: limits}
	for _, l := range layers {
		path, err := c.path(l.Digest)
		if err != nil {
			return Stats{}, err
		}
		now := time.Now()
		_ = os.Chtimes(path, now, now) // marks the blob as just used
		job.Blobs = append(job.Blobs, path)
		job.Digest = append(job.Digest, l.Digest)
	}
	data, err := json.Marshal(job)
	if err != nil {
		return Stats{}, err
	}
	// The thread that starts the namespace's init must outlive it (see userns.Cmd.Run).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := ns.Func(ctx, fnFlatten, tree)
	in, err := cmd.StdinPipe()
	if err != nil {
		return Stats{}, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return Stats{}, err
	}
	errOut := &limitedBuffer{max: 4000}
	cmd.Stderr = errOut
	if err := cmd.Start(); err != nil {
		return Stats{}, err
	}
	go func() {
		_, _ = in.Write(data)
		in.Close()
	}()
	var stats *Stats
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var ev flattenEvent
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		switch {
		case ev.Layer != nil && *ev.Layer >= 0 && *ev.Layer < len(layers):
			p.Report(progress.Update{Stage: StageFlatten, Message: fmt.Sprintf("flattening layer %d of %d", *ev.Layer+1, len(layers)), Done: int64(*ev.Layer), Total: int64(len(layers))})
		case ev.Stats != nil:
			stats = ev.Stats
		}
	}
	_, _ = io.Copy(io.Discard, out)
	werr := cmd.Wait()
	if ctx.Err() != nil {
		return Stats{}, ctx.Err()
	}
	if werr != nil {
		if msg := errOut.String(); msg != "" {
			return Stats{}, errors.New(msg)
		}
		return Stats{}, fmt.Errorf("flatten in a user namespace: %w", werr)
	}
	if stats == nil {
		return Stats{}, errors.New("flatten in a user namespace: no result")
	}
	return *stats, nil
}

// emptyDirIn is emptyDir, inside ns when it is not nil; it runs even after ctx has ended.
func emptyDirIn(ns *userns.Mapping, dir string) {
	if ns == nil {
		emptyDir(dir)
		return
	}
	_ = ns.Func(context.Background(), fnEmptyDir, dir).Run()
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	max int
	b   []byte
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return strings.TrimSpace(string(l.b)) }
