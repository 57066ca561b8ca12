package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/termtext"
)

const (
	syncWord = "BANGER-SYNC"
	ackWord  = "BANGER-ACK"
	goWord   = "BANGER-GO"
	maxLine  = 256
	// maxVersion bounds the agent version a guest announces.
	maxVersion = 64
)

// syncInterval is how often the host repeats its SYNC line until the guest answers.
var syncInterval = 100 * time.Millisecond

// bufferedConn is a net.Conn whose reads first drain what the handshake buffered.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// readLine returns the next newline-terminated line without the newline. Over-long lines
// (garbage on a serial port) are skipped rather than failing the handshake.
func readLine(r *bufio.Reader) (string, error) {
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// Discard the rest of an over-long line.
			for err == bufio.ErrBufferFull {
				_, err = r.ReadSlice('\n')
			}
			if err != nil {
				return "", err
			}
			continue
		}
		if err != nil {
			return "", err
		}
		if len(line) > maxLine {
			continue
		}
		return string(bytes.TrimRight(line, "\r\n")), nil
	}
}

// ClientHandshake runs the host side of the handshake on conn and returns a connection that
// is positioned at the start of the yamux stream, plus the agent's version. It gives up when
// ctx ends; the caller closes conn then.
func ClientHandshake(ctx context.Context, conn net.Conn) (net.Conn, string, error) {
	var nb [8]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return nil, "", err
	}
	nonce := hex.EncodeToString(nb[:])

	// Unblock reads and writes when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	// Repeat SYNC until the reader sees the ACK.
	acked := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	writeErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(syncInterval)
		defer t.Stop()
		for {
			if _, err := io.WriteString(conn, syncWord+" "+nonce+"\n"); err != nil {
				writeErr <- err
				return
			}
			select {
			case <-acked:
				return
			case <-t.C:
			}
		}
	}()

	br := bufio.NewReaderSize(conn, 64<<10)
	version, err := awaitAck(br, nonce)
	close(acked)
	wg.Wait()
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", fmt.Errorf("agent handshake: %w", context.Cause(ctx))
		}
		select {
		case werr := <-writeErr:
			return nil, "", fmt.Errorf("agent handshake: write: %w", werr)
		default:
		}
		return nil, "", fmt.Errorf("agent handshake: %w", err)
	}
	if _, err := io.WriteString(conn, goWord+" "+nonce+"\n"); err != nil {
		return nil, "", fmt.Errorf("agent handshake: write: %w", err)
	}
	if ctx.Err() != nil {
		return nil, "", fmt.Errorf("agent handshake: %w", context.Cause(ctx))
	}
	stop()
	_ = conn.SetDeadline(time.Time{})
	return &bufferedConn{Conn: conn, r: br}, version, nil
}

// awaitAck reads lines until the guest's ACK of nonce and returns the version it announced.
// The ACK may come after bytes without a newline on the same line: a guest restored from a
// snapshot taken inside an agent session still runs that session for a moment, and its
// multiplexer's keep-alive ping (binary, no newline), queued while no host was connected, is
// the first thing the new connection gets. The guest answers each SYNC nonce once, so such
// an ACK must not be missed.
func awaitAck(br *bufio.Reader, nonce string) (string, error) {
	for {
		line, err := readLine(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return "", fmt.Errorf("connection closed before the agent answered")
			}
			return "", err
		}
		if i := strings.LastIndex(line, ackWord+" "); i > 0 {
			line = line[i:]
		}
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == ackWord && f[1] == nonce {
			version := ""
			if len(f) >= 3 {
				// The guest's word, shown to the user: bounded and escaped.
				version = termtext.CleanLine(termtext.Truncate(f[2], maxVersion))
			}
			return version, nil
		}
	}
}

// ServerHandshake runs the guest side of the handshake on rw: it waits for a SYNC, answers
// it and waits for the matching GO. It returns a reader positioned at the start of the yamux
// stream. A new SYNC nonce while waiting for GO means the host started over; it is answered
// too. io.EOF means the host went away (or is not connected yet).
func ServerHandshake(rw io.ReadWriter, version string) (io.Reader, error) {
	br := bufio.NewReaderSize(rw, 64<<10)
	nonce := ""
	for {
		line, err := readLine(br)
		if err != nil {
			return nil, err
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		switch f[0] {
		case syncWord:
			if f[1] == nonce {
				continue // a repeat of the SYNC already answered
			}
			nonce = f[1]
			if _, err := io.WriteString(rw, ackWord+" "+nonce+" "+version+"\n"); err != nil {
				return nil, err
			}
		case goWord:
			if nonce != "" && f[1] == nonce {
				return br, nil
			}
		}
	}
}
