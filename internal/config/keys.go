package config

import "strings"

// file mirrors config.toml for decoding. Pointers tell an absent key from an empty value;
// disk_size is any because it may be a string or an integer.
type file struct {
	DefaultImageName *string     `toml:"default_image_name"`
	DefaultKernel    *string     `toml:"default_kernel"`
	SSHKeyPath       *string     `toml:"ssh_key_path"`
	FirecrackerBin   *string     `toml:"firecracker_bin"`
	JailerEnabled    *bool       `toml:"jailer_enabled"`
	JailerBin        *string     `toml:"jailer_bin"`
	JailerChrootBase *string     `toml:"jailer_chroot_base"`
	JailerUID        *int64      `toml:"jailer_uid"`
	JailerGID        *int64      `toml:"jailer_gid"`
	VMM              *string     `toml:"vmm"`
	QEMUBin          *string     `toml:"qemu_bin"`
	DebianMirror     *string     `toml:"debian_mirror"`
	BootTimeout      *string     `toml:"boot_timeout"`
	WarmStart        *bool       `toml:"warm_start"`
	WarmSpares       *int64      `toml:"warm_spares"`
	ConsoleLogSize   *string     `toml:"console_log_size"`
	BridgeName       *string     `toml:"bridge_name"`
	BridgeCIDR       *string     `toml:"bridge_cidr"`
	NetworkNamespace *string     `toml:"network_namespace"`
	DNSUpstreams     []string    `toml:"dns_upstreams"`
	DNSPort          *int64      `toml:"dns_port"`
	HostPorts        []int64     `toml:"host_ports_open_to_guests"`
	HelperSocket     *string     `toml:"helper_socket"`
	VMDefaults       *fileVMDefs `toml:"vm_defaults"`
	FileSync         []fileSync  `toml:"file_sync"`
}

type fileSync struct {
	Host  *string `toml:"host"`
	Guest *string `toml:"guest"`
	Mode  *string `toml:"mode"`
}

type fileVMDefs struct {
	VCPU      *int64 `toml:"vcpu"`
	MemoryMiB *int64 `toml:"memory_mib"`
	DiskSize  any    `toml:"disk_size"`
}

// Keys as written in config.toml, with the TOML type each expects, in documentation order.
const (
	keyDefaultImageName = "default_image_name"
	keyDefaultKernel    = "default_kernel"
	keySSHKeyPath       = "ssh_key_path"
	keyFirecrackerBin   = "firecracker_bin"
	keyJailerEnabled    = "jailer_enabled"
	keyJailerBin        = "jailer_bin"
	keyJailerChrootBase = "jailer_chroot_base"
	keyJailerUID        = "jailer_uid"
	keyJailerGID        = "jailer_gid"
	keyVMM              = "vmm"
	keyQEMUBin          = "qemu_bin"
	keyDebianMirror     = "debian_mirror"
	keyBootTimeout      = "boot_timeout"
	keyWarmStart        = "warm_start"
	keyWarmSpares       = "warm_spares"
	keyConsoleLogSize   = "console_log_size"
	keyBridgeName       = "bridge_name"
	keyBridgeCIDR       = "bridge_cidr"
	keyNetworkNamespace = "network_namespace"
	keyDNSUpstreams     = "dns_upstreams"
	keyHostPorts        = "host_ports_open_to_guests"
	keyDNSPort          = "dns_port"
	keyHelperSocket     = "helper_socket"
	keyVMDefaults       = "vm_defaults"
	keyVCPU             = "vm_defaults.vcpu"
	keyMemoryMiB        = "vm_defaults.memory_mib"
	keyDiskSize         = "vm_defaults.disk_size"
	keyFileSync         = "file_sync"
	keyFileSyncHost     = "file_sync.host"
	keyFileSyncGuest    = "file_sync.guest"
	keyFileSyncMode     = "file_sync.mode"
)

var keyTypes = []struct{ key, want string }{
	{keyDefaultImageName, "a string"},
	{keyDefaultKernel, "a string"},
	{keySSHKeyPath, "a string path"},
	{keyFirecrackerBin, "a string path"},
	{keyJailerEnabled, "a boolean"},
	{keyJailerBin, "a string path"},
	{keyJailerChrootBase, "a string path"},
	{keyJailerUID, "an integer uid"},
	{keyJailerGID, "an integer gid"},
	{keyVMM, `a string ("auto", "firecracker" or "qemu")`},
	{keyQEMUBin, "a string path"},
	{keyDebianMirror, "a string URL"},
	{keyBootTimeout, `a duration string such as "3m" or "90s"`},
	{keyWarmStart, "a boolean"},
	{keyWarmSpares, "an integer from 0 to 8"},
	{keyConsoleLogSize, `a size string such as "4M"`},
	{keyBridgeName, "a string"},
	{keyBridgeCIDR, `a string such as "172.16.0.0/24"`},
	{keyNetworkNamespace, "a string (a name under /run/netns, or a path)"},
	{keyDNSUpstreams, `an array of strings such as ["1.1.1.1", "10.0.0.2:53"]`},
	{keyDNSPort, "an integer port"},
	{keyHostPorts, "an array of integer ports such as [8080, 5432]"},
	{keyHelperSocket, "an absolute string path"},
	{keyVMDefaults, "a table"},
	{keyVCPU, "an integer"},
	{keyMemoryMiB, "an integer number of MiB"},
	{keyDiskSize, `a size string such as "8G" or an integer number of MiB`},
	{keyFileSync, "an array of tables ([[file_sync]])"},
	{keyFileSyncHost, "a string path on the host"},
	{keyFileSyncGuest, `a string path under "~/" or "/root/" in the guest`},
	{keyFileSyncMode, `an octal mode string such as "0600"`},
}

// wantType returns what key expects, or "" for an unknown key.
func wantType(key string) string {
	for _, k := range keyTypes {
		if k.key == key {
			return k.want
		}
	}
	return ""
}

// knownKeys lists every leaf key, for error messages.
func knownKeys() string {
	var ks []string
	for _, k := range keyTypes {
		if k.key != keyVMDefaults && k.key != keyFileSync {
			ks = append(ks, k.key)
		}
	}
	return strings.Join(ks, ", ")
}

// suggest returns the known key (or table) closest to an unknown one, or "" if none is close.
func suggest(unknown string) string {
	best, bestDist := "", 3 // suggest only within two edits
	for _, k := range keyTypes {
		for _, have := range []string{unknown, lastPart(unknown)} {
			for _, cand := range []string{k.key, lastPart(k.key)} {
				if d := editDistance(have, cand); d < bestDist {
					best, bestDist = k.key, d
				}
			}
		}
	}
	return best
}

func lastPart(key string) string {
	return key[strings.LastIndexByte(key, '.')+1:]
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
