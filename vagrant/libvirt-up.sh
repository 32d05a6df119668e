#!/bin/bash
# Start what vagrant-libvirt needs on a machine without systemd (CI, containers), and
# make it usable quickly. Idempotent.
set -euo pipefail
# libvirt runs qemu as libvirt-qemu; with /dev/kvm 0600 root it re-probes qemu on every
# step (60-70 s each). udev would normally make it group kvm, 0660.
if [ -e /dev/kvm ]; then chgrp kvm /dev/kvm; chmod 0660 /dev/kvm; fi
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 60); do
    virsh -q -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.5
done
virsh -q -c qemu:///system version >/dev/null
if ! virsh -q -c qemu:///system pool-info default >/dev/null 2>&1; then
    mkdir -p /var/lib/libvirt/images
    virsh -q -c qemu:///system pool-define-as default dir --target /var/lib/libvirt/images
fi
virsh -q -c qemu:///system pool-start default 2>/dev/null || true
