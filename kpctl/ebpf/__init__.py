"""kpctl's own BPF: programs written as instructions by kpctl (no compiler, no kernel
headers on the traced machine), loaded and attached through system calls. The counting
engine `bpf` is built on it (kpctl/aggregation/bpf.py)."""
