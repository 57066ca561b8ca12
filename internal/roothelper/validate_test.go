package roothelper

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/fcjail"
)

// validConfig is the configuration of the decoding tests (no namespace is opened by them).
func validConfig() Config {
	cfg := DefaultConfig()
	cfg.NamespacePrefix = "banger"
	if err := cfg.check(); err != nil {
		panic(err)
	}
	return cfg
}

var defaultNet = Network{Bridge: "banger0", CIDR: "172.16.0.0/24", Namespace: "banger-ci"}

func TestDecodeRequestRefusesMalformedInput(t *testing.T) {
	ok := `{"op":"hello","network":{"bridge":"banger0","cidr":"172.16.0.0/24","namespace":""}}`
	if _, err := DecodeRequest([]byte(ok)); err != nil {
		t.Fatalf("valid request: %v", err)
	}
	nested := `{"op":"set_guests","network":{"bridge":"b","cidr":"c","namespace":""},"guests":[{"tap":"a","mac":"m","ip":"i","nat":true},{"tap":"a","mac":"m","ip":"i","nat":false}],"proto":""}`
	if _, err := DecodeRequest([]byte(nested)); err != nil {
		t.Fatalf("nested objects, the same keys in two of them: %v", err)
	}
	if _, err := DecodeRequest([]byte(ok + "\n \t")); err != nil {
		t.Fatalf("valid request with trailing white space: %v", err)
	}
	for name, in := range map[string]string{
		"empty":          ``,
		"not json":       `op=hello`,
		"truncated":      ok[:len(ok)-1],
		"trailing data":  ok + `x`,
		"two objects":    ok + ok,
		"unknown field":  `{"op":"hello","network":{},"extra":1}`,
		"unknown nested": `{"op":"hello","network":{"bridge":"banger0","dev":"eth0"}}`,
		"array":          `[` + ok + `]`,
		"wrong type":     `{"op":1}`,
		"guests type":    `{"op":"set_guests","guests":{"tap":"x"}}`,
		"port too big":   `{"op":"set_guests","network":{},"open_ports":[65536]}`,
		"port negative":  `{"op":"set_guests","network":{},"open_ports":[-1]}`,
		"oversized":      `{"op":"hello","addr":"` + strings.Repeat("a", MaxRequest) + `"}`,
		"null byte":      "{\"op\":\"hello\"}\x00",
		"duplicate key":  `{"op":"add_tap","op":"hello","network":{}}`,
		"case folded":    `{"OP":"hello","network":{}}`,
		"nested dup":     `{"op":"set_guests","network":{},"guests":[{"tap":"a","ip":"x","TAP":"b"}]}`,
		"network dup":    `{"op":"hello","network":{"bridge":"a","bridge":"banger0"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeRequest([]byte(in))
			if !errors.Is(err, failure.Invalid) {
				t.Fatalf("DecodeRequest(%.60q) = %v, want an Invalid error", in, err)
			}
		})
	}
}

func TestValidateRefusesWhatIsNotBangers(t *testing.T) {
	cfg := validConfig()
	guest := func(tap, mac, ip string) Request {
		return Request{Op: OpSetGuests, Network: defaultNet, Guests: []Guest{{Tap: tap, MAC: mac, IP: ip}}}
	}
	okGuest := Guest{Tap: "bg0123456789ab", MAC: "02:00:00:00:00:01", IP: "172.16.0.2"}
	with := func(f func(*Request)) Request {
		r := Request{Op: OpEnsureBridge, Network: defaultNet}
		f(&r)
		return r
	}
	valid := map[string]Request{
		"hello":           {Op: OpHello, Network: defaultNet},
		"host namespace":  {Op: OpEnsureBridge, Network: Network{Bridge: "banger0", CIDR: "172.16.0.0/24"}},
		"add tap":         {Op: OpAddTap, Network: defaultNet, Tap: "bg0123456789ab"},
		"delete tap":      {Op: OpDeleteTap, Network: defaultNet, Tap: "bgffffffffffff"},
		"guests":          {Op: OpSetGuests, Network: defaultNet, Guests: []Guest{okGuest, {Tap: "bg0123456789ac", MAC: "06:00:00:00:00:02", IP: "172.16.0.254", NAT: true}}},
		"no guests":       {Op: OpSetGuests, Network: defaultNet, Guests: []Guest{}},
		"open ports":      {Op: OpSetGuests, Network: defaultNet, Guests: []Guest{okGuest}, OpenPorts: []uint16{7002, 65535, 1024}},
		"nil guests":      {Op: OpSetGuests, Network: defaultNet},
		"listen dns udp":  {Op: OpListen, Network: defaultNet, Proto: "udp", Addr: "172.16.0.1:53"},
		"listen dns tcp":  {Op: OpListen, Network: defaultNet, Proto: "tcp", Addr: "172.16.0.1:53"},
		"listen loopback": {Op: OpListen, Network: defaultNet, Proto: "udp", Addr: "127.0.0.1:53530"},
		"socket":          {Op: OpSocket, Network: defaultNet, Proto: "udp6"},
		"route":           {Op: OpRouteDomain, Network: defaultNet},
		"unroute":         {Op: OpUnrouteDomain, Network: defaultNet},
		"remove bridge":   {Op: OpRemoveBridge, Network: defaultNet},
		"list taps":       {Op: OpListTaps, Network: defaultNet},
	}
	for name, r := range valid {
		if _, err := cfg.validate(r); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	invalid := map[string]Request{
		"unknown op":             {Op: "delete_table", Network: defaultNet},
		"no op":                  {Network: defaultNet},
		"bridge not configured":  with(func(r *Request) { r.Network.Bridge = "docker0" }),
		"bridge empty":           with(func(r *Request) { r.Network.Bridge = "" }),
		"cidr not configured":    with(func(r *Request) { r.Network.CIDR = "10.0.0.0/24" }),
		"cidr wider":             with(func(r *Request) { r.Network.CIDR = "172.16.0.0/16" }),
		"cidr host bits":         with(func(r *Request) { r.Network.CIDR = "172.16.0.1/24" }),
		"cidr empty":             with(func(r *Request) { r.Network.CIDR = "" }),
		"namespace path":         with(func(r *Request) { r.Network.Namespace = "/run/netns/banger-x" }),
		"namespace proc path":    with(func(r *Request) { r.Network.Namespace = "/proc/1/ns/net" }),
		"namespace dotdot":       with(func(r *Request) { r.Network.Namespace = "banger/../../proc/1/ns/net" }),
		"namespace other prefix": with(func(r *Request) { r.Network.Namespace = "docker-ns" }),
		"namespace dot":          with(func(r *Request) { r.Network.Namespace = "." }),
		"namespace too long":     with(func(r *Request) { r.Network.Namespace = "banger" + strings.Repeat("x", 64) }),
		"tap short":              {Op: OpAddTap, Network: defaultNet, Tap: "bg0123"},
		"tap upper":              {Op: OpAddTap, Network: defaultNet, Tap: "bg0123456789AB"},
		"tap foreign":            {Op: OpDeleteTap, Network: defaultNet, Tap: "eth0"},
		"tap bridge":             {Op: OpDeleteTap, Network: defaultNet, Tap: "banger0"},
		"tap long":               {Op: OpAddTap, Network: defaultNet, Tap: "bg0123456789abc"},
		"tap newline":            {Op: OpAddTap, Network: defaultNet, Tap: "bg0123456789ab\n"},
		"tap missing":            {Op: OpAddTap, Network: defaultNet},
		"guest network address":  guest("bg0123456789ab", "02:00:00:00:00:01", "172.16.0.0"),
		"guest host address":     guest("bg0123456789ab", "02:00:00:00:00:01", "172.16.0.1"),
		"guest broadcast":        guest("bg0123456789ab", "02:00:00:00:00:01", "172.16.0.255"),
		"guest outside":          guest("bg0123456789ab", "02:00:00:00:00:01", "172.16.1.2"),
		"guest ipv6":             guest("bg0123456789ab", "02:00:00:00:00:01", "fe80::1"),
		"guest mapped":           guest("bg0123456789ab", "02:00:00:00:00:01", "::ffff:172.16.0.2"),
		"guest leading zero":     guest("bg0123456789ab", "02:00:00:00:00:01", "172.16.0.02"),
		"guest multicast mac":    guest("bg0123456789ab", "03:00:00:00:00:01", "172.16.0.2"),
		"guest global mac":       guest("bg0123456789ab", "00:16:3e:00:00:01", "172.16.0.2"),
		"guest upper mac":        guest("bg0123456789ab", "0A:00:00:00:00:01", "172.16.0.2"),
		"guest long mac":         guest("bg0123456789ab", "02:00:00:00:00:00:00:01", "172.16.0.2"),
		"guest foreign tap":      guest("veth0", "02:00:00:00:00:01", "172.16.0.2"),
		"guest same tap":         {Op: OpSetGuests, Network: defaultNet, Guests: []Guest{okGuest, {Tap: okGuest.Tap, MAC: "02:00:00:00:00:02", IP: "172.16.0.3"}}},
		"guest same ip":          {Op: OpSetGuests, Network: defaultNet, Guests: []Guest{okGuest, {Tap: "bg0123456789ac", MAC: "02:00:00:00:00:02", IP: okGuest.IP}}},
		"guest same mac":         {Op: OpSetGuests, Network: defaultNet, Guests: []Guest{okGuest, {Tap: "bg0123456789ac", MAC: okGuest.MAC, IP: "172.16.0.3"}}},
		"too many guests":        {Op: OpSetGuests, Network: defaultNet, Guests: make([]Guest, MaxGuests+1)},
		"privileged open port":   {Op: OpSetGuests, Network: defaultNet, Guests: []Guest{okGuest}, OpenPorts: []uint16{22}},
		"open port zero":         {Op: OpSetGuests, Network: defaultNet, Guests: []Guest{okGuest}, OpenPorts: []uint16{0}},
		"open port twice":        {Op: OpSetGuests, Network: defaultNet, Guests: []Guest{okGuest}, OpenPorts: []uint16{7002, 7002}},
		"too many open ports":    {Op: OpSetGuests, Network: defaultNet, Guests: []Guest{okGuest}, OpenPorts: make([]uint16, MaxOpenPorts+1)},
		"open ports on add_tap":  {Op: OpAddTap, Network: defaultNet, Tap: "bg0123456789ab", OpenPorts: []uint16{7002}},
		"listen wrong port":      {Op: OpListen, Network: defaultNet, Proto: "udp", Addr: "172.16.0.1:54"},
		"listen low loopback":    {Op: OpListen, Network: defaultNet, Proto: "tcp", Addr: "127.0.0.1:22"},
		"listen any":             {Op: OpListen, Network: defaultNet, Proto: "udp", Addr: "0.0.0.0:53"},
		"listen other loopback":  {Op: OpListen, Network: defaultNet, Proto: "udp", Addr: "127.0.0.2:5353"},
		"listen guest address":   {Op: OpListen, Network: defaultNet, Proto: "udp", Addr: "172.16.0.2:53"},
		"listen raw":             {Op: OpListen, Network: defaultNet, Proto: "ip", Addr: "172.16.0.1:53"},
		"listen unix":            {Op: OpListen, Network: defaultNet, Proto: "unix", Addr: "/run/x"},
		"listen name":            {Op: OpListen, Network: defaultNet, Proto: "udp", Addr: "localhost:5353"},
		"socket raw":             {Op: OpSocket, Network: defaultNet, Proto: "ip4:icmp"},
		"socket host namespace":  {Op: OpSocket, Network: Network{Bridge: "banger0", CIDR: "172.16.0.0/24"}, Proto: "udp4"},
		"field of another op":    {Op: OpEnsureBridge, Network: defaultNet, Tap: "bg0123456789ab"},
		"addr on socket":         {Op: OpSocket, Network: defaultNet, Proto: "udp4", Addr: "1.1.1.1:53"},
		"guests on add_tap":      {Op: OpAddTap, Network: defaultNet, Tap: "bg0123456789ab", Guests: []Guest{}},
	}
	for name, r := range invalid {
		if _, err := cfg.validate(r); !errors.Is(err, failure.Invalid) {
			t.Errorf("%s: Validate = %v, want an Invalid error", name, err)
		}
	}

	noHost := validConfig()
	noHost.HostNamespace = false
	if _, err := noHost.validate(valid["host namespace"]); !errors.Is(err, failure.Invalid) {
		t.Errorf("host namespace not allowed: Validate = %v", err)
	}
	noPorts := validConfig()
	noPorts.CallersOpenPorts = false
	if _, err := noPorts.validate(valid["open ports"]); !errors.Is(err, failure.Invalid) {
		t.Errorf("callers may not open ports: Validate = %v", err)
	}
	noNS := validConfig()
	noNS.NamespacePrefix = ""
	if _, err := noNS.validate(valid["hello"]); !errors.Is(err, failure.Invalid) {
		t.Errorf("namespaces not allowed: Validate = %v", err)
	}
}

// TestLargestGuestSetFits: MaxGuests guests with the longest values fit in one request.
func TestLargestGuestSetFits(t *testing.T) {
	r := Request{Op: OpSetGuests, Network: Network{Bridge: "bridge-name-15c", CIDR: "172.255.255.248/29", Namespace: strings.Repeat("n", 63)},
		OpenPorts: make([]uint16, MaxOpenPorts)}
	for range MaxGuests {
		r.Guests = append(r.Guests, Guest{Tap: "bg0123456789ab", MAC: "02:00:00:00:00:01", IP: "255.255.255.255", NAT: false})
	}
	for i := range r.OpenPorts {
		r.OpenPorts[i] = 65535
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxRequest {
		t.Fatalf("%d guests take %d bytes, more than MaxRequest (%d)", MaxGuests, len(b), MaxRequest)
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "helper.toml")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg, err := LoadConfig(write(`group = "sandbox"
namespace_prefix = "ci-"
[[network]]
bridge = "bg-ci"
cidr = "10.9.0.0/24"
host_ports_open_to_guests = [8080]
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Group != "sandbox" || cfg.NamespacePrefix != "ci-" || !cfg.HostNamespace || len(cfg.Networks) != 1 ||
		cfg.Networks[0].prefix != netip.MustParsePrefix("10.9.0.0/24") || cfg.Networks[0].OpenPorts[0] != 8080 {
		t.Errorf("config = %+v", cfg)
	}
	cfg, err = LoadConfig(write(`group = "banger"`))
	if err != nil || cfg.Networks[0].Bridge != "banger0" || cfg.Networks[0].CIDR != "172.16.0.0/24" {
		t.Errorf("defaults: %+v, %v", cfg, err)
	}
	for _, bad := range []string{
		`bridges = "x"`,
		"[[network]]\nbridge = \"banger0\"\ncidr = \"172.16.0.1/24\"",
		"[[network]]\nbridge = \"a/b\"\ncidr = \"172.16.0.0/24\"",
		"[[network]]\nbridge = \"b\"\ncidr = \"172.16.0.0/24\"\n[[network]]\nbridge = \"b\"\ncidr = \"172.17.0.0/24\"",
		`namespace_prefix = "../"`,
		`state_dir = "relative"`,
	} {
		if _, err := LoadConfig(write(bad)); err == nil {
			t.Errorf("LoadConfig accepted %q", bad)
		}
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.toml")); err == nil {
		t.Error("a missing configuration named explicitly was accepted")
	}
}

// FuzzDecodeRequest: whatever the bytes, decoding and validation never panic, and a request
// they accept keeps to the rules: a served bridge and CIDR, a namespace with the prefix (never
// a path), banger tap names, guest addresses inside the subnet and not its network, host or
// broadcast address, listen addresses that are allowed.
func FuzzDecodeRequest(f *testing.F) {
	seeds := []Request{
		{Op: OpHello, Network: defaultNet},
		{Op: OpAddTap, Network: defaultNet, Tap: "bg0123456789ab"},
		{Op: OpSetGuests, Network: defaultNet, Guests: []Guest{{Tap: "bg0123456789ab", MAC: "02:00:00:00:00:01", IP: "172.16.0.2", NAT: true}}},
		{Op: OpListen, Network: defaultNet, Proto: "udp", Addr: "172.16.0.1:53"},
		{Op: OpSocket, Network: defaultNet, Proto: "tcp4"},
		{Op: OpRemoveBridge, Network: Network{Bridge: "banger0", CIDR: "172.16.0.0/24"}},
		{Op: OpJailStart, Network: defaultNet, Jail: "vm-1", Tap: "bg0123456789ab", Files: []JailFile{
			{Name: "kernel"}, {Name: "disk0", Writable: true}, {Name: "firecracker.log", Writable: true},
			{Name: "firecracker.metrics", Writable: true}, {Name: "console"}}},
		{Op: OpJailDial, Network: defaultNet, Jail: "vm-1", Socket: "api"},
		{Op: OpJailRemove, Network: defaultNet, Jail: "vm-1"},
		{Op: OpJailList, Network: defaultNet},
	}
	for _, r := range seeds {
		b, _ := json.Marshal(r)
		f.Add(b)
	}
	f.Add([]byte(`{"op":"delete_tap","network":{"bridge":"banger0","cidr":"172.16.0.0/24","namespace":"/proc/1/ns/net"},"tap":"eth0"}`))
	f.Add([]byte(`{"OP":"add_tap","Network":{"Bridge":"banger0","CIDR":"172.16.0.0/24"},"TAP":"bg0123456789ab"}`))
	f.Add([]byte(`{"op":"hello"} {"op":"hello"}`))
	f.Add([]byte(`{"op":"jail_dial","network":{"bridge":"banger0","cidr":"172.16.0.0/24"},"jail":"../../etc","socket":"../api"}`))
	f.Add([]byte(`{"op":"jail_start","network":{"bridge":"banger0","cidr":"172.16.0.0/24"},"jail":"a","files":[{"name":"/etc/shadow","writable":true}]}`))
	cfg := validConfig()
	cfg.Jails.Jailer, cfg.Jails.Firecracker = "/usr/bin/jailer", "/usr/bin/firecracker"
	host := netip.MustParseAddr("172.16.0.1")
	subnet := netip.MustParsePrefix("172.16.0.0/24")
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			if !errors.Is(err, failure.Invalid) {
				t.Fatalf("decode error without kind Invalid: %v", err)
			}
			return
		}
		ck, err := cfg.validate(r)
		if err != nil {
			if !errors.Is(err, failure.Invalid) {
				t.Fatalf("validation error without kind Invalid: %v", err)
			}
			return
		}
		if ck.net.Bridge != "banger0" || r.Network.CIDR != "172.16.0.0/24" {
			t.Fatalf("accepted network %+v", r.Network)
		}
		if ns := r.Network.Namespace; ns != "" && (!strings.HasPrefix(ns, "banger") || strings.ContainsAny(ns, "/\x00") || ns == "." || ns == "..") {
			t.Fatalf("accepted namespace %q", ns)
		}
		if ck.tap != "" && !tapNameRE.MatchString(ck.tap) {
			t.Fatalf("accepted tap %q", ck.tap)
		}
		for _, g := range ck.guests {
			if !tapNameRE.MatchString(g.Tap) || !subnet.Contains(g.IP) || g.IP == host || g.IP == subnet.Addr() || g.IP == lastAddr(subnet) || g.MAC[0]&3 != 2 {
				t.Fatalf("accepted guest %+v", g)
			}
		}
		for _, p := range ck.ports {
			if p < 1024 {
				t.Fatalf("accepted open port %d", p)
			}
		}
		if ck.jail != "" && fcjail.CheckID(ck.jail) != nil {
			t.Fatalf("accepted jail %q", ck.jail)
		}
		if ck.socket != "" && fcjail.Sockets[ck.socket] == "" {
			t.Fatalf("accepted socket %q", ck.socket)
		}
		if len(ck.files) > MaxRequestFDs {
			t.Fatalf("accepted %d files", len(ck.files))
		}
		for _, jf := range ck.files {
			if strings.ContainsAny(jf.Name, "/.\x00") && jf.Name != fcjail.Log && jf.Name != fcjail.Metrics {
				t.Fatalf("accepted file name %q", jf.Name)
			}
			if jf.Writable && (jf.Name == fcjail.Kernel || jf.Name == fcjail.Initrd || jf.Name == consoleFile) {
				t.Fatalf("accepted a writable %s", jf.Name)
			}
		}
		if ck.op == OpListen {
			a := ck.addr
			if !(a.Addr() == host && a.Port() == 53) && !(a.Addr() == netip.MustParseAddr("127.0.0.1") && a.Port() >= 1024) {
				t.Fatalf("accepted listen address %s", a)
			}
		}
	})
}

