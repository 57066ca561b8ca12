package debian

import "runtime"

// HostArch is Debian's name for the architecture this binary runs on ("amd64", "arm64",
// "i386", "armhf", "ppc64el", …): what image manifests, bundles and package lookups record.
func HostArch() string {
	switch runtime.GOARCH {
	case "386":
		return "i386"
	case "arm":
		return "armhf"
	case "ppc64le":
		return "ppc64el"
	}
	return runtime.GOARCH // amd64, arm64, riscv64, s390x, mips64le are spelled alike
}
