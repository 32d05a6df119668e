"""Shared by the kpctl_kmod kernel tests (test_kmod_*.py): the module built once per
pytest session, a loaded module with a client, raw generic netlink for messages that
pyroute2 would never send, the workload, and the kernel log check.

Import the fixtures into a test module (`from kmod_fixtures import kmod`); the build is
cached here, at module level, because a session fixture imported into several test
modules would run once per module, and a build in a TCG guest takes minutes.
"""
from __future__ import annotations

import functools
import os
import platform
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require

# The harness's own list of kernel splats (it is standard library only), so that a
# test's share of the log is judged as the whole guest's is.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "guest"))
from harness import splats

from kpctl.kmod import build, loader
from kpctl.kmod.client import KmodClient
from kpctl.kmod.messages import KprobeFlag

TRACEFS = Path("/sys/kernel/tracing")
# The workload: a syscall nothing else on the guest makes, with a known result.
WORKLOAD_SYSCALL = "sched_get_priority_max"
WORKLOAD_RESULT = 99  # sched_get_priority_max(SCHED_FIFO)

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLMSGERR_ATTR_MSG = 1


def require_kmod_kernel() -> None:
    require(os.geteuid() == 0, "needs root")
    require(Path("/proc/modules").exists(), "kernel without loadable modules")
    require(Path("/sys/kernel/debug/kprobes").exists(), "kernel without kprobes (or debugfs not mounted)")
    headers = Path("/lib/modules") / build.kernel_release() / "build" / "Makefile"
    require(headers.exists(), f"no kernel headers at {headers.parent}")


@functools.cache
def built_module() -> build.BuildResult:
    return build.build()


TEST_MODULES = Path(__file__).resolve().parent / "modules"


@functools.cache
def built_test_modules() -> Path:
    """tests/kernel/modules/ (kpctl_target.ko, kpctl_post.ko) built for the running
    kernel, as kpctl_kmod is built (make only when a source changed); their folder."""
    release = build.kernel_release()
    dest = build.BUILD_ROOT / f"{release}-tests"
    kdir = Path("/lib/modules") / release / "build"
    log = dest / "build.log"
    if build._sync_sources(TEST_MODULES, dest) or not build._up_to_date(dest / "kpctl_post.ko", log, kdir):
        log.unlink(missing_ok=True)
        proc = subprocess.run(["make", "-C", str(dest), f"KDIR={kdir}"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, check=False)
        assert proc.returncode == 0, proc.stdout
        assert "warning:" not in proc.stdout, proc.stdout
        log.write_text(proc.stdout)
    return dest


def load_test_module(name: str) -> None:
    if not Path("/sys/module", name).exists():
        subprocess.run(["insmod", str(built_test_modules() / f"{name}.ko")], check=True)


def unload_test_module(name: str) -> None:
    subprocess.run(["rmmod", name], check=True)


def ensure_loaded(params: dict[str, int] | None = None) -> None:
    if not loader.is_loaded():
        loader.load(built_module().module, params)


def kernel_log() -> list[str]:
    return subprocess.run(["dmesg"], stdout=subprocess.PIPE, text=True, check=True).stdout.splitlines()


def splats_since(before: int) -> list[str]:
    return splats("\n".join(kernel_log()[before:]))


@pytest.fixture
def kmod() -> Iterator[KmodClient]:
    """A client of the loaded module; the test's probes are removed afterwards and the
    kernel log must stay free of splats."""
    require_kmod_kernel()
    ensure_loaded()
    before = len(kernel_log())
    with KmodClient() as client:
        yield client
    # A fresh client: the test may have reloaded the module, which renumbers the family.
    if loader.is_loaded():
        with KmodClient() as client:
            for probe in client.dump():
                if KprobeFlag.STUCK not in probe.flags:  # the kernel holds those for good
                    client.remove(probe.id)
    assert splats_since(before) == []


@pytest.fixture
def reload_after(kmod: KmodClient) -> Iterator[None]:
    """The test unloads the module; load it again, with its defaults, for the next test."""
    yield
    if loader.is_loaded():
        loader.unload()
    ensure_loaded()


def syscall_symbol(name: str) -> str:
    """The syscall's entry function, which has the arch's prefix (arch/*/include/asm/syscall_wrapper.h)."""
    prefix = {"x86_64": "__x64_sys_", "aarch64": "__arm64_sys_"}[platform.machine()]
    return prefix + name


def run_workload(times: int) -> None:
    for _ in range(times):
        assert os.sched_get_priority_max(os.SCHED_FIFO) == WORKLOAD_RESULT


@pytest.fixture
def trace_instance() -> Iterator[Path]:
    """A tracefs instance of the test's own with kpctl_kmod's events enabled."""
    inst = TRACEFS / "instances" / "kpctl_kmod_test"
    inst.mkdir()
    try:
        (inst / "events" / "kpctl_kmod" / "enable").write_text("1")
        yield inst
    finally:
        inst.rmdir()


def nla(attr_type: int, payload: bytes) -> bytes:
    head = struct.pack("=HH", 4 + len(payload), attr_type)
    return head + payload + bytes(-len(payload) % 4)


def genl_message(
    family: int, cmd: int, attrs: bytes = b"", *, seq: int = 1, flags: int = NLM_F_REQUEST | NLM_F_ACK,
    version: int = 1, reserved: int = 0,
) -> bytes:
    payload = struct.pack("=BBH", cmd, version, reserved) + attrs
    return struct.pack("=IHHII", 16 + len(payload), family, flags, seq, 0) + payload


class RawGenl:
    """A bare NETLINK_GENERIC socket: sends any bytes, returns the raw replies."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        self.sock.bind((0, 0))

    def close(self) -> None:
        self.sock.close()

    def exchange(self, data: bytes) -> list[bytes]:
        """Send one request; return every reply message up to its ack, error or dump end."""
        (seq,) = struct.unpack_from("=I", data, 8)
        self.sock.send(data)
        replies: list[bytes] = []
        while True:
            buf = self.sock.recv(65536)
            offset = 0
            while offset + 16 <= len(buf):
                length, msg_type, _flags, msg_seq = struct.unpack_from("=IHHI", buf, offset)
                msg = buf[offset : offset + length]
                offset += (length + 3) & ~3
                if msg_seq != seq:
                    continue
                replies.append(msg)
                if msg_type in (NLMSG_ERROR, NLMSG_DONE):
                    return replies


def nl_error(msg: bytes) -> tuple[int, str | None]:
    """The errno (0 for an ack) and the extack message of an NLMSG_ERROR or NLMSG_DONE."""
    _length, msg_type, flags = struct.unpack_from("=IHH", msg)
    (error,) = struct.unpack_from("=i", msg, 16)
    tlvs = 20
    if msg_type == NLMSG_ERROR:
        echoed = 16 if flags & NLM_F_CAPPED else struct.unpack_from("=I", msg, 20)[0]
        tlvs += (echoed + 3) & ~3
    text = None
    while flags & NLM_F_ACK_TLVS and tlvs + 4 <= len(msg):
        length, attr_type = struct.unpack_from("=HH", msg, tlvs)
        if length < 4:
            break
        if attr_type == NLMSGERR_ATTR_MSG:
            text = msg[tlvs + 4 : tlvs + length].rstrip(b"\0").decode()
        tlvs += (length + 3) & ~3
    return -error, text
