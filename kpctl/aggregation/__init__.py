"""Counting in the kernel, for `kpctl count`, `hist`, `latency` and `stacks`: the
counts and their rendering (counts), and two engines that keep them, tracefs hist
triggers (hist_triggers) and BPF maps through bcc (bpf). kpctl.counting chooses one."""
