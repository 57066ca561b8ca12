# banger — build, install and test. `make help` lists the targets.

PREFIX  ?= /usr/local
DESTDIR ?=
# go from PATH, else where .ci/run and the README put it (sudo's PATH leaves /usr/local/go/bin out).
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
PKG     := github.com/banger-dev/banger

VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  := $(shell git rev-parse HEAD 2>/dev/null)
DATE    := $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -X $(PKG)/internal/version.Version=$(VERSION) \
           -X $(PKG)/internal/version.Commit=$(COMMIT) \
           -X $(PKG)/internal/version.Date=$(DATE)

# Debian packages banger needs on the host (it shells out to the tools of the field only).
# kmod: depmod indexes a kernel's modules for its module disk.
# bash-completion: loads the completion script make install puts in place, in new shells.
# uidmap: newuidmap/newgidmap map a user's subordinate ids into the user namespace in which
# image builds, OCI pulls and module disks run without root.
DEPS := qemu-system-x86 e2fsprogs mmdebstrap debootstrap git ca-certificates openssh-client kmod bash-completion uidmap
# And those the tests need: an OCI registry the end-to-end tests run on loopback, a static
# busybox they build small images from, and nft, with which the network tests read the rules
# banger made (banger itself programs nftables through its netlink API, not this tool).
TEST_DEPS := docker-registry busybox-static umoci skopeo nftables

# What needs root in deps, install and uninstall runs through sudo when make runs as an
# ordinary user (not when staging into a DESTDIR): the build stays the user's, so bin/ and the
# Go caches in the user's home stay the user's too.
ROOT := $(if $(or $(filter 0,$(shell id -u)),$(DESTDIR)),,sudo)

.PHONY: help build install install-as-root uninstall uninstall-as-root deps test-deps test unit e2e lint fuzz clean bench firecracker-test

help:
	@echo "make deps       install the host packages banger uses (apt-get; through sudo unless root)"
	@echo "make test-deps  install what the end-to-end tests use besides (docker-registry, busybox-static, umoci, skopeo)"
	@echo "make build      build bin/banger, bin/bangerd, bin/banger-agent, bin/banger-helper"
	@echo "make install    build as you, then install under PREFIX (default /usr/local) through sudo unless root:"
	@echo "                also the groups banger and kvm with you (SUDO_USER) in them, and the root helper started"
	@echo "make uninstall  stop the daemon and remove the installed files (user data stays)"
	@echo "make test       lint, unit tests (with -race) and the end-to-end boot tests"
	@echo "make unit       unit tests only (-short: no downloads, no image builds)"
	@echo "make e2e        end-to-end tests that boot real VMs (root, QEMU)"
	@echo "make fuzz       every fuzz target for FUZZTIME each (default 10s), from its committed corpus"
	@echo "make lint       gofmt and go vet"
	@echo "make firecracker-test FIRECRACKER_BIN=… [JAILER_BIN=… FIRECRACKER_OLD_BIN=…]"
	@echo "                the tests against real Firecracker/jailer binaries (root, /dev/kvm)"
	@echo "make bench      benchmark banger against the bare VMM (root; BENCH_FLAGS=...)"

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/banger ./cmd/banger
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/bangerd ./cmd/bangerd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o bin/banger-agent ./cmd/banger-agent
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/banger-helper ./cmd/banger-helper

install: build
	$(ROOT) $(MAKE) --no-print-directory install-as-root PREFIX=$(PREFIX) DESTDIR=$(DESTDIR)

