#!/bin/bash
# Build the Vagrant box for one guest from the harness's image (same recipe, same
# cache key) and add it as kpctl/ARCH. Skips all work when the box of this image is
# already added.
#
#   build-box.sh ARCH KERNEL
set -euo pipefail
arch=$1 kernel=$2
here=$(cd "$(dirname "$0")" && pwd)
image=$(python3 "$here/../guest/harness.py" image --arch "$arch" --kernel "$kernel")
key=$(basename "$image")
# qemu runs as libvirt-qemu and must read the kernel and initrd: keep them outside
# /root, which is 0700.
bootdir=/var/lib/kpctl/vagrant/$arch-$kernel
name=kpctl/$arch
if [ "$(cat "$bootdir/image-key" 2>/dev/null)" = "$key" ] && vagrant box list | grep -q "^$name "; then
    exit 0
fi
initrd=$(python3 -c "import sys; sys.path.insert(0, '$here/../guest'); import harness, pathlib; print(harness.ensure_initrd(pathlib.Path('$image')))")
case $arch in x86_64) console=ttyS0 ;; arm64) console=ttyAMA0 ;; esac
work=$(mktemp -d /var/tmp/kpctl-box.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$bootdir"
cp "$image/vmlinuz" "$bootdir/vmlinuz"
cp "$initrd" "$bootdir/initrd"
chmod -R a+rX /var/lib/kpctl
echo "build-box: $name from $key" >&2
qemu-img convert -O qcow2 "$image/rootfs.ext4" "$work/box.img"
size_gb=$(( ($(stat -c %s "$image/rootfs.ext4") + (1 << 30) - 1) >> 30 ))
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$size_gb" > "$work/metadata.json"
cat > "$work/Vagrantfile" <<VF
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.kernel = "$bootdir/vmlinuz"
    libvirt.initrd = "$bootdir/initrd"
    libvirt.cmd_line = "root=/dev/vda rw console=$console"
  end
end
VF
tar -C "$work" -cf "$work/kpctl.box" metadata.json Vagrantfile box.img
vagrant box add --force --name "$name" "$work/kpctl.box" >&2
# A re-added box must not boot from the old image that libvirt keeps in its pool.
for vol in $(virsh -q -c qemu:///system vol-list default 2>/dev/null | awk -v n="kpctl-VAGRANTSLASH-$arch" 'index($1, n) == 1 {print $1}'); do
    virsh -q -c qemu:///system vol-delete --pool default "$vol" >/dev/null
done
echo "$key" > "$bootdir/image-key"
