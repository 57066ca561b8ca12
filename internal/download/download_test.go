package download

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestGetWithinDeclaredSize(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 100_000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer srv.Close()
	c := &Client{HTTP: srv.Client()}
	got, err := c.Bytes(context.Background(), srv.URL, int64(len(body)))
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("Bytes = %d bytes, %v; want the %d-byte body", len(got), err, len(body))
	}
}

// A server that sends more than declared, without Content-Length (chunked), is cut off after
// one byte past the limit, with an error naming the URL.
func TestGetRefusesMoreThanDeclared(t *testing.T) {
	sent := make(chan int64, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n int64
		chunk := bytes.Repeat([]byte("y"), 32<<10)
		for range 1024 { // up to 32 MiB
			m, err := w.Write(chunk)
			n += int64(m)
			if err != nil {
				break
			}
			w.(http.Flusher).Flush()
		}
		sent <- n
	}))
	defer srv.Close()
	c := &Client{HTTP: srv.Client()}
	b, err := c.Get(context.Background(), srv.URL+"/pkg.deb", 1000)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, b)
	b.Close()
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), srv.URL+"/pkg.deb") {
		t.Fatalf("reading past the declared size: %v; want ErrTooLarge naming the URL", err)
	}
	if n != 1000 {
		t.Fatalf("the caller got %d bytes, want exactly the declared 1000", n)
	}
	if s := <-sent; s >= 32<<20 {
		t.Fatalf("the server could send all %d bytes; the download was not abandoned", s)
	}
}

func TestGetRefusesLargeContentLength(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(5000))
		w.Write(make([]byte, 5000))
	}))
	defer srv.Close()
	_, err := (&Client{HTTP: srv.Client()}).Get(context.Background(), srv.URL, 4999)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Get with a Content-Length above the limit: %v; want ErrTooLarge", err)
	}
}

// A server that accepts the request and sends nothing, before or after the headers, fails
// the download with ErrStalled instead of hanging.
func TestGetStalls(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			w.Write([]byte("some"))
			w.(http.Flusher).Flush()
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c := &Client{HTTP: srv.Client(), Stall: 200 * time.Millisecond}

	_, err := c.Get(context.Background(), srv.URL+"/headers", 0)
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), srv.URL+"/headers") {
		t.Fatalf("no headers: %v; want ErrStalled naming the URL", err)
	}
	b, err := c.Get(context.Background(), srv.URL+"/body", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got, err := io.ReadAll(b)
	if !errors.Is(err, ErrStalled) || string(got) != "some" {
		t.Fatalf("stalled body: %q, %v; want the bytes sent, then ErrStalled", got, err)
	}
}

func TestGetNotFound(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	_, err := (&Client{HTTP: srv.Client()}).Get(context.Background(), srv.URL, 0)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("404: %v; want ErrNotFound", err)
	}
}

func TestDefaultClientHasTimeouts(t *testing.T) {
	tr, ok := NewHTTPClient().Transport.(*http.Transport)
	if !ok || tr.TLSHandshakeTimeout == 0 || tr.ResponseHeaderTimeout == 0 || tr.DialContext == nil {
		t.Fatalf("transport %+v lacks timeouts", tr)
	}
}

func TestGuardClosesAStalledReader(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { pw.Write([]byte("abc")) }() // then nothing, never closed
	g := Guard(pr, 100*time.Millisecond, "layer sha256:x")
	defer g.Close()
	got, err := io.ReadAll(g)
	if !errors.Is(err, ErrStalled) || string(got) != "abc" || !strings.Contains(err.Error(), "layer sha256:x") {
		t.Fatalf("ReadAll = %q, %v; want abc then ErrStalled naming the layer", got, err)
	}
}
