"""Building kpctl_kmod, without a kernel: the missing-headers error, the per-kernel copy
of the sources, and `kpctl kmod status` of a module that is not loaded."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpctl.cli.kmod import kmod
from kpctl.cli.main import cli
from kpctl.kmod import build


def test_missing_headers_name_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "modules_supported", lambda: True)
    with pytest.raises(build.KmodBuildError) as e:
        build.build("0.0.0-kpctl-test")
    assert "/lib/modules/0.0.0-kpctl-test/build" in e.value.message
    assert e.value.hint == "install the headers of this kernel (Debian's kernels: apt install linux-headers-0.0.0-kpctl-test)"


def test_sources_sync_into_a_build_dir(tmp_path: Path) -> None:
    dest = tmp_path / "6.1.0-test"
    assert build._sync_sources(build.SOURCE, dest)
    assert not build._sync_sources(build.SOURCE, dest)
    names = sorted(p.name for p in dest.iterdir())
    assert "Kbuild" in names and "Makefile" in names and "kpctl_genl.c" in names
    stale = dest / "gone.c"
    stale.write_text("")
    kbuild = dest / "Kbuild"
    os.utime(kbuild, (1, 1))
    (dest / "kpctl_kmod.o").write_text("")  # a build product stays
    build._sync_sources(build.SOURCE, dest)
    assert not stale.exists() and (dest / "kpctl_kmod.o").exists()
    # Unchanged content keeps its mtime, so make rebuilds nothing.
    assert kbuild.stat().st_mtime == 1


def test_a_module_newer_than_the_headers_is_not_rebuilt(tmp_path: Path) -> None:
    kdir, module, log = tmp_path / "build", tmp_path / "kpctl_kmod.ko", tmp_path / "build.log"
    kdir.mkdir()
    (kdir / "Makefile").write_text("")
    assert not build._up_to_date(module, log, kdir)  # never built
    module.write_text("")
    log.write_text("")
    os.utime(kdir / "Makefile", (module.stat().st_mtime - 10,) * 2)
    assert build._up_to_date(module, log, kdir)
    os.utime(kdir / "Makefile", (module.stat().st_mtime + 10,) * 2)  # new headers
    assert not build._up_to_date(module, log, kdir)


def test_status_when_not_loaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import kpctl.kmod

    monkeypatch.setattr(kpctl.kmod, "SYSFS", tmp_path / "no-module")
    monkeypatch.setattr(build, "BUILD_ROOT", tmp_path)
    monkeypatch.setattr(kpctl.kmod, "modules_supported", lambda: True)
    result = CliRunner().invoke(kmod, ["status"])
    assert result.exit_code == 0, result.output
    assert result.output == f"kpctl_kmod: not loaded (kernel {os.uname().release}, not built)\n"
    monkeypatch.setattr(kpctl.kmod, "modules_supported", lambda: False)
    assert CliRunner().invoke(kmod, ["status"]).output == (
        f"kpctl_kmod: not loaded (kernel {os.uname().release}, not built; this kernel cannot load modules)\n")


@pytest.mark.parametrize("command", [["build"], ["load"], ["unload"]])
def test_a_kernel_without_modules_is_named_as_such(command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "modules_supported", lambda: False)
    result = CliRunner().invoke(cli, ["kmod", *command])
    assert result.exit_code == 1
    assert result.output.startswith("Error: this kernel cannot load modules (it was built without CONFIG_MODULES)\n")