// Jail requests: each field checked, every path and name outside banger's refused, and none
// at all while the configuration starts no jails.
func TestValidateJailRequests(t *testing.T) {
	off := validConfig()
	cfg := validConfig()
	cfg.Jails.Jailer, cfg.Jails.Firecracker = "/usr/bin/jailer", "/usr/bin/firecracker"
	files := func(fs ...JailFile) []JailFile {
		return append([]JailFile{{Name: "kernel"}, {Name: "disk0", Writable: true}, {Name: "firecracker.log", Writable: true},
			{Name: "firecracker.metrics", Writable: true}, {Name: "console"}}, fs...)
	}
	valid := map[string]Request{
		"start":         {Op: OpJailStart, Network: defaultNet, Jail: "vm-1", Files: files()},
		"start all":     {Op: OpJailStart, Network: defaultNet, Jail: "A-1", Tap: "bg0123456789ab", Files: files(JailFile{Name: "initrd"}, JailFile{Name: "disk1"}, JailFile{Name: "disk2", Writable: true})},
		"dial api":      {Op: OpJailDial, Network: defaultNet, Jail: "vm-1", Socket: "api"},
		"dial vsock":    {Op: OpJailDial, Network: defaultNet, Jail: "vm-1", Socket: "vsock"},
		"kill":          {Op: OpJailKill, Network: defaultNet, Jail: "vm-1"},
		"remove":        {Op: OpJailRemove, Network: defaultNet, Jail: strings.Repeat("a", 64)},
		"list":          {Op: OpJailList, Network: defaultNet},
		"list in host":  {Op: OpJailList, Network: Network{Bridge: "banger0", CIDR: "172.16.0.0/24"}},
		"start in host": {Op: OpJailStart, Network: Network{Bridge: "banger0", CIDR: "172.16.0.0/24"}, Jail: "vm-1", Files: files()},
	}
	for name, r := range valid {
		if _, err := cfg.validate(r); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if _, err := off.validate(r); !errors.Is(err, failure.Invalid) || !strings.Contains(err.Error(), "[jails]") {
			t.Errorf("%s without [jails]: %v", name, err)
		}
	}
	tooMany := files()
	for i := 1; i < 20; i++ {
		tooMany = append(tooMany, JailFile{Name: fmt.Sprintf("disk%d", i)})
	}
	invalid := map[string]Request{
		"jail id a path":       {Op: OpJailKill, Network: defaultNet, Jail: "../x"},
		"jail id empty":        {Op: OpJailRemove, Network: defaultNet},
		"jail id too long":     {Op: OpJailRemove, Network: defaultNet, Jail: strings.Repeat("a", 65)},
		"jail id with a dot":   {Op: OpJailDial, Network: defaultNet, Jail: "vm.1", Socket: "api"},
		"socket a path":        {Op: OpJailDial, Network: defaultNet, Jail: "vm-1", Socket: "run/api.sock"},
		"socket missing":       {Op: OpJailDial, Network: defaultNet, Jail: "vm-1"},
		"tap not banger's":     {Op: OpJailStart, Network: defaultNet, Jail: "vm-1", Tap: "eth0", Files: files()},
		"file a path":          {Op: OpJailStart, Network: defaultNet, Jail: "vm-1", Files: files(JailFile{Name: "../../etc/shadow", Writable: true})},
		"file unknown":         {Op: OpJailStart, Network: defaultNet, Jail: "vm-1", Files: files(JailFile{Name: "firecracker"})},
		"file twice":           {Op: OpJailStart, Network: defaultNet, Jail: "vm-1", Files: files(JailFile{Name: "kernel"})},
		"kernel writable":      {Op: OpJailStart, Network: defaultNet, Jail: "vm-1", Files: []JailFile{{Name: "kernel", Writable: true}, {Name: "disk0"}, {Name: "firecracker.log", Writable: true}, {Name: "firecracker.metrics", Writable: true}, {Name: "console"}}},
		"log read-only":        {Op: OpJailStart, Network: defaultNet, Jail: "vm-1", Files: []JailFile{{Name: "kernel"}, {Name: "disk0"}, {Name: "firecracker.log"}, {Name: "firecracker.metrics", Writable: true}, {Name: "console"}}},
		"no console":           {Op: OpJailStart, Network: defaultNet, Jail: "vm-1", Files: files()[:4]},
		"no files":             {Op: OpJailStart, Network: defaultNet, Jail: "vm-1"},
		"disk gap":             {Op: OpJailStart, Network: defaultNet, Jail: "vm-1", Files: files(JailFile{Name: "disk2"})},
		"disk 16":              {Op: OpJailStart, Network: defaultNet, Jail: "vm-1", Files: files(JailFile{Name: "disk16"})},
		"too many files":       {Op: OpJailStart, Network: defaultNet, Jail: "vm-1", Files: tooMany},
		"files on dial":        {Op: OpJailDial, Network: defaultNet, Jail: "vm-1", Socket: "api", Files: files()},
		"jail on list":         {Op: OpJailList, Network: defaultNet, Jail: "vm-1"},
		"socket on kill":       {Op: OpJailKill, Network: defaultNet, Jail: "vm-1", Socket: "api"},
		"jail on add_tap":      {Op: OpAddTap, Network: defaultNet, Tap: "bg0123456789ab", Jail: "vm-1"},
		"namespace not banger": {Op: OpJailList, Network: Network{Bridge: "banger0", CIDR: "172.16.0.0/24", Namespace: "docker"}},
	}
	for name, r := range invalid {
		if _, err := cfg.validate(r); !errors.Is(err, failure.Invalid) {
			t.Errorf("%s: %v, want invalid", name, err)
		}
	}
}

