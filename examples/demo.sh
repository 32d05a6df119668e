#!/bin/sh
# `make demo`: kpctl's main job on a real kernel. Probe the file-open path with typed
# arguments and its return value, make some opens, show the real hits, list, remove.
set -e
run() { printf '\n$ %s\n' "$*"; "$@"; }

run kpctl add do_sys_openat2 'dfd=$arg1:s32' 'path=+0($arg2):ustring'
run kpctl add --ret do_sys_openat2 'fd=$retval:s32'
run kpctl list
# Something to watch: `cat` opening a few files, again and again until watch has enough.
( for i in $(seq 120); do
    cat /etc/hostname /etc/os-release /does/not/exist >/dev/null 2>&1 || true
    sleep 0.5
  done ) &
opener=$!
run kpctl watch --comm cat --count 6
kill $opener
run kpctl stats
run kpctl rm --all
run kpctl list
