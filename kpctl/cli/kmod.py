"""`kpctl kmod ...`: build, load, unload and inspect kpctl_kmod, the bundled kernel module.

kpctl.cli.main adds this group; like every kpctl command it imports its library code
(and with it pyroute2) only when it runs.
"""
from __future__ import annotations

from typing import Any

import click

from kpctl.cli.output import json_option, print_json, print_table, wide_option


@click.group(name="kmod")
def kmod() -> None:
    """Build, load and unload kpctl's own kernel module, kpctl_kmod.

    The module adds kprobes and kretprobes at run time over generic netlink
    (kpctl add --backend kmod) and reports their hits as trace events.

    \b
    Example:
      sudo kpctl kmod build && sudo kpctl kmod load && kpctl kmod status
    """


def _done(text: str, as_json: bool, **fields: object) -> None:
    if as_json:
        print_json(fields)
    else:
        click.echo(text)


@kmod.command(name="build")
@json_option
def build_module(as_json: bool) -> None:
    """Build the module against the running kernel's headers.

    The build directory is /var/tmp/kpctl-kmod/RELEASE: one per kernel.

    \b
    Example:
      sudo kpctl kmod build
    """
    from kpctl.kmod import build

    module = build.build().module
    _done(f"built {module}", as_json, built=str(module))


@kmod.command()
@click.option("--max-probes", type=click.IntRange(1, 4096), help="Most probes held at once (default 128).")
@json_option
def load(max_probes: int | None, as_json: bool) -> None:
    """Load the module built for the running kernel.

    \b
    Example:
      sudo kpctl kmod load --max-probes 256
    """
    from kpctl.kmod import loader

    loader.load(params={"max_probes": max_probes} if max_probes else None)
    _done("loaded kpctl_kmod", as_json, loaded="kpctl_kmod")


@kmod.command()
@json_option
def unload(as_json: bool) -> None:
    """Unload the module; it unregisters every probe it holds.

    \b
    Example:
      sudo kpctl kmod unload
    """
    from kpctl.backends.kmod import unload as unload_module

    unload_module()
    _done("unloaded kpctl_kmod", as_json, unloaded="kpctl_kmod")


def _probe_row(p: Any) -> dict[str, Any]:
    from kpctl.backends.kmod import state_names

    return {
        "id": p.id, "name": p.name, "target": p.target, "address": f"{p.address:#x}",
        "enabled": p.enabled, "hits": p.hits, "post_hits": p.post_hits, "ret_hits": p.ret_hits,
        "missed": p.missed, "maxactive": p.maxactive, "flags": ",".join(state_names(p)),
    }


@kmod.command()
@wide_option
@json_option
def status(as_json: bool) -> None:
    """Show whether the module is built and loaded, and the probes it holds.

    \b
    Example:
      sudo kpctl kmod status --json
    """
    from dataclasses import asdict

    from kpctl.kmod import loader, modules_supported
    from kpctl.kmod.client import KmodClient

    state = loader.status()
    rows: list[dict[str, Any]] = []
    if state.loaded:
        with KmodClient() as client:
            rows = [_probe_row(p) for p in client.dump()]
    if as_json:
        print_json({**asdict(state), "module": str(state.module) if state.module else None, "probes": rows})
        return
    built = f"built: {state.module}" if state.module else "not built"
    if not state.loaded:
        cannot = "" if modules_supported() else "; this kernel cannot load modules"
        click.echo(f"kpctl_kmod: not loaded (kernel {state.release}, {built}{cannot})")
        return
    stuck = sum("STUCK" in row["flags"].split(",") for row in rows)
    click.echo(f"kpctl_kmod: loaded (kernel {state.release}, {built}, max_probes {state.max_probes}, "
               f"max_instances {state.max_instances}, {len(rows)} probes)")
    if stuck:
        click.echo(f"kpctl_kmod: {stuck} probe{'s' * (stuck > 1)} STUCK: the kernel kept "
                   f"{'them' if stuck > 1 else 'it'} after unregistering (see dmesg); the module stays loaded")
    if rows:
        print_table(rows, list(rows[0]))
