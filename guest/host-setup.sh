#!/bin/bash
# Everything the host needs for the guests, the Vagrant job and the host tests, on a
# fresh Debian 12 machine. Idempotent and quick when all is there already.
set -euo pipefail
packages=(
    qemu-system-x86 qemu-system-arm qemu-utils qemu-user-static binfmt-support arch-test
    mmdebstrap debian-archive-keyring cpio kmod e2fsprogs xz-utils zstd
    python3 python3-venv python3-pip make gcc
    vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients dnsmasq-base
    ebtables iptables rsync openssh-client
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "host-setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# arm64 images run their maintainer scripts under qemu-user (binfmt_misc); mmdebstrap
# checks a foreign architecture with arch-test.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
