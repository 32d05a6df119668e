#!/bin/sh
# Capture real tracefs files from the running kernel into tests/host/data/<arch>-<kernel>/
# for the host tests' parsers. Run as root in a guest, at the checkout's root:
#   python3 guest/harness.py run --arch x86_64 --kernel 6.1 -- sh tests/host/data/capture.sh
# It adds probes in group kpcap, an instance "kpcap", and removes both at the end.
set -u
T=/sys/kernel/tracing
arch=$(uname -m); [ "$arch" = aarch64 ] && arch=arm64
kver=$(uname -r | cut -d. -f1-2)
out=tests/host/data/$arch-$kver
mkdir -p "$out"
uname -r > "$out/uname-r"
cp $T/README "$out/README"
cat /sys/kernel/debug/kprobes/enabled > "$out/kprobes-enabled" 2>&1
cat /sys/kernel/security/lockdown > "$out/lockdown" 2>&1
head -c 4000 /sys/kernel/debug/kprobes/blacklist > "$out/blacklist.head"
grep -E ' (do_sys_openat2|do_sys_open|vfs_read|vfs_write|kernel_clone|schedule|jiffies)$' /proc/kallsyms > "$out/kallsyms.sample"
grep -c . /proc/kallsyms > "$out/kallsyms.count"
grep -E '^(do_sys_openat2|vfs_read|vfs_write|kernel_clone)( |$)' $T/available_filter_functions > "$out/available_filter_functions.sample"
grep -E '\.(isra|constprop|part|cold)\.' /proc/kallsyms | head -20 > "$out/kallsyms.renamed"

if [ "$arch" = x86_64 ]; then R0=%di; R1=%si; RET=%ax; else R0=%x0; R1=%x1; RET=%x0; fi
ok() { printf "%s\n" "$1" >> $T/kprobe_events 2>/dev/null && printf "accepted: %s\n" "$1" >> "$out/probe-results" || printf "rejected: %s\n" "$1" >> "$out/probe-results"; }
: > "$out/probe-results"
ok 'p:kpcap/open do_sys_openat2 dfd=$arg1:s32 path=+0($arg2):ustring flags=+8(+0($arg3)):x64 comm=$comm'
ok 'p:kpcap/open_s do_sys_openat2 path=+0($arg2):string'
ok 'r:kpcap/open_ret do_sys_openat2 ret=$retval:s32'
ok 'r:kpcap/open_ret_default do_sys_openat2 $retval'
ok "p:kpcap/regs vfs_read $R0 buf=$R1:x64 s0=\$stack0 st=\$stack cnt=\$arg3:u32 bf=\$arg3:b4@2/32 arr=+0(\$stack):x8[4] sym=\$stack0:symbol"
ok 'p:kpcap/imm vfs_read one=\1234 neg=\-5:s32 str=\"hello"'
ok 'p:kpcap/user vfs_read u=+u0($arg2):u8'
ok 'p:kpcap/arrs vfs_read s16=+0($stack):s16[2]'
ok 'p:kpcap/neg vfs_read neg=-8($stack):x32'
ok 'p:kpcap/chr vfs_read c=+0($arg2):char'
ok 'p:kpcap/symstr vfs_read ss=$stack0:symstr'
ok 'r5:kpcap/maxact vfs_read'
ok 'p:kpcap/plus vfs_read+8'
ok 'p:kpcap/jiffy vfs_read j=@jiffies:u64'
ok 'p vfs_write'
ok 'r vfs_write'
ok 'p:kpcap/btf vfs_read count pos=+0(pos):s64'
ok 'p:kpcap/btfall vfs_read $arg*'
ok 'r:kpcap/btfret vfs_read $arg1 ret=$retval'
ok 'p:kpcap/retsfx vfs_read%return ret=$retval'
ok 'p:kpcap/mod ext4:ext4_file_open'
addr=$(grep ' vfs_write$' /proc/kallsyms | cut -d' ' -f1)
ok "p:kpcap/addr 0x$addr"
cp $T/kprobe_events "$out/kprobe_events"
cp $T/dynamic_events "$out/dynamic_events" 2>/dev/null

