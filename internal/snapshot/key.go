package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// Combination is what a boot snapshot is of: a guest booted from these, with this shape.
// Two VMs with equal combinations boot into the same state, so one's boot snapshot serves the
// other. Any change (an image rebuilt into a new version, a kernel replaced, a new agent
// build, another VMM or accelerator, another size) is another combination.
type Combination struct {
	Image string `json:"image"` // name@version
	// Kernel names the kernel's files as they are now: its name and an identity of its
	// vmlinux (size and modification time), as a kernel may be replaced under its name.
	Kernel string `json:"kernel"`
	Agent  string `json:"agent"` // the initramfs's name, which holds the agent build's hash
	VMM    string `json:"vmm"`   // driver name and VMM version
	Accel  string `json:"accel"`

	VCPU      int   `json:"vcpu"`
	MemoryMiB int   `json:"memory_mib"`
	DiskBytes int64 `json:"disk_bytes"`
}

// keyLen is the length of a Key.
const keyLen = 24

// Key is the combination's identity: a hash of all of it, 24 hex digits.
func (c Combination) Key() string {
	b, _ := json.Marshal(c) // a struct of strings and numbers always marshals
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:keyLen]
}

// BootName is the name of the boot snapshot of the combination with key.
func BootName(key string) string { return bootPrefix + key }
