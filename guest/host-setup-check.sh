#!/bin/bash
# guest/host-setup.sh on a pristine Debian 12 machine, then guest/preflight.sh there:
# a tool that `make test` needs and host-setup.sh does not install fails this check
# (as arch-test once did, hidden by a machine set up by hand).
#
# The pristine machine is a minbase root filesystem (what debootstrap or the debian:12
# image give) made by mmdebstrap, cached in ~/.cache/kpctl/pristine keyed by this
# script, and unpacked afresh for every run; downloaded packages are kept in
# ~/.cache/kpctl/apt-archives. Daemons are not started in the chroot (policy-rc.d).
set -euo pipefail
checkout=$(cd "$(dirname "$0")/.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/kpctl
mirror=${KPCTL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${KPCTL_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
key=$(sha256sum "$0" | cut -c1-12)
base=$cache/pristine/bookworm-minbase-$key.tar
archives=$cache/apt-archives

if [ ! -e "$base" ]; then
    rm -rf "$cache/pristine"
    mkdir -p "$cache/pristine"
    echo "host-setup-check: building a pristine Debian 12 root filesystem" >&2
    mmdebstrap --quiet --variant=minbase --mode=root --aptopt='Acquire::Retries "5"' \
        bookworm "$cache/pristine/building.tar" \
        "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
        "deb $security bookworm-security main"
    mv "$cache/pristine/building.tar" "$base"
fi

root=$(mktemp -d /var/tmp/kpctl-pristine.XXXXXX)
cleanup() {
    for m in kpctl var/cache/apt/archives dev proc; do
        umount -R "$root/$m" 2>/dev/null || umount -lR "$root/$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$root"
}
trap cleanup EXIT
tar -C "$root" -xf "$base"
mkdir -p "$root/kpctl" "$archives/partial"
mount --bind "$checkout" "$root/kpctl"
mount -o remount,bind,ro "$root/kpctl"
mount --bind "$archives" "$root/var/cache/apt/archives"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
cp /etc/resolv.conf "$root/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    /bin/bash -c 'bash /kpctl/guest/host-setup.sh && bash /kpctl/guest/preflight.sh'