# install's root part, on what build made (it builds nothing, so it never writes into bin/).
install-as-root:
	install -D -m 0755 bin/banger $(DESTDIR)$(PREFIX)/bin/banger
	install -D -m 0755 bin/bangerd $(DESTDIR)$(PREFIX)/bin/bangerd
	install -D -m 0755 bin/banger-agent $(DESTDIR)$(PREFIX)/lib/banger/banger-agent
	install -D -m 0755 bin/banger-helper $(DESTDIR)$(PREFIX)/lib/banger/banger-helper
	@# The group whose members may use the root helper, and kvm (/dev/kvm's, which udev
	@# normally makes), and the user who ran `sudo make install` in both (not when staging
	@# into DESTDIR). Idempotent: a group or a membership that exists is left as it is.
	@if [ -z "$(DESTDIR)" ]; then \
	  for g in banger kvm; do getent group $$g >/dev/null || groupadd --system $$g || exit 1; done; \
	  if [ -n "$$SUDO_USER" ] && [ "$$SUDO_USER" != root ] && id -u "$$SUDO_USER" >/dev/null 2>&1; then \
	    for g in banger kvm; do \
	      if id -nG "$$SUDO_USER" | tr ' ' '\n' | grep -qx $$g; then continue; fi; \
	      usermod -aG $$g "$$SUDO_USER" || exit 1; \
	      echo "added $$SUDO_USER to group $$g: it applies from the next login (before that: sg $$g -c CMD)"; \
	    done; \
	  fi; \
	fi
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/banger/README.md
	install -m 0644 docs/*.md $(DESTDIR)$(PREFIX)/share/doc/banger/
	@# Shell completion where bash-completion, zsh and fish look by default.
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions \
	  $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	bin/banger completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/banger
	bin/banger completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_banger
	bin/banger completion fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/banger.fish
	@# The systemd unit, where systemd is the init system (optional: the CLI starts bangerd itself).
	@if [ -d /run/systemd/system ]; then \
	  install -d $(DESTDIR)$(PREFIX)/lib/systemd/system && \
	  sed 's|@PREFIX@|$(PREFIX)|g' contrib/systemd/bangerd.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/bangerd.service && \
	  echo "installed $(PREFIX)/lib/systemd/system/bangerd.service (enable with: systemctl enable --now bangerd)"; \
	fi
	@# The root helper's socket and service, socket-activated.
	@if [ -d /run/systemd/system ]; then \
	  install -d $(DESTDIR)$(PREFIX)/lib/systemd/system && \
	  sed 's|@PREFIX@|$(PREFIX)|g' contrib/systemd/banger-helper.socket > $(DESTDIR)$(PREFIX)/lib/systemd/system/banger-helper.socket && \
	  sed 's|@PREFIX@|$(PREFIX)|g' contrib/systemd/banger-helper.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/banger-helper.service && \
	  echo "installed banger-helper.socket and .service (add users with: usermod -aG banger USER)"; \
	fi
	@# Start the root helper (socket-activated) and restart a running one of an older build.
	@# Without systemd it is yours to start, as root, from your init system.
	@if [ -z "$(DESTDIR)" ]; then \
	  if [ -d /run/systemd/system ]; then \
	    systemctl daemon-reload && \
	    case "$(PREFIX)" in /usr|/usr/local) unit=banger-helper.socket;; *) unit=$(PREFIX)/lib/systemd/system/banger-helper.socket;; esac && \
	    systemctl enable --now $$unit && systemctl try-restart banger-helper.service && \
	    echo "banger-helper.socket is enabled and listens on /run/banger/helper.sock"; \
	  else \
	    echo "systemd is not the init system: start the root helper as root, e.g. from your init system:"; \
	    echo "  $(PREFIX)/lib/banger/banger-helper    (it makes /run/banger/helper.sock; banger doctor checks it)"; \
	  fi; \
	fi

uninstall:
	-@[ -x $(DESTDIR)$(PREFIX)/bin/banger ] && $(DESTDIR)$(PREFIX)/bin/banger daemon stop
	$(ROOT) $(MAKE) --no-print-directory uninstall-as-root PREFIX=$(PREFIX) DESTDIR=$(DESTDIR)

uninstall-as-root:
	-@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl disable --now banger-helper.socket banger-helper.service; fi
	rm -f $(DESTDIR)$(PREFIX)/bin/banger $(DESTDIR)$(PREFIX)/bin/bangerd
	rm -rf $(DESTDIR)$(PREFIX)/lib/banger $(DESTDIR)$(PREFIX)/share/doc/banger
	rm -f $(DESTDIR)$(PREFIX)/lib/systemd/system/bangerd.service
	rm -f $(DESTDIR)$(PREFIX)/lib/systemd/system/banger-helper.socket $(DESTDIR)$(PREFIX)/lib/systemd/system/banger-helper.service
	rm -f $(DESTDIR)$(PREFIX)/share/bash-completion/completions/banger $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_banger \
	  $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/banger.fish
	@echo "banger's files are removed. Your VMs, images and kernels are kept in"
	@echo "  $${XDG_STATE_HOME:-$$HOME/.local/state}/banger (state), $${XDG_CONFIG_HOME:-$$HOME/.config}/banger (config),"
	@echo "  $${XDG_CACHE_HOME:-$$HOME/.cache}/banger (downloads); delete them to remove everything."

deps:
	$(ROOT) apt-get update -q
	$(ROOT) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DEPS)

# The tests start their own registry on loopback; the package's service (on :5000, all
# interfaces) is not wanted.
test-deps:
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(TEST_DEPS)
	-@if [ -d /run/systemd/system ]; then systemctl disable --now docker-registry.service; fi

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -short ./...

e2e: build
	BANGER_E2E=1 BANGER_BIN_DIR=$(CURDIR)/bin $(GO) test -count=1 -v -timeout 60m ./e2e/

test: lint
	$(GO) test -race ./...
	$(MAKE) fuzz
	$(MAKE) e2e

# Every Fuzz* function of every package, one at a time, for FUZZTIME each. The committed
# corpus (testdata/fuzz) runs first as plain tests do; a crasher fails the target and is
# written to testdata/fuzz/FuzzX/ to be committed as a seed once fixed. Minimising a new input
# is capped at 1s, or a target with large inputs spends its whole time minimising.
# Go before 1.27 can fail a target with a bare "context deadline exceeded" when FUZZTIME ends
# while a worker is busy (golang/go#75804, a race in Go's fuzz coordinator): such a run wrote
# no failing input, so the target is run once more; any other failure, or that one twice, fails.
FUZZTIME ?= 10s
# One target ($$f, in the package of $$file), as the recipe below runs it.
FUZZ_ONE = $(GO) test -run='^$$' -fuzz="^$$f\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=1s ./$$(dirname $$file)
fuzz:
	@set -e; n=0; log=$$(mktemp); trap 'rm -f $$log' EXIT; \
	for file in $$(grep -l '^func Fuzz' $$(git ls-files '*_test.go' 2>/dev/null || find . -name '*_test.go')); do \
	  for f in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$file); do \
	    echo "fuzz: ./$$(dirname $$file) $$f ($(FUZZTIME))"; n=$$((n+1)); \
	    if ! $(FUZZ_ONE) >$$log 2>&1; then \
	      cat $$log; \
	      if grep -q 'context deadline exceeded' $$log && ! grep -q 'Failing input written' $$log; then \
	        echo "fuzz: $$f: Go's fuzz-time shutdown race (golang/go#75804), no failing input: running it again"; \
	        $(FUZZ_ONE); \
	      else exit 1; fi; \
	    else cat $$log; fi; \
	  done; \
	done; echo "fuzz: $$n targets ran"

clean:
	rm -rf bin

# Tests against real Firecracker binaries (not shipped: see README, "Firecracker").
# FIRECRACKER_OLD_BIN, a release older than 1.8, checks that it is refused.
firecracker-test:
	@[ -n "$(FIRECRACKER_BIN)" ] || { echo "set FIRECRACKER_BIN=/path/to/firecracker (1.8+)"; exit 2; }
	BANGER_FIRECRACKER_BIN=$(FIRECRACKER_BIN) BANGER_JAILER_BIN=$(JAILER_BIN) \
	  BANGER_FIRECRACKER_OLD_BIN=$(FIRECRACKER_OLD_BIN) \
	  $(GO) test -count=1 -v -run 'Firecracker|Jailer' ./internal/vmm/firecracker/

# The benchmark harness: `make bench` (root; boots VMs inside a network namespace of its own).
# BENCH_FLAGS passes options, e.g. BENCH_FLAGS='-rounds 7 -sections overhead,steps'.
bench: build
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/banger-bench ./bench
	bin/banger-bench -bin bin $(BENCH_FLAGS)
