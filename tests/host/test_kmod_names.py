"""How the kmod backend names what it sends the module and what it shows: MOD:SYM both
ways, a name kallsyms has several times refused as kprobe_events refuses it, and a
probe whose module went away."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest

from kpctl.backends.kmod import _unique_symbol, module_symbol, state_names, to_probe
from kpctl.kmod.client import KmodError
from kpctl.kmod.messages import Kind, KmodProbe, KprobeFlag
from kpctl.model import Probe, Target
from kpctl.symbols import KernelSymbols

KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81200000 T vfs_read
ffffffff81300000 t show_map
ffffffff81310000 t show_map
ffffffffc0700000 t kpctl_twin\t[kpctl_post]
ffffffffc0710000 t kpctl_twin\t[kpctl_target]
ffffffffc0720000 t show_map\t[kpctl_target]
"""


@pytest.fixture
def symbols(tmp_path: Path) -> KernelSymbols:
    (tmp_path / "kallsyms").write_text(KALLSYMS)
    return KernelSymbols(tmp_path / "kallsyms", tmp_path / "blacklist", tmp_path / "available_filter_functions")


def module_probe(symbol: str, flags: KprobeFlag, module: str | None) -> KmodProbe:
    return KmodProbe(id=1, name="p", symbol=symbol, offset=0, kind=Kind.ENTRY, enabled=True, address=0,
                     flags=flags, hits=0, nmissed=0, module=module)


def test_a_unique_name_goes_as_it_is_and_a_module_one_as_mod_colon_sym(symbols: KernelSymbols) -> None:
    assert _unique_symbol(symbols, Probe("p", Target(symbol="vfs_read"))) == "vfs_read"
    assert _unique_symbol(symbols, Probe("p", Target(symbol="kpctl_twin", module="kpctl_target"))) == "kpctl_target:kpctl_twin"


def test_a_name_in_two_modules_is_refused_naming_both_addresses_and_how_to_name_one(symbols: KernelSymbols) -> None:
    with pytest.raises(KmodError) as e:
        _unique_symbol(symbols, Probe("p", Target(symbol="kpctl_twin")))
    assert e.value.errno == errno.EADDRNOTAVAIL
    assert e.value.message == ("kpctl_twin is not unique: 2 functions have this name "
                               "(0xffffffffc0700000 [kpctl_post], 0xffffffffc0710000 [kpctl_target])")
    assert e.value.hint == "name one as kpctl_post:kpctl_twin or kpctl_target:kpctl_twin"


def test_a_name_vmlinux_has_twice_says_only_an_address_tells_them_apart(symbols: KernelSymbols) -> None:
    with pytest.raises(KmodError) as e:
        _unique_symbol(symbols, Probe("p", Target(symbol="show_map")))
    assert e.value.message.startswith("show_map is not unique: 3 functions have this name (0xffffffff81300000, ")
    assert e.value.hint == ("name one as kpctl_target:show_map; the module takes no bare address: "
                            "use --backend tracefs with one")


def test_mod_colon_sym_comes_back_from_the_module_as_a_target_with_its_module() -> None:
    target = to_probe(module_probe("kpctl_target:kpctl_twin", KprobeFlag(0), "kpctl_target")).target
    assert (target.module, target.symbol) == ("kpctl_target", "kpctl_twin")
    assert module_symbol(target) == "kpctl_target:kpctl_twin"


def test_a_probe_whose_module_went_says_which_and_a_kept_one_says_stuck() -> None:
    gone = module_probe("kpctl_target_fn", KprobeFlag.GONE | KprobeFlag.DISABLED, "kpctl_target")
    assert state_names(gone) == ("gone: kpctl_target unloaded", "DISABLED")
    stuck = module_probe("vfs_read", KprobeFlag.FTRACE | KprobeFlag.STUCK, None)
    assert state_names(stuck) == ("FTRACE", "STUCK")
