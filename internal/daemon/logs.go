package daemon

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/vmm"
)

// handleLogs sends a VM's console log (or with source=vmm the VMM's own log) as plain text;
// with follow=1 it keeps sending what is appended until the client goes away or the daemon
// stops. The console log is rotated at its cap (console.log.1 holds the previous part): the
// rotated part is sent first, and a follower moves on to the new file when the one it reads
// is rotated away.
func (d *Daemon) handleLogs(w http.ResponseWriter, r *http.Request) {
	vm, console, vmmLog, err := d.vms.LogFiles(r.Context(), r.PathValue("ref"))
	if err != nil {
		writeError(w, err)
		return
	}
	path := console
	switch src := r.URL.Query().Get("source"); src {
	case "", "console":
	case "vmm":
		path = vmmLog
	default:
		writeError(w, &api.Error{Code: "invalid", Message: fmt.Sprintf("unknown log source %q; want console or vmm", src)})
		return
	}
	follow := r.URL.Query().Get("follow") == "1"
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && follow {
		f = nil // not written yet: follow waits for it
	} else if err != nil {
		writeError(w, &api.Error{Code: "not_found", Message: fmt.Sprintf("vm %q has no log at %s yet (it has never started)", vm.Name, path)})
		return
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if path == console {
		if old, err := os.Open(path + vmm.RotatedSuffix); err == nil {
			_, err = io.Copy(w, old)
			old.Close()
			if err != nil {
				return
			}
		}
	}
	for {
		if f == nil {
			if f, err = os.Open(path); err != nil {
				f = nil
			}
		}
		if f != nil {
			if _, err := io.Copy(w, f); err != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if !follow {
			return
		}
		if f != nil && rotated(f, path) {
			// What was appended before the rename is in f still: send it, then go on with
			// the new file from its start.
			if _, err := io.Copy(w, f); err != nil {
				return
			}
			f.Close()
			f = nil
			continue
		}
		select {
		case <-r.Context().Done():
			return
		case <-d.work.ctx.Done(): // the daemon stops
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// rotated says whether path no longer names the file f has open (it was renamed away).
func rotated(f *os.File, path string) bool {
	open, err := f.Stat()
	if err != nil {
		return false
	}
	now, err := os.Stat(path)
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	return !os.SameFile(open, now)
}