// The [jails] table: binaries by absolute path only, a Firecracker the jailer runs, an id range
// of no account.
func TestJailConfig(t *testing.T) {
	ok := JailConfig{Jailer: "/usr/bin/jailer", Firecracker: "/usr/bin/firecracker", Base: DefaultJailBase, FirstID: DefaultJailFirstID, IDCount: DefaultJailIDCount, PerCaller: DefaultJailsPerCaller}
	if err := ok.check(); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func(*JailConfig){
		"jailer only":          func(j *JailConfig) { j.Firecracker = "" },
		"relative jailer":      func(j *JailConfig) { j.Jailer = "jailer" },
		"unclean base":         func(j *JailConfig) { j.Base = "/var/lib/../jail" },
		"root base":            func(j *JailConfig) { j.Base = "/" },
		"not firecracker":      func(j *JailConfig) { j.Firecracker = "/bin/sh" },
		"ids of accounts":      func(j *JailConfig) { j.FirstID = 1000 },
		"no ids":               func(j *JailConfig) { j.IDCount = 0 },
		"no jails per caller":  func(j *JailConfig) { j.PerCaller = 0 },
		"ids beyond the range": func(j *JailConfig) { j.FirstID = 1 << 31 },
	} {
		j := ok
		f(&j)
		if err := j.check(); err == nil {
			t.Errorf("%s: accepted %+v", name, j)
		}
	}
}
