#!/bin/busybox sh
# PID 1 of the tiny initrd: load the few modules needed to reach the root disk and the
# 9p shares, mount them, and hand over either to the harness's guest script (when the
# kernel command line says kpctl.run=1) or to the root filesystem's own init (Vagrant).
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do
    insmod "/lib/modules/$m" 2>/dev/null
done
root=/dev/vda run=
for arg in $(cat /proc/cmdline); do
    case $arg in
        root=*) root=${arg#root=} ;;
        kpctl.run=1) run=1 ;;
    esac
done
i=0
while [ ! -b "$root" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
if ! mount -t ext4 "$root" /newroot; then
    echo "initrd: cannot mount $root" >&2
    echo o > /proc/sysrq-trigger
fi
if [ -n "$run" ]; then
    opts=trans=virtio,version=9p2000.L,msize=262144
    mkdir -p /newroot/kpctl /newroot/kpctl-out
    mount -t 9p -o "$opts" kpctl /newroot/kpctl
    mount -t 9p -o "$opts" out /newroot/kpctl-out
    umount /proc /sys /dev
    exec switch_root /newroot /bin/sh /kpctl/guest/guest-init.sh
fi
umount /proc /sys /dev
exec switch_root /newroot /sbin/init
