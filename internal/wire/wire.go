// Package wire is the framing of one exec session: a command's stdin, stdout, stderr, signals,
// terminal size and exit status. The same frames travel end to end — from the CLI through the
// daemon (which only copies bytes) to the guest agent — so every hop speaks one format.
//
// A frame is a one-byte type, a four-byte big-endian payload length and the payload.
package wire

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Type says what a frame carries.
type Type byte

// Frame types. Lower-case types flow from the caller to the command, upper-case ones back.
const (
	Request  Type = 'q' // JSON request that opens a stream (see package agent)
	Stdin    Type = 'i' // bytes for the command's stdin
	StdinEOF Type = 'c' // the caller's stdin is exhausted: close the command's stdin
	Signal   Type = 's' // JSON SignalMsg: deliver a signal to the command's process group
	Resize   Type = 'w' // JSON ResizeMsg: the caller's terminal changed size

	Reply  Type = 'R' // JSON reply to a unary request
	Stdout Type = 'O' // bytes the command wrote to stdout (or its terminal)
	Stderr Type = 'E' // bytes the command wrote to stderr
	Exit   Type = 'X' // JSON ExitMsg: the command is gone; always the last frame
)

// MaxPayload bounds one frame's payload; longer data is split across frames.
const MaxPayload = 1 << 20

// ErrTooLarge is returned for a frame whose declared length exceeds MaxPayload.
var ErrTooLarge = errors.New("wire: frame larger than 1 MiB")

// SignalMsg asks for a signal to be delivered.
type SignalMsg struct {
	Signal int `json:"signal"`
}

// ResizeMsg carries a terminal size.
type ResizeMsg struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// ExitMsg ends an exec session. Code is the exit status a shell would report (128+n for a
// command killed by signal n). Error is set when the command could not run at all (for
// example "executable file not found"); Code is then 126 or 127 as a shell would use.
type ExitMsg struct {
	Code   int    `json:"code"`
	Signal int    `json:"signal,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Writer writes frames; it is safe for concurrent use, so stdout and stderr pumps can share it.
type Writer struct {
	mu sync.Mutex
	w  io.Writer
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write sends one frame, splitting payloads larger than MaxPayload.
func (fw *Writer) Write(t Type, payload []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for {
		n := len(payload)
		if n > MaxPayload {
			n = MaxPayload
		}
		var hdr [5]byte
		hdr[0] = byte(t)
		binary.BigEndian.PutUint32(hdr[1:], uint32(n))
		if _, err := fw.w.Write(hdr[:]); err != nil {
			return err
		}
		if n > 0 {
			if _, err := fw.w.Write(payload[:n]); err != nil {
				return err
			}
		}
		payload = payload[n:]
		if len(payload) == 0 {
			return nil
		}
	}
}

// WriteJSON sends v as the JSON payload of one frame.
func (fw *Writer) WriteJSON(t Type, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("wire: encode %c frame: %w", t, err)
	}
	return fw.Write(t, b)
}

// Reader reads frames.
type Reader struct {
	r   io.Reader
	buf []byte
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Next returns the next frame. The payload is only valid until the following call.
// It returns io.EOF at a clean end of stream and io.ErrUnexpectedEOF inside a frame.
func (fr *Reader) Next() (Type, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(fr.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxPayload {
		return 0, nil, ErrTooLarge
	}
	if cap(fr.buf) < int(n) {
		fr.buf = make([]byte, n)
	}
	buf := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return Type(hdr[0]), buf, nil
}

// NextJSON reads the next frame, requires it to be of type want, and decodes it into v.
func (fr *Reader) NextJSON(want Type, v any) error {
	t, p, err := fr.Next()
	if err != nil {
		return err
	}
	if t != want {
		return fmt.Errorf("wire: got %q frame, want %q", t, want)
	}
	if err := json.Unmarshal(p, v); err != nil {
		return fmt.Errorf("wire: decode %c frame: %w", t, err)
	}
	return nil
}
