#!/bin/sh
# PID 1 of a harness guest, started by the initrd with the checkout at /kpctl and the
# run's output folder at /kpctl-out (both 9p shares). Runs /kpctl-out/cmd.sh as root at
# the checkout's root, records its exit code and the kernel log, and powers off. A guest
# that dies before writing /kpctl-out/rc is reported by the host as crashed.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=${TERM:-vt100}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing
# The kernel module's build folder, kept by the host from run to run. The build runs
# on the guest's own disk: files written over 9p get the host's time, which the
# guest's clock (whole seconds from the RTC, slower under load) may not have reached,
# and make then warns of clock skew.
kmod_cache=/mnt/kmod-build kmod_build=/var/tmp/kpctl-kmod
mkdir -p $kmod_cache $kmod_build
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 kmodbuild $kmod_cache
cp -r --preserve=timestamps $kmod_cache/. $kmod_build/
# Bytecode goes to a cache the host keeps with the image, not into the checkout: each of
# the hundreds of kpctl processes the tests start would otherwise compile kpctl again
# (0.3 s under TCG), and each boot pytest, click, pyroute2 and bcc.
pycache=/var/tmp/kpctl-pycache
mkdir -p $pycache
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 pycache $pycache
hostname kpctl-guest
# Kernel messages up to KERN_INFO reach the console as they happen (a WARN's, an Oops's
# and a lockup's backtraces are KERN_DEFAULT or KERN_INFO), where the harness watches
# for them; a task stuck in D state is reported after a minute, not two.
dmesg -n 7
echo 60 > /proc/sys/kernel/hung_task_timeout_secs
ip link set lo up

# kpctl from the checkout, as `pip install .` would provide it.
cat > /usr/local/bin/kpctl <<'EOF'
#!/bin/sh
PYTHONPATH=/kpctl${PYTHONPATH:+:$PYTHONPATH} exec python3 -m kpctl "$@"
EOF
chmod +x /usr/local/bin/kpctl

out=/kpctl-out
cd /kpctl
export KPCTL_REQUIRE_KERNEL=1 PYTHONPYCACHEPREFIX=$pycache PYTHONPATH=/kpctl
echo "kpctl-guest: $(uname -m) $(uname -r)" > /dev/console
if [ -e $out/interactive ]; then
    setsid -c /bin/bash -l </dev/console >/dev/console 2>&1
    echo $? > $out/rc
else
    { sh $out/cmd.sh; echo $? > $out/rc.tmp; } 2>&1 | tee $out/output > /dev/console
fi
rm -rf $kmod_cache/* && cp -r --preserve=timestamps $kmod_build/. $kmod_cache/
dmesg > $out/dmesg
[ -e $out/rc.tmp ] && mv $out/rc.tmp $out/rc
sync
echo o > /proc/sysrq-trigger
# Wait for the power-off with builtins only: an external sleep may no longer be
# readable from the disk that is going away.
while :; do :; done
