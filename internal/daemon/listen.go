package daemon

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/peercred"
)

// listenFunc opens a listening socket (net.Listen, or in a network namespace).
type listenFunc func(network, address string) (net.Listener, error)

// listenSocket replaces whatever is at socket with the daemon's listening socket, restricts it
// to its owner (0600) and returns a listener that accepts only clients running as root or as
// the socket's owner (SO_PEERCRED): the mode is the first line of defence, the peer check the
// second, in case the mode is changed or the socket is reached some other way.
func listenSocket(socket string, listen listenFunc, lg *slog.Logger) (net.Listener, error) {
	_ = os.Remove(socket)
	ln, err := listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict %s to its owner: %w", socket, err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(socket, &st); err != nil {
		ln.Close()
		return nil, fmt.Errorf("check %s: %w", socket, err)
	}
	return &peerListener{Listener: ln, owner: int(st.Uid), log: lg}, nil
}

// peerListener accepts connections from root and owner only; others get a 403 answer in
// banger's error format and are closed, without reaching any route.
type peerListener struct {
	net.Listener
	owner int
	log   *slog.Logger
}

// Accept returns the next connection of a trusted client.
func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, err := peercred.UID(c)
		if err == nil && (uid == 0 || uid == l.owner) {
			return c, nil
		}
		if err != nil {
			l.log.Warn("refused a client whose credentials cannot be read", "err", err)
		} else {
			l.log.Warn("refused a client of another user", "uid", uid, "owner", l.owner)
		}
		go refuse(c, uid, l.owner)
	}
}

// refuseWait bounds how long a refused client may keep its connection.
const refuseWait = 2 * time.Second

// refuse answers an untrusted client with 403 and closes the connection. What the client sent
// is read (up to 1 MiB, for refuseWait) and dropped, so that closing does not reset the
// connection before the answer is read; none of it is parsed.
func refuse(c net.Conn, uid, owner int) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(refuseWait))
	who := "a client whose user is unknown"
	if uid >= 0 {
		who = "uid " + strconv.Itoa(uid)
	}
	body, _ := json.Marshal(api.ErrorBody{Error: &api.Error{
		Code:    "invalid",
		Message: fmt.Sprintf("bangerd serves root and uid %d only; this client runs as %s", owner, who),
		Hint:    "run banger as the user that started the daemon, or set BANGER_SOCKET to start a daemon of your own",
	}})
	_, _ = fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	if uc, ok := c.(*net.UnixConn); ok {
		_ = uc.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 1<<20))
}
