"""Generic netlink messages of kpctl_kmod, the bundled kernel module (kmod/).

Pure code: the message class encodes and decodes without a socket, so the host tests
check it against bytes captured from the real module. The attribute and command
numbers mirror kmod/kpctl_kmod.h (a host test compares the two).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from pyroute2.netlink import genlmsg

FAMILY = "kpctl"
VERSION = 1
NAME_MAX = 63
MAXACTIVE_MAX = 4096
BENCH_MAX = 100_000_000
BENCH_TARGET = "kpctl_bench_target"
BENCH_RECURSIVE = "kpctl_bench_recursive"
BENCH_DEPTH_MAX = 16
BENCH_SECONDS_MAX = 60


class Cmd(IntEnum):
    ADD = 1
    REMOVE = 2
    ENABLE = 3
    DISABLE = 4
    GET = 5
    BENCH = 6


class Kind(IntEnum):
    ENTRY = 0
    RETURN = 1


class KprobeFlag(IntFlag):
    """KPROBE_FLAG_* of include/linux/kprobes.h, as the module reports them."""

    GONE = 1
    DISABLED = 2
    OPTIMIZED = 4
    FTRACE = 8
    ON_FUNC_ENTRY = 16
    STUCK = 0x80000000  # kpctl_kmod's own (KPCTL_FLAG_STUCK): the kernel kept it after unregistering it


class KpctlMsg(genlmsg):  # type: ignore[misc]  # pyroute2 has no type information
    """One kpctl_kmod request or reply: the genl header and KPCTL_A_* attributes."""

    prefix = "KPCTL_A_"
    nla_map = (
        ("KPCTL_A_UNSPEC", "none"),
        ("KPCTL_A_PAD", "none"),
        ("KPCTL_A_ID", "uint32"),
        ("KPCTL_A_NAME", "asciiz"),
        ("KPCTL_A_SYMBOL", "asciiz"),
        ("KPCTL_A_OFFSET", "uint32"),
        ("KPCTL_A_KIND", "uint8"),
        ("KPCTL_A_MAXACTIVE", "uint32"),
        ("KPCTL_A_ENABLED", "uint8"),
        ("KPCTL_A_ADDR", "uint64"),
        ("KPCTL_A_HITS", "uint64"),
        ("KPCTL_A_POST_HITS", "uint64"),
        ("KPCTL_A_RET_HITS", "uint64"),
        ("KPCTL_A_NMISSED", "uint64"),
        ("KPCTL_A_RET_NMISSED", "uint64"),
        ("KPCTL_A_FLAGS", "uint32"),
        ("KPCTL_A_ITERATIONS", "uint32"),
        ("KPCTL_A_ELAPSED_NS", "uint64"),
        ("KPCTL_A_DEPTH", "uint8"),
        ("KPCTL_A_MODULE", "asciiz"),
    )


@dataclass(frozen=True)
class KmodProbe:
    """A probe held by the module, as a GET or ADD reply describes it.

    hits counts the pre_handler (entry probes) or the entry_handler (return probes);
    post_hits (the single-stepped instruction) only exists for entry probes planted as
    a breakpoint, not on an ftrace site; maxactive, ret_hits and ret_nmissed only for
    return probes.
    """

    id: int
    name: str
    symbol: str
    offset: int
    kind: Kind
    enabled: bool
    address: int
    flags: KprobeFlag
    hits: int
    nmissed: int
    post_hits: int | None = None
    maxactive: int | None = None
    ret_hits: int | None = None
    ret_nmissed: int | None = None
    module: str | None = None  # the module holding the probed code; None for vmlinux

    @property
    def target(self) -> str:
        where = f"{self.symbol}+{self.offset}" if self.offset else self.symbol
        return f"{where}%return" if self.kind is Kind.RETURN else where

    @property
    def missed(self) -> int:
        """All hits that did not reach a handler, as kprobe_profile adds them up."""
        return self.nmissed + (self.ret_nmissed or 0)


def request(cmd: Cmd, attrs: list[tuple[str, object]] | None = None) -> KpctlMsg:
    """A request message; the socket fills in the netlink header when it sends it."""
    msg = KpctlMsg()
    msg["cmd"] = cmd
    msg["version"] = VERSION
    msg["attrs"] = list(attrs or [])
    return msg


def add_request(
    symbol: str,
    name: str,
    *,
    offset: int = 0,
    kind: Kind = Kind.ENTRY,
    maxactive: int | None = None,
    enabled: bool = True,
) -> KpctlMsg:
    attrs: list[tuple[str, object]] = [
        ("KPCTL_A_NAME", name),
        ("KPCTL_A_SYMBOL", symbol),
        ("KPCTL_A_OFFSET", offset),
        ("KPCTL_A_KIND", int(kind)),
        ("KPCTL_A_ENABLED", int(enabled)),
    ]
    if maxactive is not None:
        attrs.append(("KPCTL_A_MAXACTIVE", maxactive))
    return request(Cmd.ADD, attrs)


def id_request(cmd: Cmd, probe_id: int) -> KpctlMsg:
    """REMOVE, ENABLE, DISABLE or GET of one probe."""
    return request(cmd, [("KPCTL_A_ID", probe_id)])


def probe_from_msg(msg: KpctlMsg) -> KmodProbe:
    get = msg.get_attr
    return KmodProbe(
        id=get("KPCTL_A_ID"),
        name=get("KPCTL_A_NAME"),
        symbol=get("KPCTL_A_SYMBOL"),
        offset=get("KPCTL_A_OFFSET"),
        kind=Kind(get("KPCTL_A_KIND")),
        enabled=bool(get("KPCTL_A_ENABLED")),
        address=get("KPCTL_A_ADDR"),
        flags=KprobeFlag(get("KPCTL_A_FLAGS")),
        hits=get("KPCTL_A_HITS"),
        nmissed=get("KPCTL_A_NMISSED"),
        post_hits=get("KPCTL_A_POST_HITS"),
        maxactive=get("KPCTL_A_MAXACTIVE"),
        ret_hits=get("KPCTL_A_RET_HITS"),
        ret_nmissed=get("KPCTL_A_RET_NMISSED"),
        module=get("KPCTL_A_MODULE") or None,
    )
