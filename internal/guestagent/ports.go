package guestagent

import (
	"bufio"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/banger-dev/banger/internal/agent"
)

// listeningPorts reads the guest's listening TCP sockets and bound UDP sockets from /proc
// (under procRoot), with the process that owns each where it can be found.
func listeningPorts(procRoot string) []agent.Port {
	owners := socketOwners(procRoot)
	var out []agent.Port
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		f, err := os.Open(filepath.Join(procRoot, "net", proto))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 {
				continue
			}
			state := fields[3]
			// TCP: 0A is LISTEN. UDP: 07 is "close", an unconnected (bound) socket.
			if (strings.HasPrefix(proto, "tcp") && state != "0A") || (strings.HasPrefix(proto, "udp") && state != "07") {
				continue
			}
			addr, port, ok := parseHexAddr(fields[1])
			if !ok {
				continue
			}
			p := agent.Port{Proto: proto, Addr: addr, Port: port}
			if o, ok := owners[fields[9]]; ok {
				p.PID, p.Process = o.pid, o.name
			}
			out = append(out, p)
		}
		f.Close()
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Port != out[j].Port {
			return out[i].Port < out[j].Port
		}
		return out[i].Proto < out[j].Proto
	})
	return out
}

// parseHexAddr decodes /proc/net's "0100007F:1F90" (address in host byte order per 32-bit word).
func parseHexAddr(s string) (string, int, bool) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return "", 0, false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return "", 0, false
	}
	b, err := hex.DecodeString(h)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return "", 0, false
	}
	// Each 32-bit word is little-endian.
	for i := 0; i+4 <= len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	return net.IP(b).String(), int(port), true
}

type owner struct {
	pid  int
	name string
}

// socketOwners maps socket inodes to the process holding them.
func socketOwners(procRoot string) map[string]owner {
	out := map[string]owner{}
	dirs, _ := filepath.Glob(filepath.Join(procRoot, "[0-9]*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(filepath.Join(d, "fd"))
		if err != nil {
			continue
		}
		var name string
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(d, "fd", fd.Name()))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			if name == "" {
				b, _ := os.ReadFile(filepath.Join(d, "comm"))
				name = strings.TrimSpace(string(b))
			}
			inode := strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")
			if _, seen := out[inode]; !seen {
				out[inode] = owner{pid, name}
			}
		}
	}
	return out
}
