package wire

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.Write(Stdout, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteJSON(Exit, ExitMsg{Code: 42}); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(StdinEOF, nil); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&buf)
	typ, p, err := r.Next()
	if err != nil || typ != Stdout || string(p) != "hello" {
		t.Fatalf("first frame = %q %q %v, want Stdout \"hello\"", typ, p, err)
	}
	var m ExitMsg
	if err := r.NextJSON(Exit, &m); err != nil || m.Code != 42 {
		t.Fatalf("second frame = %+v %v, want exit 42", m, err)
	}
	typ, p, err = r.Next()
	if err != nil || typ != StdinEOF || len(p) != 0 {
		t.Fatalf("third frame = %q %q %v, want empty StdinEOF", typ, p, err)
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("after the last frame: err = %v, want io.EOF", err)
	}
}

func TestLargePayloadIsSplit(t *testing.T) {
	var buf bytes.Buffer
	big := bytes.Repeat([]byte("x"), MaxPayload*2+10)
	if err := NewWriter(&buf).Write(Stdout, big); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&buf)
	var got []byte
	frames := 0
	for {
		_, p, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		frames++
		got = append(got, p...)
	}
	if frames != 3 || !bytes.Equal(got, big) {
		t.Errorf("got %d frames with %d bytes, want 3 frames carrying all %d bytes", frames, len(got), len(big))
	}
}

func TestReaderRejectsBadInput(t *testing.T) {
	tests := []struct {
		name  string
		input []byte
		want  error
	}{
		{"oversized length", []byte{'O', 0xff, 0xff, 0xff, 0xff}, ErrTooLarge},
		{"truncated payload", []byte{'O', 0, 0, 0, 9, 'a'}, io.ErrUnexpectedEOF},
		{"truncated header", []byte{'O', 0}, io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := NewReader(bytes.NewReader(tc.input)).Next()
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestNextJSONWrongType(t *testing.T) {
	var buf bytes.Buffer
	_ = NewWriter(&buf).Write(Stdout, []byte("{}"))
	var m ExitMsg
	err := NewReader(&buf).NextJSON(Exit, &m)
	if err == nil || !strings.Contains(err.Error(), "want") {
		t.Errorf("err = %v, want a type mismatch error", err)
	}
}

// TestCallPumpsBothWays plays the command's side by hand and checks that Call delivers
// output to the right writers, forwards stdin and signals, and returns the exit status.
func TestCallPumpsBothWays(t *testing.T) {
	caller, cmd := net.Pipe()
	defer caller.Close()
	signals := make(chan int, 1)
	var stdout, stderr bytes.Buffer
	type result struct {
		m   ExitMsg
		err error
	}
	done := make(chan result, 1)
	go func() {
		m, err := Call(caller, CallerIO{Stdin: strings.NewReader("input"), Stdout: &stdout, Stderr: &stderr, Signals: signals})
		done <- result{m, err}
	}()

	r, w := NewReader(cmd), NewWriter(cmd)
	typ, p, err := r.Next()
	if err != nil || typ != Stdin || string(p) != "input" {
		t.Fatalf("command got %q %q %v, want Stdin \"input\"", typ, p, err)
	}
	if typ, _, err := r.Next(); err != nil || typ != StdinEOF {
		t.Fatalf("command got %q %v, want StdinEOF after the input", typ, err)
	}
	signals <- 2
	var sig SignalMsg
	if err := r.NextJSON(Signal, &sig); err != nil || sig.Signal != 2 {
		t.Fatalf("command got %+v %v, want signal 2", sig, err)
	}
	_ = w.Write(Stdout, []byte("out"))
	_ = w.Write(Stderr, []byte("err"))
	_ = w.WriteJSON(Exit, ExitMsg{Code: 3})
	res := <-done
	if res.err != nil || res.m.Code != 3 {
		t.Fatalf("Call = %+v %v, want exit 3", res.m, res.err)
	}
	if stdout.String() != "out" || stderr.String() != "err" {
		t.Errorf("stdout %q stderr %q, want \"out\" and \"err\" kept apart", stdout.String(), stderr.String())
	}
}

func TestCallWithoutExitIsAnError(t *testing.T) {
	caller, cmd := net.Pipe()
	go func() {
		r := NewReader(cmd)
		_, _, _ = r.Next() // StdinEOF
		_ = NewWriter(cmd).Write(Stdout, []byte("partial"))
		cmd.Close()
	}()
	var out bytes.Buffer
	_, err := Call(caller, CallerIO{Stdout: &out, Stderr: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "before the command's exit status") {
		t.Errorf("err = %v, want a lost-session error", err)
	}
	if out.String() != "partial" {
		t.Errorf("stdout = %q, want the output that did arrive", out.String())
	}
}
