package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode"

	"golang.org/x/term"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/bytesize"
	"github.com/banger-dev/banger/internal/termtext"
)

// isTerminal reports whether f is a terminal.
func isTerminal(f any) bool {
	if file, ok := f.(*os.File); ok {
		return term.IsTerminal(int(file.Fd()))
	}
	return false
}

// renderer shows an operation's events on stderr: one live, redrawn line on a terminal;
// plain lines, one per stage, otherwise (logs, CI).
type renderer struct {
	w     io.Writer
	live  bool
	color bool
	start time.Time
	// width reports the terminal's width in columns, 0 when unknown. The live line is cut to
	// fit it: a line that wraps cannot be redrawn in place, and every redraw would leave a
	// copy of its first rows behind.
	width func() int

	mu         sync.Mutex
	stage      string
	message    string
	stageStart time.Time
	done, tot  int64
	drawn      bool
	stop       chan struct{}
	stopped    bool
}

func newRenderer(w io.Writer) *renderer {
	live := isTerminal(w)
	r := &renderer{
		w:     w,
		live:  live,
		color: live && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb",
		start: time.Now(),
		stop:  make(chan struct{}),
		width: func() int { return 0 },
	}
	if f, ok := w.(*os.File); live && ok {
		r.width = func() int {
			cols, _, err := term.GetSize(int(f.Fd()))
			if err != nil {
				return 0
			}
			return cols
		}
	}
	if live {
		go r.tick()
	}
	return r
}

func (r *renderer) tick() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.mu.Lock()
			if r.stage != "" {
				r.draw()
			}
			r.mu.Unlock()
		}
	}
}

var spinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// draw repaints the live line; the caller holds mu.
func (r *renderer) draw() {
	el := time.Since(r.stageStart)
	frame := spinner[int(time.Since(r.start)/(100*time.Millisecond))%len(spinner)]
	tail := fmt.Sprintf(" (%.1fs)", el.Seconds())
	if r.tot > 0 {
		tail = fmt.Sprintf(" %s/%s (%.1fs)", bytesize.Format(r.done), bytesize.Format(r.tot), el.Seconds())
	}
	cols := r.width()
	if cols > 0 {
		cols = max(cols-2, 1) // the frame and its space
	}
	msg := fitLine(printable(r.message), tail, cols)
	if r.color {
		frame = "\x1b[36m" + frame + "\x1b[0m"
	}
	fmt.Fprintf(r.w, "\r\x1b[K%s %s", frame, msg)
	r.drawn = true
}

// fitLine returns msg+tail cut to at most cols columns (one column per rune; the messages are
// ASCII), leaving the last column free so that the cursor never wraps. The message is
// shortened first, with "…", so that the elapsed time and byte counts stay visible. cols <= 0
// means unknown: nothing is cut.
func fitLine(msg, tail string, cols int) string {
	if cols <= 0 {
		return msg + tail
	}
	room := cols - 1
	m, t := []rune(msg), []rune(tail)
	switch {
	case len(m)+len(t) <= room:
		return msg + tail
	case room-len(t)-1 > 0: // at least one rune of the message, "…" and the whole tail
		return string(m[:room-len(t)-1]) + "…" + tail
	case room > 0: // a very narrow terminal: what fits
		return string(append(m, t...)[:room])
	}
	return ""
}

// printable replaces control characters (tabs, carriage returns from a tool's output) with
// spaces: on the live line they would move the cursor.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// clear removes the live line; the caller holds mu.
func (r *renderer) clear() {
	if r.drawn {
		fmt.Fprint(r.w, "\r\x1b[K")
		r.drawn = false
	}
}

// println prints a permanent line above the live one.
func (r *renderer) println(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clear()
	fmt.Fprintf(r.w, format+"\n", args...)
	if r.live && r.stage != "" {
		r.draw()
	}
}

// Event handles one event of an operation stream.
func (r *renderer) Event(ev api.Event) {
	switch ev.Type {
	case api.EventSpec:
		if ev.Spec != nil {
			r.println("spec: %s", termtext.CleanLine(ev.Spec.Summary))
		}
	case api.EventNotice:
		r.println("note: %s", termtext.CleanLine(ev.Message))
	case api.EventProgress:
		r.mu.Lock()
		defer r.mu.Unlock()
		newStage := ev.Stage != r.stage || (ev.Message != "" && termtext.CleanLine(ev.Message) != r.message && ev.Total == 0)
		if newStage {
			r.stage, r.stageStart = ev.Stage, time.Now()
			if ev.Message != "" {
				r.message = termtext.CleanLine(ev.Message)
			}
			r.done, r.tot = 0, 0
			if !r.live {
				fmt.Fprintf(r.w, "banger: %s\n", r.message)
			}
		}
		if ev.Total > 0 {
			r.done, r.tot = ev.Done, ev.Total
		}
		if r.live {
			r.draw()
		}
	}
}

// Finish ends the display. With a message it prints a final line, e.g. "ready in 3.2s".
func (r *renderer) Finish(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.stopped {
		close(r.stop)
		r.stopped = true
	}
	r.clear()
	r.stage = ""
	if msg != "" {
		fmt.Fprintf(r.w, "banger: %s\n", termtext.CleanLine(msg))
	}
}

// Done ends the display of an operation that started with the renderer: after a success it
// prints the final "<what> in 3.2s" line, after a failure nothing (the error says it).
func (r *renderer) Done(err error, what string) {
	if err != nil {
		r.Finish("")
		return
	}
	r.Finish(fmt.Sprintf("%s in %.1fs", what, time.Since(r.start).Seconds()))
}
