package agent

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/banger-dev/banger/internal/wire"
)

// FuzzHandshake feeds arbitrary bytes to both sides' handshake readers: the host's wait for
// an ACK (what a hostile guest answers) and the guest's wait for SYNC and GO. Neither may
// panic or hang, and a version the host accepts is short and printable.
func FuzzHandshake(f *testing.F) {
	const nonce = "00112233aabbccdd"
	for _, s := range []string{
		"BANGER-ACK " + nonce + " 1.2.3\n",
		"garbage\r\nBANGER-ACK " + nonce + "\n",
		"BANGER-ACK " + nonce + " \x1b]0;owned\a\x1b[2J\n",
		"BANGER-ACK wrong 1\n" + strings.Repeat("x", 70000) + "\nBANGER-ACK " + nonce + " v\n",
		"BANGER-SYNC n1\nBANGER-GO n1\nrest",
		"BANGER-SYNC n1\nBANGER-SYNC n2\nBANGER-GO n1\nBANGER-GO n2\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		version, err := awaitAck(bufio.NewReaderSize(bytes.NewReader(data), 64<<10), nonce)
		if err == nil {
			if len(version) > 4*maxVersion+len("…")*4 || !utf8.ValidString(version) {
				t.Fatalf("accepted version %q", version)
			}
			for _, c := range []byte(version) {
				if c < 0x20 || c == 0x7f {
					t.Fatalf("version %q holds control byte %#x", version, c)
				}
			}
		}
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(data), io.Discard}
		if r, err := ServerHandshake(rw, "1"); err == nil && r == nil {
			t.Fatal("ServerHandshake succeeded without a reader")
		}
	})
}

// FuzzReadReply decodes arbitrary bytes as a stream's Reply frame: no panic, and whatever
// is accepted is bounded.
func FuzzReadReply(f *testing.F) {
	frame := func(t wire.Type, payload string) []byte {
		var b bytes.Buffer
		_ = wire.NewWriter(&b).Write(t, []byte(payload))
		return b.Bytes()
	}
	for _, s := range []string{
		`{"error":"no such file"}`,
		`{"ports":[{"proto":"tcp","addr":"0.0.0.0","port":22,"pid":1,"process":"sshd"}]}`,
		`{"health":{"agent_version":"1","boot_id":"b","hostname":"h","uptime":1,"init":"systemd","ssh":{"state":"running","time":"2026-01-01T00:00:00Z"}}}`,
		`{"untar":{"files":3,"bytes":10}}`,
		`{"error":"` + strings.Repeat("e", 5000) + `"}`,
		`{"ports":[{"process":"\u001b]0;owned\u0007"}]}`,
		`not json`,
	} {
		f.Add(frame(wire.Reply, s))
	}
	f.Add(frame(wire.Stdout, "x"))
	f.Add([]byte{'R', 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{'R', 0, 0, 0, 9, '{'})
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := ReadReply(wire.NewReader(bytes.NewReader(data)))
		if err != nil {
			return
		}
		if len(rep.Error) > MaxReplyError+len("…") {
			t.Fatalf("error of %d bytes accepted", len(rep.Error))
		}
		if len(rep.Ports) > MaxReplyPorts {
			t.Fatalf("%d ports accepted", len(rep.Ports))
		}
		for _, p := range rep.Ports {
			if len(p.Process) > MaxReplyField+len("…") || len(p.Addr) > MaxReplyField+len("…") || len(p.Proto) > MaxReplyField+len("…") {
				t.Fatalf("port strings not bounded: %+v", p)
			}
		}
		if h := rep.Health; h != nil && (len(h.Hostname) > MaxReplyField+len("…") || len(h.AgentVersion) > MaxReplyField+len("…")) {
			t.Fatalf("health strings not bounded: %+v", h)
		}
	})
}
