package vmm

import (
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// Console log bounds. The guest writes its console as fast as it likes; the daemon, not the
// VMM, writes it to disk, through a ConsoleLog that rotates at a cap, so that a guest cannot
// fill the host's disk.
const (
	// DefaultConsoleLogSize is the cap of one console log file when none is configured.
	DefaultConsoleLogSize = 4 << 20
	// MinConsoleLogSize and MaxConsoleLogSize bound a configured cap.
	MinConsoleLogSize = 64 << 10
	MaxConsoleLogSize = 1 << 30
	// RotatedSuffix names the previous console log: console.log.1.
	RotatedSuffix = ".1"
)

// ConsoleLog is an append-only log file that never grows beyond its cap: a write that would
// cross it first renames the file to path+".1" (replacing the previous one) and starts a new
// one, so the two together hold at most twice the cap, the latest output always included.
// It is safe for concurrent use.
type ConsoleLog struct {
	path string
	max  int64

	mu   sync.Mutex
	f    *os.File
	size int64
}

// OpenConsoleLog opens (creating or appending to) the console log at path with a cap of max
// bytes per file; max 0 means DefaultConsoleLogSize, and a cap outside
// MinConsoleLogSize..MaxConsoleLogSize is clamped into it.
func OpenConsoleLog(path string, max int64) (*ConsoleLog, error) {
	max = ConsoleLogCap(max)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open console log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open console log: %w", err)
	}
	return &ConsoleLog{path: path, max: max, f: f, size: st.Size()}, nil
}

// ConsoleLogCap returns the cap OpenConsoleLog uses for a configured value.
func ConsoleLogCap(max int64) int64 {
	switch {
	case max == 0:
		return DefaultConsoleLogSize
	case max < MinConsoleLogSize:
		return MinConsoleLogSize
	case max > MaxConsoleLogSize:
		return MaxConsoleLogSize
	}
	return max
}

// Write appends p, rotating first when p would take the file beyond its cap. Of a p longer
// than the cap itself only the last cap bytes are kept.
func (c *ConsoleLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return 0, os.ErrClosed
	}
	n := len(p)
	if int64(len(p)) > c.max {
		p = p[int64(len(p))-c.max:]
	}
	if c.size+int64(len(p)) > c.max && c.size > 0 {
		if err := c.rotate(); err != nil {
			return 0, err
		}
	}
	k, err := c.f.Write(p)
	c.size += int64(k)
	if err != nil {
		return 0, fmt.Errorf("write console log: %w", err)
	}
	return n, nil
}

// rotate renames the current file to path.1 and starts an empty one; c.mu is held.
func (c *ConsoleLog) rotate() error {
	if err := os.Rename(c.path, c.path+RotatedSuffix); err != nil {
		return fmt.Errorf("rotate console log: %w", err)
	}
	f, err := os.OpenFile(c.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("rotate console log: %w", err)
	}
	c.f.Close()
	c.f, c.size = f, 0
	return nil
}

// Close closes the file.
func (c *ConsoleLog) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	return err
}

// PumpConsole copies the guest's console from r into the console log at path (capped at
// max, see OpenConsoleLog) until r ends, then closes r and the log. A non-empty header is
// written first as a line of its own starting with "--- " (a boot or reattach marker, which
// LogTail skips). It returns once the log is open, or with the error opening it; done is
// closed when the copy ends.
func PumpConsole(r io.ReadCloser, path string, max int64, header string) (done <-chan struct{}, err error) {
	log, err := OpenConsoleLog(path, max)
	if err != nil {
		return nil, err
	}
	if header != "" {
		_, _ = fmt.Fprintf(log, "--- %s %s\n", time.Now().UTC().Format(time.RFC3339), header)
	}
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		defer log.Close()
		defer r.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				// A write the disk refused (full, gone) loses that chunk only: the console
				// keeps being drained so that the guest never stalls on it.
				_, _ = log.Write(buf[:n])
			}
			if err != nil {
				return // the VMM exited or closed the stream: the log ends here
			}
		}
	}()
	return ch, nil
}

// ConsoleFIFO is the named pipe a VMM that writes its guest console to stdout (Firecracker)
// writes into, and the daemon reads from: the pipe, unlike a file, holds at most a pipe
// buffer when nobody reads.
type ConsoleFIFO struct {
	// Writer is the VMM's end (its stdout and stderr); close it once the VMM has started.
	Writer *os.File
	path   string
	reader *os.File
}

// NewConsoleFIFO makes a named pipe at path (replacing any file there) and opens both ends.
func NewConsoleFIFO(path string) (*ConsoleFIFO, error) {
	_ = os.Remove(path)
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		return nil, fmt.Errorf("make console pipe %s: %w", path, err)
	}
	// The read end first, non-blocking so that the open does not wait for a writer; the
	// write end then opens at once.
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("open console pipe %s: %w", path, err)
	}
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		r.Close()
		os.Remove(path)
		return nil, fmt.Errorf("open console pipe %s: %w", path, err)
	}
	return &ConsoleFIFO{Writer: w, path: path, reader: r}, nil
}

// Pump copies the pipe into the console log (see PumpConsole) until every writer has closed
// it; the caller must have closed Writer by then.
func (c *ConsoleFIFO) Pump(log string, max int64, header string) (<-chan struct{}, error) {
	return PumpConsole(c.reader, log, max, header)
}

// Close closes both ends (for a start that failed before Pump).
func (c *ConsoleFIFO) Close() {
	c.Writer.Close()
	c.reader.Close()
}

// ReopenConsoleFIFO opens the read end of a console pipe again (a new daemon taking over a
// running VM's console) and pumps it into the log; what the VMM wrote while nobody read is
// lost. It fails if path is not a named pipe.
func ReopenConsoleFIFO(path, log string, max int64, header string) (<-chan struct{}, error) {
	st, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode()&os.ModeNamedPipe == 0 {
		return nil, fmt.Errorf("%s is not a named pipe", path)
	}
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	return PumpConsole(r, log, max, header)
}
