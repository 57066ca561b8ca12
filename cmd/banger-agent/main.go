// Command banger-agent is banger's guest agent. As PID 1 of the initramfs it boots the guest
// (package guestinit); started by systemd with "serve" it answers the host (package
// guestagent).
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/guestagent"
	"github.com/banger-dev/banger/internal/guestinit"
	"github.com/banger-dev/banger/internal/version"
)

func main() {
	if os.Getpid() == 1 {
		self := "/init"
		if p, err := os.Executable(); err == nil {
			self = p
		}
		guestinit.Fail(guestinit.Run(self))
		return
	}
	if len(os.Args) < 2 || os.Args[1] != "serve" {
		fmt.Fprintf(os.Stderr, "usage: banger-agent serve\n\nbanger-agent runs inside banger guests; it is not meant to be started by hand.\n")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	lg := log.New(os.Stderr, "", 0)
	s := &guestagent.Server{Version: version.Get().Version, Log: lg, Poweroff: guestagent.PoweroffSystem}
	lg.Printf("banger-agent %s serving on virtio-serial port %s and vsock port %d", version.Get(), agent.PortName, agent.VsockPort)
	// QEMU guests have the virtio-serial port, Firecracker guests the vsock device; the agent
	// does not know which it runs under, so it serves both. Each waits quietly (with back-off)
	// for an endpoint that never appears.
	errs := make(chan error, 2)
	go func() { errs <- s.ServeSerial(ctx, agent.PortName) }()
	go func() { errs <- s.ServeVsock(ctx, agent.VsockPort) }()
	for range 2 {
		if err := <-errs; err != nil && ctx.Err() == nil {
			lg.Printf("serve: %v", err)
			os.Exit(1)
		}
	}
}
