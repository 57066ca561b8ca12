// Package guestagent is banger-agent's serving half: inside a running guest it accepts the
// host's connection (virtio-serial port or vsock), runs the handshake of package agent, and
// answers requests — health, exec with streamed stdio and signals, poweroff.
package guestagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/wire"
)

// Server answers host requests.
type Server struct {
	Version string
	Log     *log.Logger
	// Root is where provisioned files are written: "/" in a guest ("" means "/"); tests
	// point it elsewhere.
	Root string
	// Poweroff shuts the guest down; it is called after the reply has been sent.
	Poweroff func() error

	// Sys is what a renewal changes outside Root; nil means the kernel the agent runs on,
	// which only a guest's agent may change.
	Sys System
	// renewing serialises renewals: two at once would interleave their steps.
	renewing sync.Mutex
}

// ServeConn serves one host connection: handshake, then requests until the host goes away.
// rwc is closed when ServeConn returns. io.EOF from the handshake means no host is connected.
func (s *Server) ServeConn(ctx context.Context, rwc io.ReadWriteCloser) error {
	defer rwc.Close()
	r, err := agent.ServerHandshake(rwc, s.Version)
	if err != nil {
		return err
	}
	conn := struct {
		io.Reader
		io.Writer
		io.Closer
	}{r, rwc, rwc}
	sess, err := yamux.Server(conn, agent.YamuxConfig())
	if err != nil {
		return fmt.Errorf("start multiplexer: %w", err)
	}
	defer sess.Close()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	// Sessions start and end unlogged: a clone's first one comes right after its restore,
	// where journald's handling of a line costs more of the guest than the line is worth (the
	// daemon logs its side).
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			if sess.IsClosed() {
				return nil
			}
			return fmt.Errorf("accept stream: %w", err)
		}
		go s.serveStream(st)
	}
}

func (s *Server) serveStream(st net.Conn) {
	defer st.Close()
	r := wire.NewReader(st)
	w := wire.NewWriter(st)
	req, err := agent.DecodeRequest(r)
	if err != nil {
		s.Log.Printf("bad request: %v", err)
		return
	}
	switch req.Op {
	case agent.OpHealth:
		h, err := s.health()
		rep := agent.Reply{Health: &h}
		if err != nil {
			rep = agent.Reply{Error: err.Error()}
		}
		_ = agent.EncodeReply(w, rep)
	case agent.OpExec:
		if req.Exec == nil || len(req.Exec.Argv) == 0 {
			_ = w.WriteJSON(wire.Exit, wire.ExitMsg{Code: 127, Error: "exec request without a command"})
			return
		}
		runExec(s.Log, r, w, *req.Exec)
	case agent.OpPoweroff:
		if s.Poweroff == nil {
			_ = agent.EncodeReply(w, agent.Reply{Error: "poweroff is not available"})
			return
		}
		_ = agent.EncodeReply(w, agent.Reply{})
		go func() {
			time.Sleep(50 * time.Millisecond)
			if err := s.Poweroff(); err != nil {
				s.Log.Printf("poweroff: %v", err)
			}
		}()
	case agent.OpProvision:
		if req.Provision == nil {
			_ = agent.EncodeReply(w, agent.Reply{Error: "provision request without files"})
			return
		}
		rep := agent.Reply{}
		if err := provision(*req.Provision, s.root()); err != nil {
			s.Log.Printf("provision: %v", err)
			rep.Error = err.Error()
		}
		_ = agent.EncodeReply(w, rep)
	case agent.OpRenew:
		if req.Renew == nil {
			_ = agent.EncodeReply(w, agent.Reply{Error: "renew request without a renewal"})
			return
		}
		report, err := s.renew(*req.Renew)
		rep := agent.Reply{Renewed: report}
		if err != nil {
			s.Log.Printf("renew: %v (%s)", err, report)
			rep.Error = err.Error()
		}
		_ = agent.EncodeReply(w, rep)
	case agent.OpUntar:
		if req.Untar == nil {
			_ = agent.EncodeReply(w, agent.Reply{Error: "untar request without a destination"})
			return
		}
		res, err := receiveUpload(r, *req.Untar)
		rep := agent.Reply{Untar: &res}
		if err != nil {
			s.Log.Printf("untar into %s: %v", req.Untar.Dest, err)
			rep.Error = err.Error()
		}
		_ = agent.EncodeReply(w, rep)
	case agent.OpPorts:
		ports := listeningPorts("/proc")
		if ports == nil {
			ports = []agent.Port{}
		}
		_ = agent.EncodeReply(w, agent.Reply{Ports: ports})
	case agent.OpDial:
		if req.Dial == nil {
			_ = agent.EncodeReply(w, agent.Reply{Error: "dial request without an address"})
			return
		}
		c, err := dial(*req.Dial)
		if err != nil {
			_ = agent.EncodeReply(w, agent.Reply{Error: err.Error()})
			return
		}
		defer c.Close()
		if agent.EncodeReply(w, agent.Reply{}) != nil {
			return
		}
		splice(st, c)
	default:
		_ = agent.EncodeReply(w, agent.Reply{Error: fmt.Sprintf("unknown operation %q (agent %s)", req.Op, s.Version)})
	}
}

func (s *Server) health() (agent.Health, error) {
	h := agent.Health{AgentVersion: s.Version, Init: "systemd"}
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return h, fmt.Errorf("read boot id: %w", err)
	}
	h.BootID = strings.TrimSpace(string(b))
	h.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if sec, err := strconv.ParseFloat(f[0], 64); err == nil {
				h.Uptime = time.Duration(sec * float64(time.Second))
			}
		}
	}
	if os.Getpid() == 1 {
		h.Init = "agent"
	} else if b, err := os.ReadFile("/proc/1/comm"); err == nil {
		h.Init = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile(filepath.Join(s.root(), SSHStatusFile)); err == nil {
		var st agent.SSHStatus
		if json.Unmarshal(b, &st) == nil {
			h.SSH = &st
		}
	}
	return h, nil
}

// ErrNoPort is returned when the guest has no agent port (yet).
var ErrNoPort = errors.New("no virtio-serial port named " + agent.PortName)

func (s *Server) root() string {
	if s.Root == "" {
		return "/"
	}
	return s.Root
}

// splice copies bytes both ways until either side is done, then closes both.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Half-close where possible so the other direction can finish.
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
	a.Close()
	b.Close()
}
