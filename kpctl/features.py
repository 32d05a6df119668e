"""Optional kprobe_events features, detected from the tracefs README.

The README's kprobe_events synopsis grows with each feature (kernel/trace/trace.c,
readme_msg), which is what the kernel's own ftrace selftests check before they use one
(test.d/kprobe/*.tc: ``grep -q "..." README || exit_unsupported``). kpctl does the same
and never compares kernel versions: distribution kernels backport.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Feature:
    key: str
    description: str
    readme_marker: str  # text the README has exactly when the kernel supports the feature
    since: str  # the mainline release that added it, for the user's information only


FEATURES: tuple[Feature, ...] = (
    Feature("maxactive", "r[MAXACTIVE]: concurrent instances of a return probe", "r[maxactive]", "4.12"),
    Feature("return_suffix", "SYM%return: a return probe written as p", "%return", "5.11"),
    Feature("arg_n", "$argN: function arguments by position", "$arg<N>", "4.20"),
    Feature("user_deref", "+u0(...): dereference of user memory", "[u]<offset>", "5.5"),
    Feature("ustring", "ustring: user-space strings", "ustring", "5.5"),
    Feature("immediate", "\\IMM and \\\"STRING\\\": immediate values", "\\imm-value", "5.6"),
    Feature("symstr", "symstr: a symbol as a string", "symstr", "6.1"),
    Feature("array", "TYPE[N]: arrays", "<array-size>", "5.1"),
    Feature("bitfield", "b<width>@<offset>/<size>: bitfields", "b<bit-width>@", "3.14"),
    Feature("char", "char: a single character", "char,", "6.2"),
    Feature("return_args", "$argN in return probes", "return probes support: $retval, $arg<N>", "6.4"),
    Feature("btf_args", "BTF argument names (count, $arg*)", "<argname>", "6.6"),
    Feature("fprobe", "f: fprobes (through dynamic_events)", "f[:[<group>/][<event>]]", "6.4"),
)


def detect_features(readme: str) -> dict[str, bool]:
    """Which FEATURES the kernel whose tracefs README this is supports."""
    return {f.key: f.readme_marker in readme for f in FEATURES}
