// Command banger-helper is banger's root helper: the one part of banger that runs as root. It
// makes the guest network's bridge, the VMs' taps (handed to the user's daemon), banger's
// packet filter and the DNS routing of the vm domain, for root and the members of the banger
// group, and nothing else. Package roothelper documents the protocol and every check.
//
// systemd starts it on the first connection to /run/banger/helper.sock (banger-helper.socket);
// run by hand, it makes that socket itself.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/banger-dev/banger/internal/roothelper"
	"github.com/banger-dev/banger/internal/version"
)

func main() {
	configPath := flag.String("config", roothelper.DefaultConfigPath, "the helper's configuration (TOML; missing at the default path: banger's defaults)")
	socket := flag.String("socket", roothelper.DefaultSocket, "the socket to listen on when not socket-activated by systemd")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("banger-helper " + version.Get().String())
		return
	}
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: banger-helper [--config FILE] [--socket PATH]")
		os.Exit(2)
	}
	lg := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*configPath, *socket, lg); err != nil {
		lg.Error("banger-helper: " + err.Error())
		os.Exit(1)
	}
}

func run(configPath, socket string, lg *slog.Logger) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("banger-helper runs as root (it is started by systemd: systemctl start banger-helper.socket)")
	}
	cfg, err := roothelper.LoadConfig(configPath)
	if err != nil {
		return err
	}
	srv, err := roothelper.NewServer(cfg, lg)
	if err != nil {
		return err
	}
	l, err := roothelper.ActivationListener()
	if err != nil {
		return err
	}
	where := "socket activation"
	if l == nil {
		if l, err = roothelper.Listen(socket, srv.GroupID()); err != nil {
			return fmt.Errorf("listen on %s: %w", socket, err)
		}
		where = socket
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	lg.Info("banger-helper started", "version", version.Get().String(), "listen", where, "group", cfg.Group, "pid", os.Getpid())
	err = srv.Serve(l) // returns once l is closed; closing removed the socket it made
	srv.Close()
	lg.Info("banger-helper stopped")
	return err
}
