package cli

import (
	"bytes"
	"strings"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/banger-dev/banger/internal/api"
)

func progressEv(stage, msg string, done, total int64) api.Event {
	return api.Event{Type: api.EventProgress, Stage: stage, Message: msg, Done: done, Total: total}
}

// TestRendererPlainLines feeds a create's events to a renderer writing to a non-terminal
// (a log, CI) and checks the exact plain lines: one per spec, notice and stage, none for
// byte updates, and the Finish message.
func TestRendererPlainLines(t *testing.T) {
	var out bytes.Buffer
	r := newRenderer(&out)
	for _, ev := range []api.Event{
		{Type: api.EventSpec, Spec: &api.Spec{Summary: "vcpu=2 (flag) memory=2GiB (config)"}},
		{Type: api.EventNotice, Message: "using QEMU software emulation (TCG)"},
		progressEv("kernel.download", "downloading linux-image-cloud-amd64", 0, 100<<20),
		progressEv("kernel.download", "", 10<<20, 100<<20),
		progressEv("kernel.download", "", 50<<20, 100<<20),
		progressEv("kernel.download", "downloading linux-image-cloud-amd64", 100<<20, 100<<20),
		progressEv("kernel.extract", "extracting linux-image.deb", 0, 0),
		progressEv("image.bootstrap", "mmdebstrap: downloading packages", 0, 0),
		progressEv("image.bootstrap", "mmdebstrap: extracting archives", 0, 0), // a new message within a stage is shown
		progressEv("image.bootstrap", "mmdebstrap: extracting archives", 0, 0), // a repeat is not
		progressEv("vm.boot", "booting; waiting for the guest agent", 0, 0),
	} {
		r.Event(ev)
	}
	r.Finish("ready in 1.0s")

	want := strings.Join([]string{
		"spec: vcpu=2 (flag) memory=2GiB (config)",
		"note: using QEMU software emulation (TCG)",
		"banger: downloading linux-image-cloud-amd64",
		"banger: extracting linux-image.deb",
		"banger: mmdebstrap: downloading packages",
		"banger: mmdebstrap: extracting archives",
		"banger: booting; waiting for the guest agent",
		"banger: ready in 1.0s",
	}, "\n") + "\n"
	if got := out.String(); got != want {
		t.Errorf("renderer wrote\n%s\nwant\n%s", got, want)
	}
}

// TestRendererByteUpdatesPrintNoLines checks that many byte-progress updates within one
// stage print the stage's line once, and nothing per update.
func TestRendererByteUpdatesPrintNoLines(t *testing.T) {
	var out bytes.Buffer
	r := newRenderer(&out)
	r.Event(progressEv("kernel.download", "downloading linux-image-cloud-amd64", 0, 1000))
	for done := int64(1); done <= 1000; done++ {
		r.Event(progressEv("kernel.download", "", done, 1000))
	}
	r.Finish("")
	if got, want := out.String(), "banger: downloading linux-image-cloud-amd64\n"; got != want {
		t.Errorf("1000 byte updates in one stage wrote\n%q\nwant only\n%q", got, want)
	}
}

// TestRendererNonTerminalIsPlain runs in a synctest bubble: the sleep moves the bubble's clock
// past several ticks of a live renderer at once, and synctest.Wait returns only when any
// goroutine the renderer started has done what those ticks make it do.
func TestRendererNonTerminalIsPlain(t *testing.T) {
	t.Setenv("NO_COLOR", "")
	synctest.Test(t, func(t *testing.T) {
		var out bytes.Buffer
		r := newRenderer(&out)
		if r.live || r.color {
			t.Errorf("renderer on a bytes.Buffer: live=%v color=%v, want both false", r.live, r.color)
		}
		r.Event(progressEv("vm.boot", "booting", 0, 0))
		time.Sleep(time.Second) // ten ticks: a live renderer would have redrawn
		synctest.Wait()
		r.Finish("ready")
		if s := out.String(); strings.ContainsAny(s, "\r\x1b") {
			t.Errorf("renderer on a non-terminal wrote terminal controls: %q", s)
		}
	})
}

