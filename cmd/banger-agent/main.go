// Command banger-agent is banger's guest agent. As PID 1 of the initramfs it boots the guest
// (package guestinit); started by systemd with "serve" it answers the host (package
// guestagent). In images without systemd it stays PID 1 as "init" (guestagent.RunInit) and
// runs "serve" as its child.
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
	if os.Getpid() == 1 && len(os.Args) == 2 && os.Args[1] == "init" {
		// The initramfs switched root into the agent: the image has no systemd.
		lg := log.New(os.Stderr, "banger-agent: ", 0)
		guestinit.Fail(guestagent.RunInit(os.Args[0], lg.Printf))
		return
	}
	if os.Getpid() == 1 {
		self := "/init"
		if p, err := os.Executable(); err == nil {
			self = p
		}
		guestinit.Fail(guestinit.Run(self))
		return
	}
	if len(os.Args) >= 2 && os.Args[1] == "extract" {
		os.Exit(extract(os.Args[2:]))
	}
	if len(os.Args) >= 2 && os.Args[1] == "prune" {
		os.Exit(prune(os.Args[2:]))
	}
	if len(os.Args) < 2 || os.Args[1] != "serve" {
		fmt.Fprintf(os.Stderr, "usage: banger-agent serve\n       banger-agent extract [--zstd] FILE DIR\n       banger-agent prune OLD.tar.zst NEW.tar.zst DIR\n\nbanger-agent runs inside banger guests; it is not meant to be started by hand.\n")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	lg := log.New(os.Stderr, "", 0)
	s := &guestagent.Server{Version: version.Get().Version, Log: lg, Poweroff: guestagent.PoweroffSystem}
	lg.Printf("banger-agent %s serving on virtio-serial port %s and vsock port %d", version.Get(), agent.PortName, agent.VsockPort)
	// sshd is not the agent's business to serve, but an image without one gets it installed
	// (network permitting) and the outcome recorded for `banger vm ssh` to explain.
	go guestagent.EnsureSSH(ctx, lg.Printf)
	// QEMU guests have the virtio-serial port, Firecracker guests the vsock device; the agent
	// does not know which it runs under, so it serves both. Each waits quietly (with back-off)
	// for an endpoint that never appears.
	// The network comes first but must not hold up serving: the host may already be waiting.
	go guestagent.SetUpNetworkFromCmdline(lg.Printf)
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

// extract is `banger-agent extract [--zstd] FILE DIR`: it unpacks a tar file under the rules
// of an upload (nothing lands outside DIR). The host runs it in the guest, e.g. to rebuild
// what a workspace was when it was shipped.
func extract(args []string) int {
	compression := ""
	if len(args) > 0 && args[0] == "--zstd" {
		compression, args = "zstd", args[1:]
	}
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: banger-agent extract [--zstd] FILE DIR")
		return 2
	}
	if _, err := guestagent.ExtractFile(args[0], compression, args[1]); err != nil {
		fmt.Fprintf(os.Stderr, "banger-agent extract %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// prune is `banger-agent prune OLD NEW DIR`: it removes from DIR what the shipped stream OLD
// put there and NEW no longer ships (a workspace sync's deletions).
func prune(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: banger-agent prune OLD.tar.zst NEW.tar.zst DIR")
		return 2
	}
	if _, err := guestagent.PruneShipped(args[0], args[1], args[2]); err != nil {
		fmt.Fprintf(os.Stderr, "banger-agent prune %s: %v\n", args[2], err)
		return 1
	}
	return 0
}
