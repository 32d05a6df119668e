#!/bin/sh
# kpctl's counting commands on a real kernel, each beside a workload that makes what it
# counts: reads of 3000 bytes, 10 ms sleeps. The README shows this script's output.
set -e
run() { printf '\n$ %s\n' "$*"; "$@"; }
# time.sleep()'s syscall function, with the arch's prefix (__x64_sys_, __arm64_sys_)
nanosleep=$(grep -m1 -oE '__(x64|arm64)_sys_clock_nanosleep$' /proc/kallsyms)
head -c 5000 /dev/zero > /tmp/kpctl-reads
python3 -c '
import time
while True:
    with open("/tmp/kpctl-reads", "rb", buffering=0) as f:
        f.read(3000)
    time.sleep(0.01)
' &
workload=$!
trap 'kill $workload' EXIT

run kpctl count 'vfs_*' -d 3 --top 6
run kpctl count 'vfs_*' -d 3 --top 6 --engine tracefs
run kpctl count vfs_read --by comm -d 3 --top 4
run kpctl hist ksys_read 'size=$arg3:u64' -d 3
run kpctl latency "$nanosleep" -u -d 3
run kpctl latency vfs_read vfs_write -F -d 3
run kpctl stacks "$nanosleep" -d 3 --top 1
run kpctl stacks "$nanosleep" -d 3 --top 2 --folded --engine tracefs
