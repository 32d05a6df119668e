#!/bin/bash
# Build one guest image offline from Debian packages: a root filesystem (raw ext4 for
# the runner and the Vagrant box), the Debian kernel, and the parts of a tiny initrd.
#
#   build-image.sh ARCH SUITE OUTDIR
#
# ARCH is x86_64 or arm64, SUITE a Debian suite (bookworm, trixie). Everything is
# built in OUTDIR.tmp and renamed to OUTDIR only when complete, so a failed build never
# leaves an image that a later run would use. The harness keys OUTDIR by a hash of this
# file, so changing the recipe rebuilds the image.
# Work no guest needs is diverted to true, each measured on a cold arm64 build under
# qemu-user (bookworm, 347 s in all): update-initramfs (the harness packs its own tiny
# initrd; building Debian's costs minutes); update-ca-certificates (54 s: guests have no
# network); py3compile (about 60 s for the python3-* packages: harness guests keep
# bytecode in a cache of their own, PYTHONPYCACHEPREFIX, and never read the image's).
set -euo pipefail

arch=$1 suite=$2 out=$3
case $arch in
    x86_64) debarch=amd64 ;;
    arm64) debarch=arm64 ;;
    *) echo "build-image: unknown arch $arch" >&2; exit 2 ;;
esac
mirror=${KPCTL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${KPCTL_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

packages=(
    "linux-image-$debarch" "linux-headers-$debarch" busybox-static mount kmod procps
    util-linux iproute2 gcc make libc6-dev
    python3 python3-click python3-tabulate python3-pyroute2 python3-pytest python3-capstone
    python3-pip python3-setuptools python3-bpfcc bpfcc-tools python3-yaml
    # What a Vagrant box needs: systemd as init, ssh, sudo, rsync for synced folders.
    systemd-sysv openssh-server sudo rsync
)
# The insecure public key that Vagrant logs in with before it inserts a fresh one.
vagrant_key='ssh-rsa AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YVr+kz4TjGYe7gHzIw+niNltGEFHzD8+v1I2YJ6oXevct1YeS0o9HZyN1Q9qgCgzUFtdOKLv6IedplqoPkcmF0aYet2PkEDo3MlTBckFXPITAMzF8dJSIFo9D8HfdOV0IAdx4O7PtixWKn5y2hMNG0zQPyUecp4pzC6kivAIhyfHilFR61RGL+GPXQ2MWZWFYbAGjyiYJnAmCP3NOTd0jMZEnDkbUvxhMmBYSdETk1rRgm+R4LOzFUGaHqHDLKLX+FIPKcF96hrucXzcWyLbIbEgE98OHlnVYCzRdK8jlqm8tehUc9c9WhQ== vagrant insecure public key'

tmp=$out.tmp
rm -rf "$tmp"
mkdir -p "$tmp"
root=$tmp/rootfs
trap 'rm -rf "$tmp"' EXIT

echo "build-image: $arch $suite: mmdebstrap (several minutes; arm64 runs maintainer scripts under qemu-user)" >&2
mmdebstrap --verbose --variant=apt --mode=root --architectures="$debarch" \
    --aptopt='Acquire::Retries "5"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --include="$(IFS=,; echo "${packages[*]}")" \
    --essential-hook='for tool in /usr/sbin/update-initramfs /usr/sbin/update-ca-certificates /usr/bin/py3compile; do
        chroot "$1" dpkg-divert --quiet --local --rename --divert "$tool.real" --add "$tool"
        ln -s /bin/true "$1$tool"; done' \
    --customize-hook='echo kpctl-guest > "$1/etc/hostname"' \
    --customize-hook='printf "/dev/vda / ext4 defaults 0 1\n" > "$1/etc/fstab"' \
    --customize-hook='chroot "$1" passwd -d root' \
    --customize-hook='chroot "$1" useradd -m -s /bin/bash vagrant' \
    --customize-hook='echo "vagrant ALL=(ALL) NOPASSWD:ALL" > "$1/etc/sudoers.d/vagrant"' \
    --customize-hook="mkdir -p \"\$1/home/vagrant/.ssh\" && echo '$vagrant_key' > \"\$1/home/vagrant/.ssh/authorized_keys\"" \
    --customize-hook='chroot "$1" chown -R vagrant:vagrant /home/vagrant/.ssh && chmod 700 "$1/home/vagrant/.ssh"' \
    --customize-hook='printf "[Match]\nName=en* eth*\n[Network]\nDHCP=yes\n" > "$1/etc/systemd/network/50-dhcp.network"' \
    --customize-hook='chroot "$1" systemctl enable systemd-networkd' \
    --customize-hook='echo "UseDNS no" > "$1/etc/ssh/sshd_config.d/vagrant.conf"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$suite" "$root" \
    "deb $mirror $suite main" "deb $mirror $suite-updates main" \
    "deb $security $suite-security main"

kver=$(ls "$root/lib/modules")
[ "$(echo "$kver" | wc -w)" = 1 ] || { echo "build-image: expected one kernel, got: $kver" >&2; exit 1; }
echo "$kver" > "$tmp/kernel-release"
cp "$root/boot/vmlinuz-$kver" "$tmp/vmlinuz"

# What a tiny initrd needs (guest/harness.py packs it with initrd-init.sh, cheaply, so
# that changing the init script does not rebuild the image): busybox and the modules
# that reach the root disk and the 9p shares, decompressed for busybox's insmod.
mods=$tmp/initrd-parts
mkdir -p "$mods/lib/modules" "$mods/bin"
cp "$root/bin/busybox" "$mods/bin/busybox"
: > "$mods/modules.order"
for mod in virtio_pci virtio_blk ext4 9p 9pnet_virtio; do
    modprobe -d "$root" -S "$kver" --show-depends "$mod" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r path; do
    name=$(basename "$path")
    case $name in
        *.xz) xz -dc "$path" > "$mods/lib/modules/${name%.xz}"; name=${name%.xz} ;;
        *.zst) zstd -qdc "$path" > "$mods/lib/modules/${name%.zst}"; name=${name%.zst} ;;
        *) cp "$path" "$mods/lib/modules/$name" ;;
    esac
    echo "$name" >> "$mods/modules.order"
done
[ -s "$mods/modules.order" ] || { echo "build-image: found no initrd modules" >&2; exit 1; }

echo "build-image: ext4 root filesystem" >&2
size_mb=$(( $(du -sm "$root" | cut -f1) + 1536 ))
mke2fs -q -t ext4 -L kpctl-root -d "$root" "$tmp/rootfs.ext4" "${size_mb}M"
rm -rf "$root"
echo "$arch $suite $kver" > "$tmp/image-info"
trap - EXIT
rm -rf "$out"
mv "$tmp" "$out"
echo "build-image: done: $out ($kver)" >&2
