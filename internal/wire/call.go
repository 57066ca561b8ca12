package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"unicode/utf8"
)

// CallerIO is what the calling side of an exec session connects to the command.
type CallerIO struct {
	// Stdin is the command's input; nil closes the command's stdin at once. It is read only
	// while Call runs, so that what comes after belongs to the caller (a prompt, the shell).
	// An *os.File (the terminal, a pipe, a file) is read only when poll(2) says it has
	// something, and Call stops waiting on it when it returns. Any other reader must not
	// block (in memory), or its owner must end a Read in progress when Call returns (close
	// the pipe): Call starts no Read after it has returned, and drops what such a Read brings.
	Stdin   io.Reader
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
	defer pumpStdin(w, cio.Stdin)() // runs first: stdin is let go before Call returns
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

// pumpStdin sends what stdin gives as Stdin frames, and StdinEOF at its end, until the
// returned stop is called. For an *os.File stop returns once nothing reads it any more; any
// other reader gets no new Read, but one in progress is left to end as it will (see
// CallerIO.Stdin). Reading and writing happen on separate goroutines: a write to a command
// that no longer reads may block for good, a read must not outlive the call.
func pumpStdin(w *Writer, stdin io.Reader) (stop func()) {
	if stdin == nil {
		go func() { _ = w.Write(StdinEOF, nil) }()
		return func() {}
	}
	quit := make(chan struct{})
	readerDone := make(chan struct{})
	read := stdin.Read
	stop = func() { close(quit) }
	if f, ok := stdin.(*os.File); ok {
		// Without a wake pipe (out of descriptors) the file is read as any other reader.
		if pr, err := newPollReader(f, quit); err == nil {
			read = pr.Read
			stop = func() {
				close(quit)
				pr.wake()
				<-readerDone
				pr.release()
			}
		}
	}
	chunks := make(chan []byte)   // nil: end of stdin
	written := make(chan bool, 1) // the writer is done with the last chunk; false: it failed
	go func() {
		defer close(readerDone)
		defer close(chunks)
		buf := make([]byte, 32<<10)
		for {
			select {
			case <-quit:
				return
			default:
			}
			n, err := read(buf)
			if errors.Is(err, errStopped) {
				return
			}
			var p []byte
			if n > 0 {
				p = buf[:n]
			} else if err == nil {
				continue
			}
			select {
			case chunks <- p:
			case <-quit:
				return
			}
			if p == nil {
				return
			}
			select {
			case ok := <-written:
				if !ok {
					return
				}
			case <-quit:
				return
			}
			if err != nil {
				select {
				case chunks <- nil:
				case <-quit:
				}
				return
			}
		}
	}()
	go func() {
		for p := range chunks {
			if p == nil {
				_ = w.Write(StdinEOF, nil)
				return
			}
			err := w.Write(Stdin, p)
			written <- err == nil
			if err != nil {
				return
			}
		}
	}()
	return stop
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
