package roothelper

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// foreignState is what of a namespace is not banger's, as text: the links and addresses of
// the devices set up by the test, the routes not on banger's bridge, the rules, and every
// nftables table that is not banger's. Timers of bridge ports, which tick on their own, are
// left out.
func foreignState(t *testing.T, ns string, links []string) string {
	t.Helper()
	var b strings.Builder
	timers := regexp.MustCompile(`\b\w+_timer\s+[0-9.]+`)
	for _, l := range links {
		b.WriteString(timers.ReplaceAllString(inNS(t, ns, "ip", "-d", "link", "show", "dev", l), ""))
		b.WriteString(inNS(t, ns, "ip", "-4", "addr", "show", "dev", l))
	}
	for _, line := range strings.Split(inNS(t, ns, "ip", "-4", "route", "show", "table", "all"), "\n") {
		if !strings.Contains(line, "banger0") {
			b.WriteString(line + "\n")
		}
	}
	b.WriteString(inNS(t, ns, "ip", "rule", "show"))
	for _, line := range strings.Split(inNS(t, ns, "nft", "list", "tables"), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] != "banger" {
			b.WriteString(inNS(t, ns, "nft", "list", "table", f[1], f[2]))
		}
	}
	return b.String()
}

// TestCompromisedDaemon sends a real helper many requests a compromised daemon could send —
// generated from the request types with hostile values mixed in, and mangled bytes — as a
// member of the helper's group, in a namespace that also holds a bridge, taps, a link named
// like a banger tap, routes and nftables tables that are not banger's (one tap is another
// user's banger tap). Afterwards all of those are exactly as they were.
func TestCompromisedDaemon(t *testing.T) {
	ns := testNS(t)
	sock, _ := startServer(t, testConfig(t))
	setup := [][]string{
		{"ip", "link", "add", "br-foreign", "type", "bridge"},
		{"ip", "addr", "add", "10.77.0.1/24", "dev", "br-foreign"},
		{"ip", "link", "set", "br-foreign", "up"},
		{"ip", "link", "add", "banger1", "type", "bridge"},
		{"ip", "tuntap", "add", "dev", "tap-foreign", "mode", "tap"},
		{"ip", "link", "set", "tap-foreign", "master", "br-foreign"},
		{"ip", "tuntap", "add", "dev", "bgfeedfeedfeed", "mode", "tap", "user", "4242"},
		{"ip", "link", "add", "bg0123456789ab", "type", "veth", "peer", "name", "vforeign"},
		{"ip", "link", "add", "dummy-foreign", "type", "veth", "peer", "name", "uplink-peer"},
		{"ip", "link", "set", "uplink-peer", "up"},
		{"ip", "addr", "add", "10.88.0.1/24", "dev", "dummy-foreign"},
		{"ip", "link", "set", "dummy-foreign", "up"},
		{"ip", "route", "add", "10.99.0.0/16", "via", "10.88.0.2"},
		{"ip", "route", "add", "default", "via", "10.88.0.2"},
		{"ip", "rule", "add", "from", "10.77.0.0/24", "table", "77"},
		{"nft", "add", "table", "inet", "foreign"},
		{"nft", "add", "chain", "inet", "foreign", "input", "{ type filter hook input priority 0 ; }"},
		{"nft", "add", "rule", "inet", "foreign", "input", "iifname", "banger0", "udp", "dport", "53", "counter", "accept"},
		{"nft", "add", "table", "ip", "natforeign"},
		{"nft", "add", "chain", "ip", "natforeign", "post", "{ type nat hook postrouting priority 100 ; }"},
		{"nft", "add", "rule", "ip", "natforeign", "post", "oifname", "dummy-foreign", "masquerade"},
		{"nft", "add", "table", "bridge", "bangerx"},
		{"nft", "add", "table", "ip", "banger-legacy"},
	}
	for _, args := range setup {
		inNS(t, ns, args...)
	}
	links := []string{"lo", "br-foreign", "banger1", "tap-foreign", "bgfeedfeedfeed", "bg0123456789ab", "vforeign", "dummy-foreign", "uplink-peer"}
	before := foreignState(t, ns, links)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 17))
	pick := func(weighted ...string) string { return weighted[rng.IntN(len(weighted))] }
	hex12 := func() string { return fmt.Sprintf("%012x", rng.Uint64()&0xffffffffffff) }
	tap := func() string {
		return pick("bg"+hex12(), "bg"+hex12(), "bg0123456789ab", "bgfeedfeedfeed", "tap-foreign", "br-foreign",
			"banger0", "banger1", "lo", "dummy-foreign", "vforeign", "bg0123456789a", "BG0123456789AB", "bg../../../x", "")
	}
	ip := func() string {
		return pick(fmt.Sprintf("172.16.0.%d", rng.IntN(256)), fmt.Sprintf("172.16.0.%d", 2+rng.IntN(8)),
			"10.77.0.1", "10.88.0.2", "172.16.1.2", "0.0.0.0", "255.255.255.255", "::1", "172.16.0.1")
	}
	netw := func() Network { // mostly the served one, else with one hostile field
		nw := Network{Bridge: "banger0", CIDR: "172.16.0.0/24", Namespace: ns}
		switch rng.IntN(8) {
		case 0:
			nw.Bridge = pick("banger1", "br-foreign", "", "banger0\x00", "tap-foreign")
		case 1:
			nw.CIDR = pick("10.77.0.0/24", "172.16.0.0/16", "0.0.0.0/0", "172.16.0.1/24")
		case 2:
			nw.Namespace = pick("", "/run/netns/"+ns, "../"+ns, nsPrefix+"x", "banger-other", ns+"/../x", "/proc/1/ns/net")
		}
		return nw
	}
	request := func() Request {
		r := Request{Op: pick(OpHello, OpEnsureBridge, OpAddTap, OpAddTap, OpDeleteTap, OpDeleteTap, OpListTaps, OpSetGuests, OpSetGuests,
			OpRouteDomain, OpUnrouteDomain, OpRemoveBridge, OpListen, OpSocket, "delete_table", "exec"), Network: netw()}
		if rng.IntN(4) > 0 {
			r.Tap = tap()
		}
		if rng.IntN(3) == 0 {
			r.Tap = "bg" + hex12()
		}
		if rng.IntN(3) == 0 {
			for range rng.IntN(4) {
				r.Guests = append(r.Guests, Guest{Tap: tap(), IP: ip(), NAT: rng.IntN(2) == 0,
					MAC: pick(fmt.Sprintf("02:00:00:00:00:%02x", rng.IntN(256)), "ff:ff:ff:ff:ff:ff", "00:16:3e:00:00:01", "02:00:00:00:00:01")})
			}
		}
		if rng.IntN(2) == 0 {
			r.Proto = pick("tcp", "udp", "tcp4", "udp4", "tcp6", "udp6", "unix", "ip4:icmp", "packet")
		}
		if rng.IntN(2) == 0 {
			r.Addr = pick("172.16.0.1:53", "127.0.0.1:5353", "127.0.0.1:22", "10.77.0.1:53", "0.0.0.0:53", "[::]:53", "172.16.0.1:67")
		}
		// Often the fields its op reads and nothing else, so that requests get past validation.
		if rng.IntN(3) > 0 {
			switch r.Op {
			case OpAddTap, OpDeleteTap:
				r.Guests, r.Proto, r.Addr = nil, "", ""
			case OpSetGuests:
				r.Tap, r.Proto, r.Addr = "", "", ""
			case OpListen:
				r.Tap, r.Guests = "", nil
			case OpSocket:
				r.Tap, r.Guests, r.Addr = "", nil, ""
			default:
				r.Tap, r.Guests, r.Proto, r.Addr = "", nil, "", ""
			}
		}
		return r
	}
	var inputs [][]byte
	// Every operation once on every name that is not the caller's banger tap, then at random.
	hostile := []string{"bg0123456789ab", "bgfeedfeedfeed", "tap-foreign", "br-foreign", "banger1", "lo", "dummy-foreign", "vforeign", "uplink-peer"}
	ops := []string{OpHello, OpEnsureBridge, OpAddTap, OpDeleteTap, OpListTaps, OpSetGuests, OpRouteDomain, OpUnrouteDomain, OpRemoveBridge, OpListen, OpSocket}
	valid := Network{Bridge: "banger0", CIDR: "172.16.0.0/24", Namespace: ns}
	for _, op := range ops {
		for _, name := range hostile {
			for _, r := range []Request{
				{Op: op, Network: valid, Tap: name},
				{Op: op, Network: Network{Bridge: name, CIDR: "172.16.0.0/24", Namespace: ns}},
				{Op: op, Network: valid, Guests: []Guest{{Tap: name, MAC: "02:00:00:00:00:07", IP: "172.16.0.7"}}},
			} {
				b, _ := json.Marshal(r)
				inputs = append(inputs, b)
			}
		}
	}
	n := 600
	if testing.Short() {
		n = 150
	}
	for range n {
		b, err := json.Marshal(request())
		if err != nil {
			t.Fatal(err)
		}
		switch rng.IntN(10) {
		case 0: // a byte changed
			b[rng.IntN(len(b))] = byte(rng.IntN(256))
		case 1: // cut short
			b = b[:rng.IntN(len(b))]
		}
		inputs = append(inputs, b)
	}
	corpus, _ := filepath.Glob("testdata/fuzz/FuzzDecodeRequest/*")
	for _, p := range corpus {
		if b, err := os.ReadFile(p); err == nil {
			inputs = append(inputs, []byte(strings.ReplaceAll(corpusValue(b), "banger-ci", ns)))
		}
	}

	ok := map[string]int{}
	asCaller(t, memberUID, testGID, nil, func() {
		for _, b := range inputs {
			resp, err := rawRequest(sock, b)
			if err != nil {
				continue
			}
			if resp.OK {
				var r Request
				_ = json.Unmarshal(b, &r)
				ok[r.Op]++
			}
		}
	})
	t.Logf("%d requests; accepted by op: %v", len(inputs), ok)
	if ok[OpAddTap] == 0 || ok[OpSetGuests] == 0 || ok[OpDeleteTap] == 0 {
		t.Errorf("the generator did not reach the operations that change things: %v", ok)
	}

	if after := foreignState(t, ns, links); after != before {
		t.Errorf("what is not banger's changed.\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// corpusValue extracts the []byte of a Go fuzz corpus file ("go test fuzz v1\n[]byte(\"...\")").
func corpusValue(file []byte) string {
	s := strings.TrimSpace(string(file))
	i := strings.Index(s, "[]byte(")
	if i < 0 || !strings.HasSuffix(s, ")") {
		return ""
	}
	var v string
	if _, err := fmt.Sscanf(s[i+len("[]byte("):len(s)-1], "%q", &v); err != nil {
		return ""
	}
	return v
}
