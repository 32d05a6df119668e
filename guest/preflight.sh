#!/bin/bash
# Check that this machine has every tool `make test` uses, after guest/host-setup.sh:
# the image build (mmdebstrap, also for a foreign architecture), both QEMU system
# emulators, the host tests' Python, the module build, and Vagrant with its libvirt
# plugin. Prints each missing piece and exits 1 if there is one. Changes nothing.
set -uo pipefail
missing=0
need() {  # need WHAT COMMAND...: run COMMAND quietly, report WHAT if it fails
    local what=$1; shift
    if ! "$@" >/dev/null 2>&1; then
        echo "preflight: missing: $what" >&2
        missing=1
    fi
}
for tool in mmdebstrap mke2fs modprobe cpio xz zstd qemu-system-x86_64 qemu-system-aarch64 \
        qemu-img make gcc vagrant virsh libvirtd virtlogd rsync ssh; do
    need "$tool" command -v "$tool"
done
# mmdebstrap needs arch-test for a foreign architecture, and arm64 binaries must run
# (qemu-user through binfmt_misc) for the arm64 image's maintainer scripts.
if [ "$(uname -m)" != aarch64 ]; then
    need "arch-test (mmdebstrap's check of a foreign architecture)" command -v arch-test
    need "arm64 binaries running through qemu-user (binfmt_misc qemu-aarch64)" \
        test -e /proc/sys/fs/binfmt_misc/qemu-aarch64
fi
need "python3 with venv and pip (the host tests' virtual environment)" python3 -m venv --help
need "python3's ensurepip (python3-venv)" python3 -c 'import ensurepip'
need "the vagrant-libvirt plugin" sh -c 'vagrant plugin list | grep -q vagrant-libvirt'
need "the Debian archive keyring (mmdebstrap)" test -e /usr/share/keyrings/debian-archive-keyring.gpg
if [ $missing = 0 ]; then
    echo "preflight: every tool make test uses is here"
fi
exit $missing
