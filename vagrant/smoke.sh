#!/bin/bash
# The Vagrant job of `make test`, per arch: build (or reuse) the box, `vagrant up` with
# provisioning, a kpctl smoke run over `vagrant ssh`, the Ansible playbook of
# examples/ansible (ansible-check.sh), destroy.
#
#   smoke.sh ARCH...
set -euo pipefail
cd "$(dirname "$0")"
for arch in "$@"; do
    started=$SECONDS
    bash build-box.sh "$arch" 6.1
    trap 'vagrant destroy -f '"$arch"' >/dev/null 2>&1 || true' EXIT
    vagrant up "$arch" >"/tmp/kpctl-vagrant-up-$arch.log" 2>&1 || {
        tail -20 "/tmp/kpctl-vagrant-up-$arch.log"; echo "vagrant: $arch: vagrant up failed" >&2; exit 1; }
    # Opens of a known file in the background give watch real hits to show.
    vagrant ssh "$arch" -c 'set -e; uname -mr
        sudo kpctl add do_sys_openat2 "path=+0(\$arg2):string"
        (for i in $(seq 20); do sleep 0.5; cat /etc/hostname >/dev/null; done) &
        sudo kpctl watch --count 3
        sudo kpctl list
        sudo kpctl rm --all'
    bash ansible-check.sh "$arch"
    vagrant destroy -f "$arch" >/dev/null
    trap - EXIT
    echo "vagrant: $arch: up, provision, smoke run, Ansible and destroy passed in $((SECONDS - started)) s"
done
