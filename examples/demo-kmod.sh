#!/bin/sh
# `make demo-kmod`: the same job through kpctl's own kernel module (kmod/): build it
# against the running kernel, load it, probe do_sys_openat2 with register_kprobe() and
# register_kretprobe(), and watch the module's hits beside a tracefs probe's.
set -e
run() { printf '\n$ %s\n' "$*"; "$@"; }

run kpctl kmod build
run kpctl kmod load
run kpctl add --backend kmod do_sys_openat2 --name openat2_kmod
run kpctl add --backend kmod --ret do_sys_openat2 --name openat2_kmod_ret
run kpctl add do_sys_openat2 'path=+0($arg2):ustring'
run kpctl list
( for i in $(seq 120); do
    cat /etc/hostname >/dev/null 2>&1 || true
    sleep 0.5
  done ) &
opener=$!
run kpctl watch --comm cat --count 9
kill $opener
run kpctl stats
run kpctl kmod status
run kpctl rm --all
run kpctl kmod unload
