"""The kernel's limits on probe definitions (kernel/trace/trace_probe.h, trace_kprobe.c,
the same on 6.1 and 6.12), which kpctl checks itself: a spec is then checked the same way
where no kernel is, and the CLI's options take them without importing the model."""

MAX_EVENT_NAME_LEN = 64  # an event's name; a group's is shorter by one (its '/' counts)
MAX_ARG_NAME_LEN = 32
MAX_TRACE_ARGS = 128
MAX_ARRAY_LEN = 64
MAX_MAXACTIVE = 4096  # KRETPROBE_MAXACTIVE_MAX
# $argN and $stackN beyond the stack (PARAM_MAX_STACK: THREAD_SIZE / sizeof(long), with
# 16 KiB stacks on x86_64 and arm64).
MAX_STACK_PARAM = 16384 // 8
MAX_SYMBOL_LEN = 511  # KSYM_NAME_LEN (512) less the NUL, since 6.1
MAX_MODULE_NAME_LEN = 55  # MODULE_NAME_LEN (64 - sizeof(unsigned long)) less the NUL
# Dereferences nested in one fetch argument: the kernel builds each argument's fetch
# program in FETCH_INSN_MAX (16) steps, one for the first fetch, one per dereference,
# and the last for its end; a 15th dereference is TOO_MANY_OPS.
MAX_DEREF_DEPTH = 14
