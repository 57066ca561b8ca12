// Package image owns banger's root filesystem images: the recipes that describe them (data
// files embedded in the binary), the build of a golden image from a Debian mirror, and the
// on-disk layout of an image directory:
//
//	<dir>/rootfs.ext4    the read-only ext4 root filesystem (mode 0444, no journal)
//	<dir>/manifest.json  what was built from what: recipe, mirror, package versions, sha256
//	<dir>/build.log      the output of the bootstrap tool
//
// An image file is shared by every VM that uses it and is never written after the build. At
// boot the guest agent (the initramfs /init) mounts it read-only (ext4, "ro,noload") as the lower
// layer of an overlayfs whose upper layer lives on the VM's own writable disk, mounts a tmpfs on
// /run, installs its own binary and a systemd unit under /run/systemd/system and switch_roots
// into /sbin/init. An image therefore contains no agent files at all, and no per-VM identity:
// /etc/hostname is absent (the hostname comes from systemd.hostname= on the kernel command
// line), /etc/machine-id is empty and the ssh host keys are generated on first boot.
package image
