"""A probe the kernel keeps after unregistering it is never freed: a third party's
kprobe with a post_handler (tests/kernel/modules/kpctl_post.ko) joins kpctl_kmod's on
one function, or is joined by it, in each of the four orders of arriving and leaving.

On an ftrace site the kernel arms the shared probe through one ftrace_ops and, once a
post_handler joined, disarms it through the other: that fails (the kernel warns
"Failed to disarm kprobe-ftrace", once per boot) and the probe stays in the kernel's
table, its handlers still called. kpctl_kmod must then keep it: listed as STUCK,
REMOVE/ENABLE/DISABLE refused with EBUSY and the reason, the module pinned. Nothing
else may splat, then or when the function runs afterwards. Where probes are not on
ftrace sites (arm64), every order ends clean.
"""
from __future__ import annotations

import errno
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest
from click.testing import CliRunner
from kmod_fixtures import kernel_log, kmod, load_test_module, splats_since  # noqa: F401

from kpctl.cli.kmod import kmod as kmod_cli
from kpctl.cli.main import cli
from kpctl.kmod.client import KmodClient, KmodError
from kpctl.kmod.messages import KprobeFlag

POST = Path("/sys/module/kpctl_post/parameters")
TARGET = Path("/sys/module/kpctl_target/parameters")
WARNING = "Failed to disarm kprobe-ftrace"


class Order(NamedTuple):
    function: str
    first: str  # "kpctl" or "post": who arrives first
    leaves_first: str


# The clean orders first: a failed disarm leaves the kernel's count of ftrace_ops users off.
ORDERS = [
    Order("kpctl_target_0", "post", "post"),
    Order("kpctl_target_1", "post", "kpctl"),
    Order("kpctl_target_2", "kpctl", "kpctl"),
    Order("kpctl_target_3", "kpctl", "post"),
]


def kmsg(line: str) -> None:
    Path("/dev/kmsg").write_text(line + "\n")


def post_probes() -> dict[str, tuple[int, bool]]:
    """kpctl_post's probes: symbol -> (hits, stuck)."""
    rows = [line.split() for line in (POST / "probes").read_text().splitlines()]
    return {row[0]: (int(row[1]), row[-1] == "stuck") for row in rows}


def poke() -> None:
    (TARGET / "poke").write_text("1")


class Outcome(NamedTuple):
    on_ftrace: bool
    kpctl_stuck: bool
    post_stuck: bool


def run(kmod: KmodClient, order: Order) -> Outcome:  # noqa: F811
    name = f"kt_{order.function}"

    def arrive(who: str) -> None:
        if who == "kpctl":
            kmod.add(order.function, name)
        else:
            (POST / "probe").write_text(order.function)

    def leave(who: str) -> None:
        if who == "post":
            (POST / "unprobe").write_text(order.function)
            return
        (probe,) = [p for p in kmod.dump() if p.name == name]
        try:
            kmod.remove(probe.id)
        except KmodError as e:
            assert e.errno == errno.EBUSY and "the kernel" in e.message and "it stays" in e.message, e

    second = "post" if order.first == "kpctl" else "kpctl"
    arrive(order.first)
    arrive(second)
    poke()
    (mine,) = [p for p in kmod.dump() if p.name == name]
    assert mine.hits == 1 and post_probes()[order.function][0] == 1, (order, mine, post_probes())
    leave(order.leaves_first)
    leave(second if order.leaves_first == order.first else order.first)
    left = [p for p in kmod.dump() if p.name == name]
    return Outcome(KprobeFlag.FTRACE in mine.flags, bool(left), post_probes().get(order.function, (0, False))[1])


@pytest.mark.leaves_stuck_probes
def test_a_probe_the_kernel_keeps_is_kept_shown_and_refused_in_each_order(kmod: KmodClient) -> None:  # noqa: F811
    load_test_module("kpctl_target")
    load_test_module("kpctl_post")
    before = len(kernel_log())
    kmsg(f"kpctl-test: expect warning: {WARNING}")
    outcomes = {order: run(kmod, order) for order in ORDERS}
    kmsg("kpctl-test: expected warnings end")
    on_ftrace = {o.on_ftrace for o in outcomes.values()}
    assert len(on_ftrace) == 1, outcomes
    if on_ftrace == {False}:
        assert not any(o.kpctl_stuck or o.post_stuck for o in outcomes.values()), outcomes
        assert splats_since(before) == []
        return

    # kpctl's probe first, the post_handler's leaving first: kpctl's is the one kept.
    kept = Order("kpctl_target_3", "kpctl", "post")
    assert [order for order, o in outcomes.items() if o.kpctl_stuck] == [kept], outcomes
    (stuck,) = kmod.dump()
    assert KprobeFlag.STUCK in stuck.flags and stuck.name == f"kt_{kept.function}"
    for refused in (kmod.remove, kmod.enable, kmod.disable):
        with pytest.raises(KmodError, match="the kernel still holds this probe") as e:
            refused(stuck.id)
        assert e.value.errno == errno.EBUSY
    log = "\n".join(kernel_log()[before:])
    assert f"kpctl_kmod: the kernel kept probe {stuck.name} after unregistering it" in log
    listed = CliRunner().invoke(cli, ["list"])
    assert "STUCK" in listed.output, listed.output
    status = CliRunner().invoke(kmod_cli, ["status"])
    assert "1 probe STUCK: the kernel kept it after unregistering" in status.output, status.output
    # The module it pins cannot go; the kernel still calls the kept probe, safely.
    rmmod = subprocess.run(["rmmod", "kpctl_kmod"], check=False, capture_output=True, text=True)
    assert rmmod.returncode != 0 and "in use" in rmmod.stderr, rmmod
    hits = stuck.hits
    poke()
    (after,) = kmod.dump()
    assert after.hits == hits + 1
    assert splats_since(before) == []
