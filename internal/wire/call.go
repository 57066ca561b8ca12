package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// CallerIO is what the calling side of an exec session connects to the command.
type CallerIO struct {
	Stdin   io.Reader // nil: the command's stdin is closed at once
	Stdout  io.Writer
	Stderr  io.Writer
	Signals <-chan int       // signals to forward to the command; may be nil
	Resizes <-chan ResizeMsg // terminal size changes; may be nil
}

// Call drives the caller's side of an exec session whose request has already been sent on
// rw: it pumps stdin, signals and resizes to the command and its output back, until the Exit
// frame arrives. A stream that ends without an Exit frame is an error: the command's fate is
// unknown (the guest may have died).
func Call(rw io.ReadWriter, cio CallerIO) (ExitMsg, error) {
	w := NewWriter(rw)
	done := make(chan struct{})
	defer close(done)

	go pumpStdin(w, cio.Stdin, done)
	go func() {
		for {
			select {
			case <-done:
				return
			case sig, ok := <-cio.Signals:
				if !ok {
					return
				}
				_ = w.WriteJSON(Signal, SignalMsg{Signal: sig})
			case sz, ok := <-cio.Resizes:
				if !ok {
					cio.Resizes = nil
					continue
				}
				_ = w.WriteJSON(Resize, sz)
			}
		}
	}()

	r := NewReader(rw)
	for {
		t, p, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return ExitMsg{}, fmt.Errorf("exec session ended before the command's exit status arrived: %w", err)
		}
		switch t {
		case Stdout:
			if _, err := cio.Stdout.Write(p); err != nil {
				return ExitMsg{}, fmt.Errorf("write command stdout: %w", err)
			}
		case Stderr:
			if _, err := cio.Stderr.Write(p); err != nil {
				return ExitMsg{}, fmt.Errorf("write command stderr: %w", err)
			}
		case Exit:
			return decodeExit(p)
		default:
			return ExitMsg{}, fmt.Errorf("exec session: unexpected %q frame", t)
		}
	}
}

func pumpStdin(w *Writer, stdin io.Reader, done <-chan struct{}) {
	if stdin == nil {
		_ = w.Write(StdinEOF, nil)
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := stdin.Read(buf)
		if n > 0 {
			select {
			case <-done:
				return
			default:
			}
			if werr := w.Write(Stdin, buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = w.Write(StdinEOF, nil)
			return
		}
	}
}

// SendStream sends everything read from r as Stdin frames and ends with StdinEOF: the upload
// half of an untar stream. It returns the first read or write error.
func SendStream(w *Writer, r io.Reader) error {
	buf := make([]byte, 256<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr := w.Write(Stdin, buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return w.Write(StdinEOF, nil)
		}
		if err != nil {
			return fmt.Errorf("read upload source: %w", err)
		}
	}
}

// maxExitError bounds the message of an ExitMsg, which the guest writes.
const maxExitError = 1 << 10

// decodeExit decodes an Exit frame's payload, cutting its message at maxExitError bytes.
func decodeExit(p []byte) (ExitMsg, error) {
	var m ExitMsg
	if err := json.Unmarshal(p, &m); err != nil {
		return ExitMsg{}, fmt.Errorf("decode exit status: %w", err)
	}
	if len(m.Error) > maxExitError {
		cut := maxExitError
		for cut > 0 && !utf8.RuneStart(m.Error[cut]) {
			cut--
		}
		m.Error = m.Error[:cut] + "…"
	}
	return m, nil
}