// TestRendererTickRedrawsTheLiveLine checks, on synctest's clock, that a live renderer redraws
// its line every 100ms with the elapsed time, and that Finish stops the redraws.
func TestRendererTickRedrawsTheLiveLine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out bytes.Buffer
		r := liveRenderer(&out, 120, false)
		ticked := make(chan struct{})
		go func() { r.tick(); close(ticked) }()
		r.Event(progressEv("vm.boot", "booting", 0, 0))
		snapshot := func() string {
			r.mu.Lock()
			defer r.mu.Unlock()
			return out.String()
		}
		if n := strings.Count(snapshot(), "\r\x1b[K"); n != 1 {
			t.Fatalf("the event drew %d times, want once", n)
		}
		time.Sleep(300 * time.Millisecond)
		synctest.Wait()
		s := snapshot()
		if n := strings.Count(s, "\r\x1b[K"); n != 4 {
			t.Errorf("after 300ms the live line was drawn %d times, want 4 (the event, then a tick every 100ms): %q", n, s)
		}
		if line := visible(s); !strings.HasSuffix(line, "booting (0.3s)") {
			t.Errorf("live line after 300ms = %q, want the message and 0.3s elapsed", line)
		}
		r.Finish("")
		<-ticked // Finish ends the ticker goroutine
		before := snapshot()
		time.Sleep(time.Second)
		synctest.Wait()
		if after := snapshot(); after != before {
			t.Errorf("the renderer drew after Finish: %q", after[len(before):])
		}
	})
}

func TestRendererFinishWithoutMessagePrintsNothing(t *testing.T) {
	var out bytes.Buffer
	r := newRenderer(&out)
	r.Finish("")
	r.Finish("") // a second Finish is harmless
	if out.Len() != 0 {
		t.Errorf("Finish(\"\") wrote %q, want nothing", out.String())
	}
}

func TestRendererIgnoresSpecEventWithoutSpec(t *testing.T) {
	var out bytes.Buffer
	r := newRenderer(&out)
	r.Event(api.Event{Type: api.EventSpec})
	r.Finish("")
	if out.Len() != 0 {
		t.Errorf("a spec event without a spec wrote %q, want nothing", out.String())
	}
}

// liveRenderer is a renderer in terminal mode writing to out, as newRenderer makes it for a
// terminal of cols columns, but without the ticker (the test draws by sending events).
func liveRenderer(out *bytes.Buffer, cols int, color bool) *renderer {
	return &renderer{
		w: out, live: true, color: color, start: time.Now(), stop: make(chan struct{}),
		width: func() int { return cols },
	}
}

// visible is what a terminal shows of s after its last "\r\x1b[K": the live line.
func visible(s string) string {
	if i := strings.LastIndex(s, "\r\x1b[K"); i >= 0 {
		s = s[i+len("\r\x1b[K"):]
	}
	for _, esc := range []string{"\x1b[36m", "\x1b[0m"} {
		s = strings.ReplaceAll(s, esc, "")
	}
	return s
}

// TestRendererLiveLine checks the terminal mode: a stage is drawn as one line that is
// redrawn in place (carriage return and erase-line, never a newline), permanent lines are
// printed above it, and Finish erases it.
func TestRendererLiveLine(t *testing.T) {
	var out bytes.Buffer
	r := liveRenderer(&out, 120, false)

	r.Event(progressEv("kernel.download", "downloading linux-image", 0, 4<<20))
	r.Event(progressEv("kernel.download", "", 2<<20, 4<<20))
	s := out.String()
	if strings.Contains(s, "\n") {
		t.Errorf("live line contains a newline: %q", s)
	}
	if !strings.HasPrefix(s, "\r\x1b[K") || strings.Count(s, "\r\x1b[K") != 2 {
		t.Errorf("two updates wrote %q, want two redraws each starting with \\r\\x1b[K", s)
	}
	line := visible(s)
	if !strings.Contains(line, "downloading linux-image 2MiB/4MiB (") || !strings.HasSuffix(line, "s)") {
		t.Errorf("live line = %q, want the message, bytes done/total and the elapsed seconds", line)
	}

	out.Reset()
	r.Event(api.Event{Type: api.EventNotice, Message: "slow mirror"})
	if s := out.String(); !strings.HasPrefix(s, "\r\x1b[Knote: slow mirror\n\r\x1b[K") {
		t.Errorf("a notice during a stage wrote %q, want: erase the live line, the note, then redraw", s)
	}

	out.Reset()
	r.Finish("vm x ready in 1.0s")
	if got, want := out.String(), "\r\x1b[Kbanger: vm x ready in 1.0s\n"; got != want {
		t.Errorf("Finish wrote %q, want %q (erase the live line, then the message)", got, want)
	}
}

