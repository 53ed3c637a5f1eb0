#!/usr/bin/env bash
# Installs what netbootd needs on Debian 12 (run as root): Debian packages and
# a virtualenv in ./.venv with netbootd installed into it (editable), then the
# discover initrd in the state dir ($NETBOOTD_STATE_DIR, default /var/lib/netbootd).
#   scripts/setup.sh          runtime only
#   scripts/setup.sh test     runtime + test peers (perfdhcp, Kea, dnsmasq, udhcpc...)
#   scripts/setup.sh bench    test + benchmark peers (tftpd-hpa, nginx, wrk, dnsperf)
set -euo pipefail
cd "$(dirname "$0")/.."
want=${1:-run}

# Runtime: iPXE binaries to serve; what `netbootd lab` (the main job on a
# machine without a spare NIC) boots: qemu, SeaBIOS/iPXE ROMs, OVMF, a Debian
# kernel for the discover agent, a static busybox for its initrd, dnsmasq for
# the proxy-mode lab.  busybox-static replaces busybox (same applets, static).
# kexec-tools is deliberately NOT installed (installed, it could arm kexec for
# this machine's own reboots): `netbootd initrd build` below apt-get downloads it
# and the Xen libraries its binary links, unpacks them (dpkg -x) into the cache
# and packs /sbin/kexec with its libraries into the agent's initrd.
RUNTIME_DEBS="python3 python3-venv iproute2 ipxe ipxe-qemu qemu-system-x86 ovmf linux-image-amd64
 busybox-static dnsmasq-base"
# Boot media (`netbootd media build`, iso_builder/media.py): xorriso, GRUB for BIOS,
# Debian's signed shim + GRUB (Secure Boot), mtools/dosfstools for the ESP.
RUNTIME_DEBS="$RUNTIME_DEBS xorriso grub-pc-bin grub-efi-amd64-signed shim-signed mtools dosfstools"
# HTTPS boot media: the agent on a medium checks the server's key pin with curl, which
# `media build` packs with its libraries into the medium's initrd (iso_builder/tlsclient.py).
# The daemon's own TLS (pyOpenSSL, cryptography) comes with the pip install below.
RUNTIME_DEBS="$RUNTIME_DEBS curl"
# Tests: real peers (perfdhcp/Kea, dnsmasq, udhcpc from busybox-static, curl,
# atftp, tcpdump) and tools to check our archives (cpio, bsdtar).
# chromium + chromium-driver: the status page is tested in a real browser;
# dig for DNS interop, dnsperf for bench/dns.
TEST_DEBS="kea-admin kea-dhcp4-server tcpdump procps curl atftp cpio libarchive-tools
 chromium chromium-driver bind9-dnsutils dnsperf"
# Volume backends: mkfs.xfs for a reflink=1 xfs in a loop mount (tests, bench/storage),
# lvm2 for its real JSON reports (filefrag comes with e2fsprogs).
TEST_DEBS="$TEST_DEBS xfsprogs lvm2"
# iSCSI exports: tgt (userspace target) is runtime - netbootd's storage service starts
# and supervises its own tgtd (-C N); the policy-rc.d guard below keeps the package
# from starting one now, and a freshly installed tgt.service is disabled below so no
# system tgtd holds port 3260 after a reboot.  libiscsi-bin (iscsi-ls/-inq/
# -readcapacity16, iscsi-test-cu) is the tests' initiator.
RUNTIME_DEBS="$RUNTIME_DEBS tgt"
TEST_DEBS="$TEST_DEBS libiscsi-bin"
# Sanboot e2e: a hybrid BIOS/UEFI disk image built in the test (GRUB images,
# GPT on a file with sgdisk, a FAT ESP with mkfs.fat + mtools, no loop mounts).
TEST_DEBS="$TEST_DEBS grub-pc-bin grub-efi-amd64-bin mtools dosfstools gdisk"

# Benchmarks only (make bench-*): peers measured in the same run.  atftpd
# conflicts with tftpd-hpa; bench/tftp unpacks it from its .deb itself.
# nftables: bench/storm --loss drops packets on arrival with nft (this kernel
# has no netem).
BENCH_DEBS="tftpd-hpa nginx-light wrk nftables"

case "$want" in
  run) extra="" ;;
  test) extra="$TEST_DEBS" ;;
  bench) extra="$TEST_DEBS $BENCH_DEBS" ;;
  *) echo "setup.sh: unknown mode '$want' (run, test or bench)" >&2; exit 2 ;;
esac
need=()
for p in $RUNTIME_DEBS $extra; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "setup.sh: need root to install: ${need[*]}" >&2; exit 1; fi
  # Never let a package's maintainer script start a daemon (kea, dnsmasq) on
  # this machine's real interfaces: deny service starts while installing.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; created_policy=1
  fi
  trap '[ $created_policy = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
  if [[ " ${need[*]} " == *" tgt "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable tgt >/dev/null 2>&1 || true
  fi
fi

PY=${PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
if [ "$want" != run ]; then
  .venv/bin/pip install -q -e '.[test]'
else
  .venv/bin/pip install -q -e .
fi

# The discover initrd (the agent that unassigned hosts boot) is built here, at
# install, or on first use by `netbootd initrd build`: only these two may fetch
# busybox-static (apt-get download); a running daemon never fetches packages.
# The same step builds the agent tool pack beside it (<state-dir>/agent-tools.cpio.gz,
# iso_builder/hashtool.py): Debian's openssl (installed here as a dependency, else
# apt-get download'ed into the cache) that a capturing agent fetches for a SHA-NI sha256.
state_dir=${NETBOOTD_STATE_DIR:-/var/lib/netbootd}
if ! .venv/bin/netbootd initrd build --state-dir "$state_dir"; then
  echo "setup.sh: no discover initrd yet (above: why); 'netbootd initrd build' builds it" >&2
fi
