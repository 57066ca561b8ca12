package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// qmpSession is one QMP connection past its capabilities negotiation. Its deadline is ctx's,
// or ten seconds.
type qmpSession struct {
	conn *net.UnixConn
	dec  *json.Decoder
}

// dialQMP connects to QEMU's QMP socket and negotiates capabilities.
func dialQMP(ctx context.Context, socket string) (*qmpSession, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	return startQMP(ctx, c.(*net.UnixConn))
}

// startQMP reads QEMU's greeting on conn and negotiates capabilities; conn is closed if that
// fails.
func startQMP(ctx context.Context, conn *net.UnixConn) (*qmpSession, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
	s := &qmpSession{conn: conn, dec: json.NewDecoder(conn)}
	var greeting map[string]json.RawMessage
	if err := s.dec.Decode(&greeting); err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: read greeting: %w", err)
	}
	if err := s.run("qmp_capabilities", nil, nil); err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

func (s *qmpSession) Close() error { return s.conn.Close() }

// run executes command with args (nil: none) and decodes its return value into out (nil:
// ignored). Events that arrive meanwhile are skipped.
func (s *qmpSession) run(command string, args, out any) error {
	return s.runWithFile(command, args, out, nil)
}

// runWithFile is run with f passed along (SCM_RIGHTS), as getfd and add-fd need.
func (s *qmpSession) runWithFile(command string, args, out any, f *os.File) error {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	var oob []byte
	if f != nil {
		oob = unix.UnixRights(int(f.Fd()))
	}
	if _, _, err := s.conn.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := s.dec.Decode(&resp); err != nil {
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		if resp.Event != "" {
			continue
		}
		if resp.Error != nil {
			return fmt.Errorf("qmp %s: %s: %s", command, resp.Error.Class, resp.Error.Desc)
		}
		if out != nil {
			if err := json.Unmarshal(resp.Return, out); err != nil {
				return fmt.Errorf("qmp %s: unexpected answer %.200s: %w", command, resp.Return, err)
			}
		}
		return nil
	}
}

// status is QEMU's run state (query-status): "running", "paused", "inmigrate",
// "postmigrate", …
func (s *qmpSession) status() (string, error) {
	var st struct {
		Status string `json:"status"`
	}
	err := s.run("query-status", nil, &st)
	return st.Status, err
}

// qmpExecute runs one QMP command without arguments on a fresh connection.
func qmpExecute(ctx context.Context, socket, command string) error {
	s, err := dialQMP(ctx, socket)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	defer s.Close()
	return s.run(command, nil, nil)
}