func TestRendererLiveColor(t *testing.T) {
	var out bytes.Buffer
	r := liveRenderer(&out, 80, true)
	r.Event(progressEv("vm.boot", "booting", 0, 0))
	if s := out.String(); !strings.Contains(s, "\x1b[36m") || !strings.Contains(s, "\x1b[0m booting") {
		t.Errorf("coloured live line = %q, want a cyan spinner then the message", s)
	}
	out.Reset()
	r = liveRenderer(&out, 80, false)
	r.Event(progressEv("vm.boot", "booting", 0, 0))
	if s := out.String(); strings.Contains(s, "\x1b[3") {
		t.Errorf("live line without colour = %q, want no colour escapes", s)
	}
}

// TestRendererLiveLineFitsTheTerminal checks that a live line never reaches the terminal's
// last column: a line that wraps cannot be redrawn in place, and each redraw would leave a
// copy behind (seen at 40 columns with "booting; waiting for the guest agent (1.2s)").
func TestRendererLiveLineFitsTheTerminal(t *testing.T) {
	for _, cols := range []int{120, 80, 40, 20, 12} {
		var out bytes.Buffer
		r := liveRenderer(&out, cols, true)
		r.Event(progressEv("image.bootstrap", "building image debian-bookworm from Debian packages (http://deb.debian.org/debian)", 0, 0))
		line := visible(out.String())
		if n := utf8.RuneCountInString(line); n >= cols {
			t.Errorf("%d columns: live line is %d columns, want < %d: %q", cols, n, cols, line)
		}
		if cols >= 20 && !strings.Contains(line, "s)") {
			t.Errorf("%d columns: live line %q lost its elapsed time; the message should be cut first", cols, line)
		}

		out.Reset()
		r.Event(progressEv("kernel.download", "downloading linux-image-cloud-amd64 6.1.0-50", 512<<20, 1<<30))
		line = visible(out.String())
		if n := utf8.RuneCountInString(line); n >= cols {
			t.Errorf("%d columns: download line is %d columns, want < %d: %q", cols, n, cols, line)
		}
		if cols >= 40 && !strings.Contains(line, "512MiB/1GiB") {
			t.Errorf("%d columns: download line %q lost its byte counts", cols, line)
		}
	}
}

func TestFitLine(t *testing.T) {
	tests := []struct {
		name      string
		msg, tail string
		cols      int
		want      string
	}{
		{"unknown width: nothing is cut", "a long message", " (1.0s)", 0, "a long message (1.0s)"},
		{"fits with the last column free", "abc", " (1.0s)", 11, "abc (1.0s)"},
		{"one column short: the message is cut", "abcd", " (1.0s)", 11, "ab… (1.0s)"},
		{"the tail survives a long message", strings.Repeat("x", 100), " (12.3s)", 20, "xxxxxxxxxx… (12.3s)"},
		{"non-ASCII counts as one column per rune", "ééééé", " (1s)", 8, "é… (1s)"},
		{"too narrow for the tail: cut what there is", "abc", " (1.0s)", 5, "abc "},
		{"one column: nothing fits", "abc", " (1.0s)", 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fitLine(tt.msg, tt.tail, tt.cols); got != tt.want {
				t.Errorf("fitLine(%q, %q, %d) = %q, want %q", tt.msg, tt.tail, tt.cols, got, tt.want)
			}
		})
	}
}

func TestPrintableReplacesControlCharacters(t *testing.T) {
	if got, want := printable("a\tb\rc\x1b[2Jd\ne"), "a b c [2Jd e"; got != want {
		t.Errorf("printable = %q, want %q", got, want)
	}
}
