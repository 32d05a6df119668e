"""`kpctl inspect`: what a kprobe does to the kernel's code, shown on the live kernel.

inspect() resolves a target through kallsyms, says whether a probe may go there and why
not, disassembles the function's first instructions from /proc/kcore with the places a
probe may go marked, and lists every kprobe already on the function with its owner.
arm() then puts short-lived probes there and snapshots the code at each stage: before,
armed, optimized (x86), and restored; and follows one real return through the return
probe trampoline. render_text() and to_json() turn a Report into output with no I/O.

report.py: what inspect finds; target.py: the function, whether a probe may go there and
whose probes are there; code.py: the live code and where a probe may sit (kcore.py reads
it, disasm.py decodes it); inspector.py: an inspection; arm.py: --arm; render.py: output.

Kernel features are detected from what the kernel shows, never from its version:
- kprobes on ftrace (CONFIG_KPROBES_ON_FTRACE): kallsyms has kprobe_ftrace_handler;
- jump optimization (CONFIG_OPTPROBES): /proc/sys/debug/kprobes-optimization reads 1;
- the return trampoline: whichever of arch_rethook_trampoline (rethook, v5.19 on x86,
  commit f3a112c0c40d), __kretprobe_trampoline (v5.16) or kretprobe_trampoline kallsyms has.
"""
