#!/bin/sh
# Run in a harness guest: build kpctl_splat.ko for the running kernel in the module
# build folder the harness keeps from run to run (make only when a source changed:
# Kbuild's start-up alone takes half a minute under emulation). Prints the .ko's path.
set -eu
src=$(cd "$(dirname "$0")" && pwd)
dest=/var/tmp/kpctl-kmod/harness-splat-$(uname -r)
mkdir -p "$dest"
for f in Kbuild kpctl_splat.c; do
    cmp -s "$src/$f" "$dest/$f" || cp "$src/$f" "$dest/$f"
done
if [ ! -e "$dest/kpctl_splat.ko" ] || [ "$dest/kpctl_splat.c" -nt "$dest/kpctl_splat.ko" ] || [ "$dest/Kbuild" -nt "$dest/kpctl_splat.ko" ]; then
    make -s -C "/lib/modules/$(uname -r)/build" M="$dest" modules >&2
fi
echo "$dest/kpctl_splat.ko"
