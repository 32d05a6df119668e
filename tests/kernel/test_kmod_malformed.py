"""Messages that no client would send, crafted byte by byte: missing, oversized, wrongly
typed and unknown attributes, a bad header, and thousands of random ones. Each gets an
error (never a crash), and the module keeps working."""
from __future__ import annotations

import errno
import random
import struct
from collections.abc import Iterator

import pytest
from kmod_fixtures import (
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    RawGenl,
    genl_message,
    kmod,  # noqa: F401 (fixture)
    nl_error,
    nla,
)

from kpctl.kmod.client import KmodClient
from kpctl.kmod.messages import Cmd, KpctlMsg

ATTR = {name: number for number, (name, _type) in enumerate(KpctlMsg.nla_map)}


def a(name: str, payload: bytes) -> bytes:
    return nla(ATTR[f"KPCTL_A_{name}"], payload)


def z(text: str) -> bytes:
    return text.encode() + b"\0"


def u32(value: int) -> bytes:
    return struct.pack("=I", value)


GOOD_ADD = a("NAME", z("kt_raw")) + a("SYMBOL", z("vfs_read"))


@pytest.fixture
def raw(kmod: KmodClient) -> Iterator[tuple[RawGenl, int]]:
    sock = RawGenl()
    yield sock, kmod.family_id
    sock.close()


def send(raw: tuple[RawGenl, int], cmd: int, attrs: bytes = b"", **header: int) -> tuple[int, str | None]:
    sock, family = raw
    *_, last = sock.exchange(genl_message(family, cmd, attrs, **header))
    return nl_error(last)


@pytest.mark.parametrize(
    ("cmd", "attrs", "code", "text"),
    [
        (Cmd.ADD, a("SYMBOL", z("vfs_read")), errno.EINVAL, "missing probe name"),
        (Cmd.ADD, a("NAME", z("kt_raw")), errno.EINVAL, "missing symbol"),
        (Cmd.REMOVE, b"", errno.EINVAL, "missing probe id"),
        (Cmd.GET, b"", errno.EINVAL, "missing probe id"),
        (Cmd.GET, a("ID", u32(0)), errno.ERANGE, None),
        (Cmd.GET, a("ID", b"\1\0"), errno.EINVAL, None),
        (Cmd.GET, a("ID", u32(1) + u32(1)), errno.EINVAL, None),
        (Cmd.ADD, a("NAME", b"kt_raw") + a("SYMBOL", z("vfs_read")), errno.EINVAL, None),
        (Cmd.ADD, a("NAME", z("kt_raw")) + a("SYMBOL", z("s" * 600)), errno.EINVAL, None),
        # Latin-1 letters pass the kernel's isalnum(), and are not UTF-8.
        (Cmd.ADD, a("NAME", b"kt_caf\xe9\0") + a("SYMBOL", z("vfs_read")), errno.EINVAL,
         "probe name must be [A-Za-z_][A-Za-z0-9_]*"),
        (Cmd.ADD, GOOD_ADD + a("KIND", b"\2"), errno.ERANGE, None),
        (Cmd.ADD, GOOD_ADD + a("ENABLED", b"\7"), errno.ERANGE, None),
        (Cmd.ADD, GOOD_ADD + a("HITS", struct.pack("=Q", 5)), errno.EINVAL, None),
        (Cmd.ADD, GOOD_ADD + nla(200, b""), errno.EINVAL, None),
        (Cmd.ADD, GOOD_ADD + nla(ATTR["KPCTL_A_OFFSET"] | 0x8000, u32(0)), errno.EINVAL, None),
        (Cmd.ADD, GOOD_ADD + struct.pack("=HH", 40, ATTR["KPCTL_A_OFFSET"]), errno.EINVAL, None),
    ],
)
def test_malformed_attributes(raw: tuple[RawGenl, int], cmd: int, attrs: bytes, code: int, text: str | None) -> None:
    got_code, got_text = send(raw, cmd, attrs)
    assert got_code == code
    assert got_text == text if text else got_text


def test_nonzero_reserved_header_byte(raw: tuple[RawGenl, int]) -> None:
    assert send(raw, Cmd.GET, a("ID", u32(1)), reserved=1)[0] == errno.EINVAL


def test_unknown_command(raw: tuple[RawGenl, int]) -> None:
    assert send(raw, 42)[0] == errno.EOPNOTSUPP


def test_thousands_of_random_messages(kmod: KmodClient, raw: tuple[RawGenl, int]) -> None:
    rng = random.Random(20261125)
    sock, family = raw
    for seq in range(1, 3001):
        attrs = b"".join(
            nla(rng.choice([rng.randrange(1, len(ATTR) + 2), rng.randrange(0x10000)]) & 0xFFFF,
                rng.randbytes(rng.choice([0, 1, 2, 4, 8, rng.randrange(64)])))
            for _ in range(rng.randrange(6))
        )
        if rng.random() < 0.1:
            attrs = attrs[: rng.randrange(len(attrs) + 1)]  # cut mid-attribute
        flags = NLM_F_REQUEST | rng.choice([NLM_F_ACK, NLM_F_DUMP])
        replies = sock.exchange(genl_message(
            family, rng.randrange(8), attrs, seq=seq, flags=flags,
            version=rng.randrange(3), reserved=rng.choice([0, 0, 0, rng.randrange(0x10000)]),
        ))
        assert struct.unpack_from("=H", replies[-1], 4)[0] in (NLMSG_ERROR, NLMSG_DONE)
    # Still serving, and nothing random got through as a probe.
    assert kmod.dump() == []
