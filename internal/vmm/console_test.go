package vmm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A guest that writes far more than the cap leaves at most two files of at most the cap each,
// and the newest output is in them.
func TestConsoleLogStaysWithinItsCap(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "console.log")
	const capBytes = MinConsoleLogSize
	r, w := io.Pipe()
	done, err := PumpConsole(r, path, capBytes, "boot")
	if err != nil {
		t.Fatal(err)
	}
	line := bytes.Repeat([]byte("x"), 999)
	for i := 0; i < 10*capBytes/1000; i++ {
		fmt.Fprintf(w, "%08d %s\n", i, line[:990])
	}
	fmt.Fprintln(w, "the last line")
	w.Close()
	<-done
	var total int64
	for _, p := range []string{path, path + RotatedSuffix} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if st.Size() > capBytes {
			t.Errorf("%s is %d bytes, over the cap of %d", p, st.Size(), capBytes)
		}
		total += st.Size()
	}
	if total > 2*capBytes {
		t.Errorf("console logs hold %d bytes, over twice the cap", total)
	}
	if tail := LogTail(path, 1); tail != "the last line" {
		t.Errorf("LogTail = %q", tail)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("files left: %v", entries)
	}
}

func TestConsoleLogCapIsClamped(t *testing.T) {
	for in, want := range map[int64]int64{0: DefaultConsoleLogSize, 1: MinConsoleLogSize, 1 << 40: MaxConsoleLogSize, 1 << 20: 1 << 20} {
		if got := ConsoleLogCap(in); got != want {
			t.Errorf("ConsoleLogCap(%d) = %d, want %d", in, got, want)
		}
	}
}

// LogTail reads only the end of a log, whatever its size, and bounds and escapes each line.
func TestLogTailReadsOnlyTheEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	// A sparse 1 GiB of zeros, then the lines that matter. Reading the whole file (the old
	// LogTail) takes seconds and a GiB of memory; the end alone is instant.
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Seek(0, io.SeekEnd)
	fmt.Fprintf(f, "\nfirst\n\n--- banger marker\nsecond\x1b[2J\n%s\n", strings.Repeat("y", 10000))
	f.Close()

	var ms runtimeMem
	ms.start()
	got := LogTail(path, 3)
	if alloc := ms.stop(); alloc > 16<<20 {
		t.Errorf("LogTail of a 1 GiB log allocated %d MiB", alloc>>20)
	}
	parts := strings.Split(got, " | ")
	if len(parts) != 3 || parts[0] != "first" || parts[1] != `second\x1b[2J` {
		t.Fatalf("LogTail = %.200q", got)
	}
	if len(parts[2]) > maxTailLine+len("…") || !strings.HasPrefix(parts[2], "yyy") {
		t.Errorf("long line not cut: %d bytes", len(parts[2]))
	}
}

// LogTail takes earlier lines from the rotated log when the current one has too few.
func TestLogTailReachesIntoTheRotatedLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	os.WriteFile(path+RotatedSuffix, []byte("old 1\nold 2\n"), 0o600)
	os.WriteFile(path, []byte("new\n"), 0o600)
	if got := LogTail(path, 2); got != "old 2 | new" {
		t.Errorf("LogTail = %q", got)
	}
}

func BenchmarkLogTail1GiB(b *testing.B) {
	path := filepath.Join(b.TempDir(), "console.log")
	f, _ := os.Create(path)
	line := strings.Repeat("z", 100) + "\n"
	chunk := strings.Repeat(line, (1<<20)/len(line))
	for i := 0; i < 1024; i++ {
		f.WriteString(chunk)
	}
	f.Close()
	start := time.Now()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		LogTail(path, 8)
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "µs/tail")
}

// A VMM that writes its console to stdout (Firecracker) writes into the pipe; the copy ends
// when the process exits, within the cap.
func TestConsoleFIFOCopiesAProcessStdout(t *testing.T) {
	dir := t.TempDir()
	fifo, err := NewConsoleFIFO(filepath.Join(dir, "console.fifo"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", "yes 'a console line' | head -c 300000; echo last words >&2")
	cmd.Stdout, cmd.Stderr = fifo.Writer, fifo.Writer
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fifo.Writer.Close()
	log := filepath.Join(dir, "console.log")
	done, err := fifo.Pump(log, MinConsoleLogSize, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	<-done
	if got := LogTail(log, 1); got != "last words" {
		t.Errorf("LogTail = %q", got)
	}
	for _, p := range []string{log, log + RotatedSuffix} {
		if st, err := os.Stat(p); err != nil || st.Size() > MinConsoleLogSize {
			t.Errorf("%s: %v, %v", p, st, err)
		}
	}
	if _, err := ReopenConsoleFIFO(log, filepath.Join(dir, "x.log"), 0, ""); err == nil {
		t.Error("ReopenConsoleFIFO accepted a regular file")
	}
}
