package agent

import (
	"encoding/json"
	"path"
	"strings"
	"testing"
	"time"
)

func validRenewal() Renewal {
	return Renewal{
		Clock:     time.Unix(1_800_000_000, 5),
		Entropy:   make([]byte, 64),
		Hostname:  "dev-2",
		MachineID: "0123456789abcdef0123456789abcdef",
		Network: &NetworkIdentity{OldMAC: "02:00:00:00:00:01", MAC: "02:00:00:00:00:02",
			Address: "172.16.0.6/24", Gateway: "172.16.0.1", DNS: []string{"172.16.0.1"}},
		HostKeys: []File{{Path: "/etc/ssh/ssh_host_ed25519_key", Mode: 0o600, Data: []byte("key")}},
	}
}

func TestRenewalValidate(t *testing.T) {
	if err := validRenewal().Validate(); err != nil {
		t.Fatalf("a valid renewal: %v", err)
	}
	if err := (Renewal{}).Validate(); err != nil {
		t.Fatalf("an empty renewal: %v", err)
	}
	many := make([]File, MaxRenewalFiles+1)
	for i := range many {
		many[i] = File{Path: "/etc/ssh/k", Mode: 0o600, Data: []byte("k")}
	}
	bad := map[string]func(r *Renewal){
		"short entropy":       func(r *Renewal) { r.Entropy = make([]byte, MinEntropy-1) },
		"long entropy":        func(r *Renewal) { r.Entropy = make([]byte, MaxEntropy+1) },
		"hostname with dot":   func(r *Renewal) { r.Hostname = "a.b" },
		"hostname hyphen":     func(r *Renewal) { r.Hostname = "-a" },
		"hostname too long":   func(r *Renewal) { r.Hostname = strings.Repeat("a", 64) },
		"hostname newline":    func(r *Renewal) { r.Hostname = "a\nb" },
		"machine id upper":    func(r *Renewal) { r.MachineID = "0123456789ABCDEF0123456789abcdef" },
		"machine id short":    func(r *Renewal) { r.MachineID = "0123" },
		"machine id zero":     func(r *Renewal) { r.MachineID = strings.Repeat("0", 32) },
		"old MAC missing":     func(r *Renewal) { r.Network.OldMAC = "" },
		"multicast MAC":       func(r *Renewal) { r.Network.MAC = "01:00:5e:00:00:01" },
		"broadcast MAC":       func(r *Renewal) { r.Network.MAC = "ff:ff:ff:ff:ff:ff" },
		"zero MAC":            func(r *Renewal) { r.Network.MAC = "00:00:00:00:00:00" },
		"long MAC":            func(r *Renewal) { r.Network.MAC = "02:00:00:00:00:00:00:01" },
		"address without len": func(r *Renewal) { r.Network.Address = "172.16.0.6" },
		"IPv6 address":        func(r *Renewal) { r.Network.Address = "fd00::6/64" },
		"network address":     func(r *Renewal) { r.Network.Address = "172.16.0.0/24" },
		"broadcast address":   func(r *Renewal) { r.Network.Address = "172.16.0.255/24" },
		"gateway outside":     func(r *Renewal) { r.Network.Gateway = "172.17.0.1" },
		"gateway is address":  func(r *Renewal) { r.Network.Gateway = "172.16.0.6" },
		"gateway missing":     func(r *Renewal) { r.Network.Gateway = "" },
		"bad resolver":        func(r *Renewal) { r.Network.DNS = []string{"dns.example"} },
		"too many resolvers":  func(r *Renewal) { r.Network.DNS = []string{"1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"} },
		"too many host keys":  func(r *Renewal) { r.HostKeys = many },
		"key outside ssh":     func(r *Renewal) { r.HostKeys[0].Path = "/etc/shadow" },
		"key escaping ssh":    func(r *Renewal) { r.HostKeys[0].Path = "/etc/ssh/../shadow" },
		"key relative":        func(r *Renewal) { r.HostKeys[0].Path = "etc/ssh/k" },
		"key is the dir":      func(r *Renewal) { r.HostKeys[0].Path = "/etc/ssh/" },
		"key setuid":          func(r *Renewal) { r.HostKeys[0].Mode = 0o4755 },
		"key empty":           func(r *Renewal) { r.HostKeys[0].Data = nil },
		"key huge":            func(r *Renewal) { r.HostKeys[0].Data = make([]byte, 1<<20) },
	}
	for name, spoil := range bad {
		t.Run(name, func(t *testing.T) {
			r := validRenewal()
			spoil(&r)
			if err := r.Validate(); err == nil {
				t.Fatalf("accepted %+v", r)
			} else if !strings.HasPrefix(err.Error(), "renewal: ") {
				t.Errorf("error %q does not say it is the renewal", err)
			}
		})
	}
}

// FuzzRenewalValidate feeds arbitrary JSON renewals to Validate: no panic, and whatever it
// accepts keeps every rule of the contract.
func FuzzRenewalValidate(f *testing.F) {
	b, _ := json.Marshal(validRenewal())
	f.Add(b)
	f.Add([]byte(`{"hostname":"a-b","machine_id":"0123456789abcdef0123456789abcdef"}`))
	f.Add([]byte(`{"network":{"old_mac":"02:00:00:00:00:01","mac":"02:00:00:00:00:02","address":"10.0.0.2/31","gateway":"10.0.0.3"}}`))
	f.Add([]byte(`{"host_keys":[{"path":"/etc/ssh//k","mode":384,"data":"eA=="}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Renewal
		if json.Unmarshal(data, &r) != nil || r.Validate() != nil {
			return
		}
		if n := len(r.Entropy); n != 0 && (n < MinEntropy || n > MaxEntropy) {
			t.Fatalf("accepted %d bytes of entropy", n)
		}
		if r.Hostname != "" && !isDNSLabel(r.Hostname) {
			t.Fatalf("accepted hostname %q", r.Hostname)
		}
		if r.MachineID != "" && !isMachineID(r.MachineID) {
			t.Fatalf("accepted machine id %q", r.MachineID)
		}
		if r.Network != nil {
			p, err := r.Network.Parse()
			if err != nil {
				t.Fatalf("Validate accepted a network Parse refuses: %v", err)
			}
			if p.MAC[0]&1 != 0 || len(p.MAC) != 6 || !p.Address.Masked().Contains(p.Gateway) || p.Gateway == p.Address.Addr() {
				t.Fatalf("accepted network %+v", p)
			}
		}
		if len(r.HostKeys) > MaxRenewalFiles {
			t.Fatalf("accepted %d host keys", len(r.HostKeys))
		}
		for _, k := range r.HostKeys {
			if path.Clean(k.Path) != k.Path || !strings.HasPrefix(k.Path, "/etc/ssh/") || k.Mode > 0o777 || len(k.Data) == 0 {
				t.Fatalf("accepted host key %q mode %#o", k.Path, k.Mode)
			}
		}
	})
}
