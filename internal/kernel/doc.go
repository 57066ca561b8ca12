// Package kernel owns banger's guest kernels: the catalog of known kernels, pulling one from a
// Debian archive into a kernel directory (bzImage, config, modules, manifest), extracting the
// ELF vmlinux that Firecracker needs from the bzImage, computing which modules the guest must
// load and in what order, and building the initramfs that carries the agent and those modules.
package kernel
