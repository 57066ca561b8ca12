package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzFrames reads arbitrary bytes as frames: no panic, no payload over MaxPayload, and every
// frame read re-encodes to the bytes it came from.
func FuzzFrames(f *testing.F) {
	var b bytes.Buffer
	w := NewWriter(&b)
	_ = w.Write(Stdout, []byte("hello"))
	_ = w.WriteJSON(Exit, ExitMsg{Code: 3, Error: "gone"})
	_ = w.Write(StdinEOF, nil)
	f.Add(b.Bytes())
	f.Add([]byte{'O', 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{'O', 0, 0, 0, 10, 'a'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		off := 0
		for {
			typ, p, err := r.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(p) > MaxPayload {
				t.Fatalf("payload of %d bytes", len(p))
			}
			var re bytes.Buffer
			if err := NewWriter(&re).Write(typ, p); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(re.Bytes(), data[off:off+re.Len()]) {
				t.Fatalf("frame at %d re-encodes differently", off)
			}
			off += re.Len()
		}
	})
}

// FuzzCall runs the caller's side of an exec session against arbitrary bytes from the
// guest: no panic, and an exit message it accepts has a bounded error text.
func FuzzCall(f *testing.F) {
	var b bytes.Buffer
	w := NewWriter(&b)
	_ = w.Write(Stdout, []byte("out"))
	_ = w.Write(Stderr, []byte("err"))
	_ = w.WriteJSON(Exit, ExitMsg{Code: 256, Error: "x"})
	f.Add(b.Bytes())
	f.Add([]byte{'X', 0, 0, 0, 2, '{', '}'})
	f.Add([]byte{'Z', 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(data), io.Discard}
		m, err := Call(rw, CallerIO{Stdout: io.Discard, Stderr: io.Discard})
		if err == nil && len(m.Error) > maxExitError+len("…") {
			t.Fatalf("exit error of %d bytes", len(m.Error))
		}
	})
}