# Hits, read from an instance of our own. One event enabled at a time: with a dozen
# probes on vfs_read enabled together, Debian's 6.12.118 x86_64 kernel oopsed in
# kprobe_dispatcher (a pointer with its top byte zeroed), which no single probe did.
: > "$out/trace_pipe"
mkdir $T/instances/kpcap
for e in open open_s open_ret open_ret_default regs imm user arrs neg chr symstr maxact plus retsfx btf btfall btfret; do
  [ -d $T/instances/kpcap/events/kpcap/$e ] || continue
  echo 1 > $T/instances/kpcap/events/kpcap/$e/enable
  for i in 1 2 3; do cat /etc/hostname > /dev/null; cat /nonexistent-kpctl 2>/dev/null; done
  echo 0 > $T/instances/kpcap/events/kpcap/$e/enable
  grep -v '^#' $T/instances/kpcap/trace | head -40 >> "$out/trace_pipe"
  echo > $T/instances/kpcap/trace
done
for e in open open_s open_ret open_ret_default; do echo 1 > $T/instances/kpcap/events/kpcap/$e/enable; done
# A tiny buffer overflowed by a flood: LOST lines come through trace_pipe only.
echo 1 > $T/instances/kpcap/buffer_size_kb
echo > $T/instances/kpcap/trace
echo 1 > $T/instances/kpcap/tracing_on
for i in $(seq 1 200); do cat /etc/hostname > /dev/null; done
timeout 3 cat $T/instances/kpcap/trace_pipe | head -50 > "$out/trace_pipe.lost"
cp $T/kprobe_profile "$out/kprobe_profile"
cp /sys/kernel/debug/kprobes/list "$out/kprobes-list"
cat $T/events/kpcap/open/format > "$out/format.open"
cat $T/events/kpcap/open/enable > /dev/null
echo 'common_pid == 1' > $T/instances/kpcap/events/kpcap/open/filter
cat $T/instances/kpcap/events/kpcap/open/filter > "$out/filter.open"
echo 'comm == "x" && bogus == 1' > $T/instances/kpcap/events/kpcap/open/filter 2>/dev/null
cat $T/instances/kpcap/events/kpcap/open/filter > "$out/filter.bad"
# Removing an enabled event.
echo '-:kpcap/open' >> $T/kprobe_events 2>"$out/rm-enabled.err"; echo "rc=$?" >> "$out/rm-enabled.err"

# Rejected lines and what error_log says about each.
echo > $T/error_log
bad() { printf "### %s\n" "$1" >> "$out/error_log.cases"; printf "%s\n" "$1" >> $T/kprobe_events 2>/dev/null && echo "(accepted)" >> "$out/error_log.cases"; cat $T/error_log >> "$out/error_log.cases"; echo > $T/error_log; }
: > "$out/error_log.cases"
bad 'p:kpcap/b1 vfs_read x=$arg1:u7'
bad 'p:kpcap/b2 no_such_function_kpctl'
bad 'p:kpcap/b3 vfs_read x=%nosuchreg'
bad 'r:kpcap/b4 vfs_read x=$arg1'
bad 'p:kpcap/b5 vfs_read+4'
bad 'p:kpcap/b6 vfs_read x=+0($arg1'
bad 'p:kpcap/b7 vfs_read x=$comm:u32'
bad 'p:kpcap/b8 vfs_read x=$stack0 x=$stack1'
bad 'p:kpcap/b9 vfs_read $retval'
bad 'p:kpcap/open vfs_read'
bad 'p:kpcap/b10 vfs_read+1'
bad 'q:kpcap/b11 vfs_read'
bad 'p:kpcap/b12 vfs_read x=$arg1:string[3]'
bad 'p:kpcap/b13 vfs_read x=$arg1:x8[1025]'
bad 'p:kpcap/bad-name vfs_read'
bad 'p:kpcap/b14 kprobe_int3_handler'
bad 'p:kpcap/b15 vfs_read x=$arg1:b33@0/32'
bad 'p:kpcap/b16 vfs_read nosuchbtfarg'
bad '-:kpcap/nonexistent'
bad 'p:kpcap/b17 vfs_read x=@no_such_sym_kpctl'

# Clean up: disable everywhere, remove our probes, the instance.
for f in $T/instances/kpcap/events/kpcap/*/enable $T/events/kpcap/*/enable; do [ -e "$f" ] && echo 0 > "$f"; done
echo 0 > $T/instances/kpcap/events/kpcap/open/filter 2>/dev/null
for e in $(ls $T/events/kpcap 2>/dev/null); do [ -d $T/events/kpcap/$e ] && echo "-:kpcap/$e" >> $T/kprobe_events; done
for e in $(ls $T/events/kprobes 2>/dev/null); do [ -d $T/events/kprobes/$e ] && echo "-:kprobes/$e" >> $T/kprobe_events; done
rmdir $T/instances/kpcap
echo "left in kprobe_events: $(wc -l < $T/kprobe_events)" >> "$out/probe-results"
ls "$out"
