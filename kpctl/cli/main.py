"""kpctl's commands: each parses its options, calls the library, prints. Library errors
(KpctlError) become one ``Error: ...`` line plus an optional hint, and exit status 1.

Imports beyond click stay inside the commands: `kpctl --help` and `kpctl list` must
start fast, and pyroute2 (the kmod backend) alone costs more than all of kpctl.
"""
from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from kpctl import KPCTL_GROUP, __version__
from kpctl.cli.kmod import kmod
from kpctl.cli.output import (
    VERBOSE_META,
    F,
    KpctlGroup,
    Renamed,
    Seconds,
    json_option,
    output_options,
    print_json,
    print_table,
    wide_option,
)
from kpctl.errors import KpctlError, UsageError, check_probe_names
from kpctl.limits import MAX_MAXACTIVE
from kpctl.registry import BACKEND_TYPES, DEFAULT_BACKEND

if TYPE_CHECKING:
    from kpctl.aggregation.counts import Aggregation, Count
    from kpctl.backends.base import ProbeInfo
    from kpctl.gc import Collected
    from kpctl.hits import HitStream
    from kpctl.manager import ProbeManager
    from kpctl.model import Probe
    from kpctl.owners import Owners
    from kpctl.tracefs import Tracefs
    from kpctl.watch import HitSource


# A task's name as the kernel keeps it: TASK_COMM_LEN (16) bytes with the NUL.
COMM_BYTES = 15


def _checked_group(ctx: click.Context, param: click.Parameter, group: str) -> str:
    from kpctl.model import check_name

    check_name(group, "group")  # the same answer whatever the kernel (a path such as ../x)
    return group


def group_option(f: F) -> F:
    return click.option(
        "--group", "-g", default=KPCTL_GROUP, show_default=True, envvar="KPCTL_GROUP", callback=_checked_group,
        help="Event group of kpctl's probes.",
    )(f)


def probe_options(f: F) -> F:
    """Options that define a probe: shared by add and trace."""
    for option in reversed([
        click.argument("target"),
        click.argument("fetchargs", nargs=-1),
        click.option("--ret", "-r", is_flag=True, help="A return probe (kretprobe) on the function."),
        click.option("--maxactive", type=click.IntRange(0, MAX_MAXACTIVE), help="Return probes: concurrent instances (rN:)."),
        click.option("--name", "-n", help="Event name (default: from the target, e.g. vfs_read, vfs_read_ret)."),
        click.option("--filter", "filter_text", help="Kernel event filter, e.g. 'dfd == -100'."),
    ]):
        f = option(f)
    return f


class WatchOptions(NamedTuple):  # not a dataclass: building one costs start-up time
    """What watch_options() parsed: which hits, how long, printed how."""
    max_hits: int | None
    duration: float | None
    pid: int | None
    tid: int | None
    comm: str | None
    command: str | None
    as_json: bool


def watch_options(f: Callable[..., None]) -> Callable[..., None]:
    """Options that select and print hits, shared by watch and trace: the command gets
    them as one WatchOptions, its `watching` argument."""
    @functools.wraps(f)
    def command(count: int | None, duration: float | None, pid: int | None, tid: int | None, comm: str | None,
                command: str | None, as_json: bool, **kwargs: Any) -> None:
        if sum(x is not None for x in (pid, tid, command)) > 1:  # before trace adds anything
            raise UsageError("give one of --pid, --tid and --command")
        f(watching=WatchOptions(count, duration, pid, tid, comm, command, as_json), **kwargs)

    for option in reversed([
        click.option("--count", type=click.IntRange(1), help="Stop after this many hits."),
        click.option("--duration", "-d", type=Seconds(), help="Stop after this many seconds."),
        click.option("--pid", "-p", type=int, help="Only hits of this process (all its threads)."),
        click.option("--tid", type=int, help="Only hits of this thread."),
        click.option("--comm", help=f"Only hits of tasks with this name (the kernel keeps {COMM_BYTES} bytes of it)."),
        click.option("--command", "-c", help="Run this command and show only its hits; stop when it ends (bpftrace -c)."),
        json_option,
    ]):
        command = option(command)
    return command


def counting_options(f: F) -> F:
    """-i, -d and --engine, shared by count, hist, latency and stacks."""
    from kpctl.counting import ENGINES

    for option in reversed([
        click.option("--engine", type=click.Choice(list(ENGINES)),
                     help="What keeps the counts: " + "; ".join(f"{e.name}: {e.summary}" for e in ENGINES.values())
                     + ". Default: the first that works here."),
        click.option("--interval", "-i", type=Seconds(), help="Print the counts of each interval of SECS."),
        click.option("--duration", "-d", type=Seconds(), help="Stop after this many seconds."),
    ]):
        f = option(f)
    return f


def max_functions_option(f: F) -> F:
    """The cap on what globs may name, shared by add and count (--max-probes before:
    the module's own max_probes is kmod load's)."""
    return click.option("--max-functions", type=click.IntRange(1), default=1000, show_default=True,
                        help="Most functions the globs may name.")(f)


# One help for each option that more than one command takes (what a command does with
# it beyond that is in its own help).
BY_HELP = "Split the counts by pid, comm, cpu, stack, or a fetch argument NAME=FETCH[:TYPE]."
TOP_HELP = "Only the N biggest counts."
DRY_RUN_HELP = "Say what would be done, and change nothing."


def backend_option(f: F) -> F:
    return click.option(
        "--backend", "backend_name", type=click.Choice([t.name for t in BACKEND_TYPES]),
        default=DEFAULT_BACKEND.name, show_default=True,
        help="; ".join(f"{t.name}: {t.summary}" for t in BACKEND_TYPES) + ".",
    )(f)


def open_tracefs() -> Tracefs:
    from kpctl.tracefs import Tracefs, find_tracefs

    return Tracefs(find_tracefs(say=say_on_stderr))


def say_on_stderr(text: str) -> None:
    click.echo(text, err=True)


def open_probes(group: str, also: Sequence[str] = ()) -> ProbeManager:
    """kpctl's probes of group in every backend usable here (and those of also, whose
    probes live only in this process)."""
    from kpctl.manager import ProbeManager

    return ProbeManager.open(open_tracefs(), group, also)


def say_each(done: str, group: str, names: Sequence[str], as_json: bool) -> None:
    if as_json:
        print_json({"group": group, done: list(names)})
        return
    for name in names:
        click.echo(f"{done} {group}/{name}")


def probe_row(info: ProbeInfo, owners: Owners | None = None, group: str = KPCTL_GROUP) -> dict[str, Any]:
    from kpctl.sessions import session_of

    probe = info.probe
    # The module's probes have no group of their own: their records are under the one asked for.
    owner: object = owners.owner(probe.group or group, info.name) if owners is not None else None
    if owner is None:  # made by a kpctl process for itself (count, bench, ...), named so
        owner = session_of(info.name, probe.group or group) or session_of(probe.group or group)
    return {
        "name": info.name,
        "group": probe.group,
        "backend": info.backend,
        "kind": "return" if probe.is_return else "entry",
        "target": str(probe.target),
        "maxactive": probe.maxactive,
        "args": " ".join(map(str, probe.args)),
        "enabled": info.enabled,
        "filter": info.filter or "",
        "kprobe": ",".join(info.kprobe_flags),
        "owner": str(owner) if owner is not None else "",
        "definition": str(probe),
    }


@click.group(cls=KpctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kpctl")
@click.option("--verbose", "-v", is_flag=True, help="With an error, show its details too (a BPF verifier's log).")
@wide_option
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Manage Linux kprobes and kretprobes through tracefs, and watch their hits.

    \b
    Example:
      sudo kpctl add do_sys_openat2 'dfd=$arg1:s32' 'path=+0($arg2):ustring'
      sudo kpctl watch --count 5
      sudo kpctl rm --all
      sudo kpctl --wide doctor
    """
    ctx.meta[VERBOSE_META] = verbose


@cli.command(cls=Renamed, renamed={"--max-probes": "--max-functions"})
@probe_options
@click.option("--disabled", is_flag=True, help="Define the probes without enabling them.")
@max_functions_option
@click.option("--dry-run", is_flag=True, help=DRY_RUN_HELP)
@backend_option
@group_option
@json_option
def add(
    target: str, fetchargs: tuple[str, ...], ret: bool, maxactive: int | None, name: str | None,
    filter_text: str | None, max_functions: int, disabled: bool, dry_run: bool, backend_name: str, group: str,
    as_json: bool,
) -> None:
    """Add a probe on TARGET that records FETCHARGS at each hit.

    TARGET is SYMBOL, SYMBOL+OFFSET, MODULE:SYMBOL, 0xADDRESS or SYMBOL%return, or a
    shell glob of functions (the probeable ones, as kpctl funcs lists them); several
    targets separated by commas are added together, all or none, with the same
    FETCHARGS. A FETCHARG is [NAME=]FETCH[:TYPE] as in the kernel's kprobetrace.rst.
    --dry-run prints what would be asked of the kernel, and where each probe would sit.

    \b
    Examples:
      sudo kpctl add do_sys_openat2 'dfd=$arg1:s32' 'path=+0($arg2):ustring'
      sudo kpctl add --ret do_sys_openat2 'fd=$retval:s32'
      sudo kpctl add vfs_read,vfs_write 'count=$arg3:u64'
      sudo kpctl add --backend kmod --ret do_sys_openat2
      sudo kpctl add --dry-run vfs_read+5 'count=$arg3:u64'
      sudo kpctl add 'vfs_*' --disabled
    """
    from kpctl.kmod import modules_supported
    from kpctl.manager import expand_targets, is_glob
    from kpctl.model import probes_from_targets

    texts = [t for t in target.split(",") if t]
    # Everything a kernel is not needed for is checked first, the same way on every machine.
    literal = [t for t in texts if not is_glob(t)]
    checked = probes_from_targets(",".join(literal), fetchargs, ret, maxactive, name, group) if literal else []
    try:
        manager = open_probes(group)
        if dry_run:
            manager.backend(backend_name)
    except KpctlError as e:
        if not dry_run or len(checked) < len(texts):
            raise
        # No kernel to ask (a laptop, a build machine): what can be checked was.
        click.echo(f"kpctl: checked the spec only: {e.message}", err=True)
        print_dry_run(requests_without_kernel(checked, group, enable=not disabled, event_filter=filter_text),
                      checked, [None] * len(checked), as_json)
        return
    targets, left = expand_targets(manager.tracefs.symbols, texts, max_functions)
    if left:
        click.echo(f"kpctl: the glob leaves out {len(left)} functions (kpctl funcs tells why), e.g. "
                   + "; ".join(f"{n}: {why}" for n, why in list(left.items())[:3]), err=True)
    probes = probes_from_targets(",".join(targets), fetchargs, ret, maxactive, name, group)
    can_load = modules_supported(manager.tracefs.proc)
    for module in manager.unloaded_modules(probes):
        fate = ("its probes arm when it loads, and never fire until then" if can_load
                else "this kernel cannot load modules, so its probes never fire")
        click.echo(f"kpctl: module {module} is not loaded: {fate} (bpftrace's kprobe:FUNC is plain FUNC here)", err=True)
    if dry_run:
        requests, addresses = manager.dry_run(probes, enable=not disabled, event_filter=filter_text, backend=backend_name)
        print_dry_run(requests, probes, addresses, as_json)
        return
    infos = manager.add(probes, enable=not disabled, event_filter=filter_text, backend=backend_name)
    if as_json:
        print_json([probe_row(i) for i in infos])
        return
    for info in infos:
        via = "" if info.backend == DEFAULT_BACKEND.name else f" ({info.backend})"
        click.echo(f"added {group}/{info.name}{via}: {info.probe}")


def requests_without_kernel(probes: Sequence[Probe], group: str, *, enable: bool, event_filter: str | None) -> list[str]:
    """What add would ask of a kernel, where there is none to ask: the tracefs backend's
    lines (the other backends take the same probes through their own interfaces)."""
    from kpctl.backends.tracefs import TracefsBackend

    return TracefsBackend.requests_for(probes, group, enable=enable, event_filter=event_filter)


def print_dry_run(requests: Sequence[str], probes: Sequence[Probe], addresses: Sequence[int | None],
                  as_json: bool) -> None:
    places = [f"{a:#x}" if a is not None else None for a in addresses]
    if as_json:
        print_json({"requests": list(requests), "probes": [
            {"name": p.event, "target": str(p.target), "address": a} for p, a in zip(probes, places, strict=True)]})
        return
    for line in requests:
        click.echo(line)
    for probe, place in zip(probes, places, strict=True):
        click.echo(f"# {probe.event}: {probe.target} at {place or 'an address kallsyms does not give'}")


@cli.command(name="list")
@group_option
@wide_option
@json_option
def list_probes(group: str, as_json: bool) -> None:
    """List kpctl's probes and their state.

    \b
    Example:
      sudo kpctl list --json
    """
    from kpctl.owners import Owners

    rows = [probe_row(i, Owners(), group) for i in open_probes(group).list_probes()]
    if as_json:
        print_json(rows)
    elif rows:
        print_table(rows, ["name", "backend", "kind", "target", "args", "enabled", "filter", "kprobe", "owner"])
    else:
        say_no_probes(group)


def say_no_probes(group: str, what: str = "probes") -> None:
    """The one answer of list, stats, rm --all and apply --delete when there is nothing:
    a line on stderr, exit status 0."""
    click.echo(f"no {what} in group {group}", err=True)


def _names_given(ctx: click.Context, param: click.Parameter, names: tuple[str, ...]) -> tuple[str, ...]:
    if any(not name for name in names):
        raise click.BadParameter("a probe name cannot be empty")
    return names


@cli.command()
@click.argument("names", nargs=-1, callback=_names_given)
@click.option("--all", "remove_all", is_flag=True, help="Remove every probe of kpctl's group.")
@group_option
@json_option
def rm(names: tuple[str, ...], remove_all: bool, group: str, as_json: bool) -> None:
    """Remove probes (each is disabled first). A NAME may be a shell glob.

    \b
    Examples:
      sudo kpctl rm do_sys_openat2
      sudo kpctl rm 'vfs_*'
      sudo kpctl rm --all
    """
    if names and remove_all:
        raise click.UsageError("give probe NAMEs or --all, not both")
    if not names and not remove_all:
        raise click.UsageError("give probe NAMEs or --all")
    manager = open_probes(group)
    if remove_all:
        names = tuple(manager.remove_all())
        if not names and not as_json:
            say_no_probes(group)
    else:
        names = tuple(manager.expand(names))
        manager.remove(names)
    say_each("removed", group, names, as_json)


@cli.command()
@click.argument("names", nargs=-1, required=True, callback=_names_given)
@group_option
@json_option
def enable(names: tuple[str, ...], group: str, as_json: bool) -> None:
    """Enable probes: their hits reach watch. A NAME may be a shell glob.

    \b
    Examples:
      sudo kpctl enable do_sys_openat2
      sudo kpctl enable 'vfs_*'
    """
    manager = open_probes(group)
    names = tuple(manager.expand(names))
    manager.enable(names)
    say_each("enabled", group, names, as_json)


@cli.command()
@click.argument("names", nargs=-1, required=True, callback=_names_given)
@group_option
@json_option
def disable(names: tuple[str, ...], group: str, as_json: bool) -> None:
    """Disable probes: their hits no longer reach watch. A NAME may be a shell glob.

    \b
    Examples:
      sudo kpctl disable do_sys_openat2
      sudo kpctl disable 'vfs_*'
    """
    manager = open_probes(group)
    names = tuple(manager.expand(names))
    manager.disable(names)
    say_each("disabled", group, names, as_json)


@cli.command()
@group_option
@wide_option
@output_options
@click.option("--textfile", help="Write the Prometheus text to this file at once (node_exporter's textfile collector); "
              "it must be a regular file or not exist.")
def stats(group: str, output: str, textfile: str | None) -> None:
    """Hits and misses per probe, from the kernel's counts (kprobe_profile, the module).

    \b
    Examples:
      sudo kpctl stats
      sudo kpctl stats --format prometheus
      sudo kpctl stats --textfile /var/lib/node_exporter/textfile/kpctl.prom
    """
    if textfile is not None:
        from kpctl.metrics import check_textfile

        if not textfile:
            raise UsageError("--textfile needs a path")
        given = click.get_current_context().params
        if given["as_json"] or given["output"] is not None:
            raise UsageError("--textfile writes the Prometheus text: give no --json or --format with it")
        check_textfile(Path(textfile))  # before anything is read: a bad path changes nothing
    found = open_probes(group).stats()
    if not found and textfile is None and output == "table":
        say_no_probes(group)
        return
    if textfile is not None or output == "prometheus":
        from kpctl.metrics import Metric, exposition, write_textfile

        def samples(field: str) -> list[tuple[dict[str, str], float]]:
            return [({"group": group, "probe": s.name, "backend": s.backend}, getattr(s, field)) for s in found]

        text = exposition([
            Metric("kpctl_probe_hits_total", "counter", "Hits of a kpctl probe since it was added.", samples("hits")),
            Metric("kpctl_probe_misses_total", "counter",
                   "Hits a kpctl probe could not record (return probe instances short, reentrancy).", samples("misses")),
        ])
        if textfile is not None:
            write_textfile(Path(textfile), text)
        else:
            click.echo(text, nl=False)
        return
    rows = [{"name": s.name, "backend": s.backend, "hits": s.hits, "misses": s.misses} for s in found]
    if output == "json":
        print_json(rows)
    else:
        print_table(rows, ["name", "backend", "hits", "misses"])


def run_watch(probes: ProbeManager, names: Sequence[str], watching: WatchOptions, clear: bool = False) -> None:
    """Print hits until --count, --duration, the end of --command, Ctrl-C or SIGTERM;
    then a summary on stderr. Hits recorded since the probes were enabled and not yet
    read come first, as from trace_pipe itself, unless clear."""
    from kpctl.hits import HitStream
    from kpctl.signals import StopRequested, stop_on_sigterm
    from kpctl.watch import ProcessThreads, pump

    comm = watching.comm
    if comm is not None and len(comm.encode()) > COMM_BYTES:
        kept = comm.encode()[:COMM_BYTES].decode(errors="ignore")
        click.echo(f"kpctl: the kernel keeps {COMM_BYTES} bytes of a task's name: --comm {comm} matches {kept}", err=True)
        comm = kept
    infos = probes.list_probes()
    check_probe_names(names, {i.name for i in infos}, f"group {probes.group}")
    watched = [i for i in infos if i.enabled and (not names or i.name in names)]
    if not watched:
        raise KpctlError("no enabled probe to watch", "add one (kpctl add SYMBOL) or enable one (kpctl enable NAME)"
                         if probes.backends else "and none can be added here: kpctl doctor says what the kernel lacks")
    threads: ProcessThreads | set[str] | None = None
    if watching.pid is not None:
        threads = ProcessThreads(watching.pid)
    elif watching.tid is not None:
        threads = {str(watching.tid)}
    stream = HitStream(
        sys.stdout, [i.probe for i in infos], as_json=watching.as_json, events=names, threads=threads, comm=comm,
        own_pid=os.getpid(), count=watching.max_hits, backend_of={i.name: i.backend for i in infos},
        namers=probes.probe_namers(),
    )
    ended = ""
    with stop_on_sigterm(), probes.reading(drop_unread=clear, backends={i.backend for i in watched}) as sources:
        try:
            # The header (with --json, a line on stderr) goes out once hits are being
            # collected: whoever waits for it (a script, a test) may start the activity
            # it wants to see, or stop us.
            if watching.as_json:
                click.echo(f"kpctl: watching {len(watched)} probe{'s' * (len(watched) > 1)}; Ctrl-C ends", err=True)
            else:
                sys.stdout.write(stream.HEADER)
                sys.stdout.flush()
            if watching.command is None:
                pump(sources, stream, watching.duration)
            else:
                ended = run_command_watched(watching.command, sources, stream, watching.duration)
        except (KeyboardInterrupt, StopRequested):
            pass
    click.echo(stream.summary() + ended, err=True)


def run_command_watched(command: str, sources: Sequence[HitSource], stream: HitStream, duration: float | None) -> str:
    """Run command, feed stream the hits of its process until it ends (and a moment
    more, for hits still on their way) or duration passes; what became of it."""
    import shlex
    import subprocess
    import time

    from kpctl.watch import ProcessThreads, pump

    try:
        proc = subprocess.Popen(shlex.split(command))
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot run {command}: {e}") from None
    stream.only_threads(ProcessThreads(proc.pid))
    started = time.monotonic()
    try:
        pump(sources, stream, duration, each_round=lambda: proc.poll() is None)
        left = None if duration is None else duration - (time.monotonic() - started)
        if proc.poll() is not None and (left is None or left > 0):
            pump(sources, stream, min(0.5, left) if left is not None else 0.5)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    return f"; {command} exited with status {proc.returncode}"


@cli.command()
@click.argument("names", nargs=-1, callback=_names_given)
@watch_options
@click.option("--clear", is_flag=True, help="Drop the hits recorded before this watch started.")
@group_option
def watch(names: tuple[str, ...], watching: WatchOptions, clear: bool, group: str) -> None:
    """Print hits of kpctl's enabled probes (or only NAMEs) as they happen.

    Each hit shows time, CPU, thread id, task name, probe, where it hit (sym+off, or
    caller <- function for a return probe) and its arguments. Ctrl-C ends it with a
    summary (hits, and events the kernel lost when its buffer was full). Hits recorded
    since the probes were enabled that no watch has read yet come first (--clear drops
    them). Watches started side by side each see every hit.

    \b
    Examples:
      sudo kpctl watch --count 10
      sudo kpctl watch do_sys_openat2 --comm cat --json
      sudo kpctl watch --clear --duration 5
      sudo kpctl watch -c 'cat /etc/hostname'
    """
    probes = open_probes(group)
    collect_garbage(probes.tracefs)  # a killed watch's instance, among others
    run_watch(probes, names, watching, clear)


@cli.command()
@probe_options
@watch_options
@backend_option
@group_option
def trace(
    target: str, fetchargs: tuple[str, ...], ret: bool, maxactive: int | None, name: str | None,
    filter_text: str | None, watching: WatchOptions, backend_name: str, group: str,
) -> None:
    """Add a probe, print its hits, and remove it on exit, Ctrl-C or SIGTERM.

    \b
    Examples:
      sudo kpctl trace do_sys_openat2 'path=+0($arg2):ustring' --count 3
      sudo kpctl trace vfs_read 'count=$arg3:u64' -c 'cat /etc/hostname'
      sudo kpctl trace --backend bpf vfs_read 'size=$arg3:u64' --count 5
    """
    from kpctl.manager import short_lived
    from kpctl.model import probes_from_targets
    from kpctl.owners import Owners
    from kpctl.registry import backend_type
    from kpctl.signals import StopRequested

    manager = open_probes(group, also=[backend_name])
    collect_garbage(manager.tracefs)
    probes = probes_from_targets(target, fetchargs, ret, maxactive, name, group)
    # Probes that die with this process need no record for gc.
    records = (Owners(), "trace", backend_name) if backend_type(backend_name).outlives_kpctl else None
    try:
        with short_lived(manager.adding_to(backend_name), probes, event_filter=filter_text, records=records):
            run_watch(manager, [p.event for p in probes if p.event], watching)
    except StopRequested:
        pass  # SIGTERM while adding: the probes are gone


@cli.command(cls=Renamed, renamed={"--max-probes": "--max-functions"})
@click.argument("patterns", nargs=-1, required=True)
@click.option("--by", help=BY_HELP)
@counting_options
@click.option("--top", type=click.IntRange(1), help=TOP_HELP)
@max_functions_option
@wide_option
@output_options
def count(patterns: tuple[str, ...], by: str | None, interval: float | None, duration: float | None,
          engine: str | None, top: int | None, max_functions: int, output: str) -> None:
    """Count hits per function in the kernel (bcc's funccount), until Ctrl-C or --duration.

    PATTERNs are functions or shell globs of them (the probeable ones, as kpctl funcs
    lists them). Counting is done in the kernel, by kpctl's BPF programs (--engine bpf,
    no compiler needed), by bcc's (--engine bcc) or by hist triggers on short-lived
    kprobe events (--engine tracefs), on probes of this
    command's own: nothing is streamed, and nothing is left afterwards. --json prints
    JSON Lines, one object per table.

    \b
    Examples:
      sudo kpctl count 'vfs_*' -d 5
      sudo kpctl count vfs_read --by comm -i 1
      sudo kpctl count do_sys_openat2 --by stack --top 3 -d 10
      sudo kpctl count --engine tracefs 'tcp_*' -d 5
    """
    import json

    from kpctl.counting import choose_engine
    from kpctl.manager import expand_targets

    tracefs = open_tracefs()
    kind = choose_engine(tracefs, engine)
    engine = kind.name
    functions, skipped = expand_targets(tracefs.symbols, list(patterns), max_functions)
    if skipped:
        click.echo(f"kpctl: the globs leave out {len(skipped)} functions (kpctl funcs tells why)", err=True)
    counter = kind.hit_counter(tracefs, functions, by, False)

    def show(counts: Sequence[Count], dropped: int) -> None:
        from kpctl.aggregation.counts import count_table

        rows, not_hit = count_table(counts, len(functions), by, top)
        if output == "prometheus":
            from kpctl.aggregation.counts import count_metric
            from kpctl.metrics import exposition

            click.echo(exposition([count_metric(counts[:top], by, engine)]), nl=False)
            return
        if output == "json":
            click.echo(json.dumps({"engine": engine, "by": by, "counts": rows, "not_hit": not_hit, "dropped": dropped}))
            return
        print_table(rows, list(rows[0]) if rows else ["function", "hits"])
        if not_hit:
            click.echo(f"kpctl: {not_hit} of {len(functions)} functions counted were not hit", err=True)
        if dropped:
            click.echo(f"kpctl: {dropped} hits dropped: the kernel's table was full", err=True)

    run_counting(counter, tracefs, len(functions), duration, interval, show)


def run_counting(counter: Aggregation, tracefs: Tracefs, how_many: int, duration: float | None,
                 interval: float | None, show: Callable[[list[Count], int], None]) -> None:
    """Count until duration, Ctrl-C or SIGTERM, showing each interval's counts, or the
    whole's at the end."""
    import time

    from kpctl.aggregation.counts import since
    from kpctl.counting import ENGINES
    from kpctl.signals import StopRequested, interruptible_sleep, stop_on_sigterm

    collect_garbage(tracefs)
    functions = f"{how_many} function{'s' if how_many != 1 else ''}"
    if ENGINES[counter.engine].compiles and sys.stderr.isatty():
        click.echo(f"kpctl: compiling and attaching a BPF program for {functions}...", err=True)
    counted = False
    try:
        with stop_on_sigterm(), interruptible_sleep() as sleep, counter.counting():
            # Probes count from the moment each is armed, the first of many for a while
            # before the last: what they counted before all were armed is left out.
            before: list[Count] = counter.counts()[0]
            until = None if duration is None else time.monotonic() + duration
            interrupted = False
            try:
                # Said once the triggers count: whoever waits for it may start what it wants counted.
                click.echo(f"kpctl: counting {functions} with {ENGINES[counter.engine].summary}; Ctrl-C ends", err=True)
                while until is None or time.monotonic() < until:
                    left = None if until is None else max(until - time.monotonic(), 0.0)
                    sleep(min(x for x in (interval, left, 3600.0) if x is not None))
                    if interval is not None:
                        now, dropped = counter.counts()
                        show(since(now, before), dropped)
                        sys.stdout.flush()  # each interval as it ends, into a pipe too
                        before = now
            except (KeyboardInterrupt, StopRequested):
                interrupted = True
            if interval is None or interrupted:  # the whole, or the interval Ctrl-C cut short
                now, dropped = counter.counts()
                show(since(now, before), dropped)
            counted = True
    except (KeyboardInterrupt, StopRequested):
        # Before the counts were out (arming): say so. After, it came during the removal,
        # held until that was done (signals_held()): the counts are out, nothing is left.
        if not counted:
            raise KpctlError("stopped: everything it set up is removed") from None


@cli.command()
@click.argument("target")
@click.argument("fetcharg")
@counting_options
@output_options
def hist(target: str, fetcharg: str, interval: float | None, duration: float | None, engine: str | None,
         output: str) -> None:
    """A power-of-two histogram of FETCHARG at TARGET, kept in the kernel (bcc's argdist -H).

    FETCHARG is NAME=FETCH[:TYPE], a number: an argument, or $retval (the return value,
    through a return probe).

    \b
    Examples:
      sudo kpctl hist vfs_read 'size=$arg3:u64' -d 10
      sudo kpctl hist vfs_read 'ret=$retval:s64' -i 5
    """
    import json

    from kpctl.aggregation.counts import histogram_split, log2_buckets, render_log2
    from kpctl.counting import choose_engine

    histogram_split(fetcharg)  # the same answer whatever the kernel
    tracefs = open_tracefs()
    kind = choose_engine(tracefs, engine)
    engine = kind.name
    counter = kind.hit_counter(tracefs, [target], fetcharg, True)
    name = fetcharg.split("=", 1)[0]

    def show(counts: Sequence[Count], dropped: int) -> None:
        buckets = log2_buckets(counts)
        if output == "prometheus":
            from kpctl.aggregation.counts import histogram_metric
            from kpctl.metrics import exposition

            click.echo(exposition([histogram_metric(buckets, target, fetcharg, engine)]), nl=False)
            return
        if output == "json":
            click.echo(json.dumps({"engine": engine, "target": target, "fetcharg": fetcharg, "dropped": dropped,
                                   "buckets": [{"low": lo, "high": hi, "hits": n} for lo, hi, n in buckets]}))
        else:
            click.echo("\n".join(render_log2(buckets, name)))

    run_counting(counter, tracefs, 1, duration, interval, show)


@cli.command()
@click.argument("functions", nargs=-1, required=True)
@counting_options
@click.option("--micros", "-u", is_flag=True, help="Microseconds instead of nanoseconds.")
@click.option("--millis", "-m", is_flag=True, help="Milliseconds instead of nanoseconds.")
@click.option("--per-function", "-F", is_flag=True, help="A histogram per function instead of one for all.")
@click.option("--by", help=BY_HELP)
@output_options
def latency(functions: tuple[str, ...], interval: float | None, duration: float | None, engine: str | None,
            micros: bool, millis: bool, per_function: bool, by: str | None, output: str) -> None:
    """Time from entry to return of FUNCTIONS, a power-of-two histogram kept in the kernel
    (bcc's funclatency).

    The bpf engine keeps each thread's entry times per call depth: nested and recursive
    calls are each timed from their own entry. The tracefs engine keeps one entry time
    per thread (a hist variable, read once): of a recursion only the innermost call is
    timed. --by makes a histogram per pid, comm or cpu (the bpf engine's).

    \b
    Examples:
      sudo kpctl latency vfs_read -d 10
      sudo kpctl latency -u -F vfs_read vfs_write -i 5
      sudo kpctl latency -m do_nanosleep --by comm -d 10
    """
    import json

    from kpctl.aggregation.counts import log2_buckets, render_log2
    from kpctl.counting import choose_engine

    if micros and millis:
        raise UsageError("give one of --micros and --millis")
    unit = "usecs" if micros else "msecs" if millis else "nsecs"
    tracefs = open_tracefs()
    kind = choose_engine(tracefs, engine)
    engine = kind.name
    timer = kind.latency_timer(tracefs, functions, unit, by)
    groups = sorted(set(functions)) if per_function else [None]

    def show(counts: Sequence[Count], dropped: int) -> None:
        if output == "prometheus":
            from kpctl.aggregation.counts import latency_metric
            from kpctl.metrics import exposition

            per = {f: log2_buckets([c for c in counts if c.function == f]) for f in sorted(set(functions))}
            click.echo(exposition([latency_metric(per, unit, engine)]), nl=False)
            return
        splits = sorted({c.split or "" for c in counts}) if by else [None]
        for function in groups:
            for split in splits:
                buckets = log2_buckets([c for c in counts if function in (None, c.function) and split in (None, c.split)])
                if output == "json":
                    click.echo(json.dumps({"engine": engine, "function": function or list(functions),
                                           **({"by": by, "key": split} if by else {}), "unit": unit,
                                           "dropped": dropped, "buckets": [{"low": lo, "high": hi, "calls": n}
                                                                           for lo, hi, n in buckets]}))
                    continue
                if function is not None:
                    click.echo(f"function = {function}")
                if split is not None:
                    click.echo(f"{by} = {split}")
                click.echo("\n".join(render_log2(buckets, unit)))

    run_counting(timer, tracefs, len(functions), duration, interval, show)


@cli.command()
@click.argument("target")
@counting_options
@click.option("--top", type=click.IntRange(1), help=TOP_HELP)
@click.option("--folded", is_flag=True, help="Print flame-graph input: frames root first, joined by ';', and the count.")
@output_options
def stacks(target: str, interval: float | None, duration: float | None, engine: str | None, top: int | None,
           folded: bool, output: str) -> None:
    """Kernel stacks that reached TARGET, counted in the kernel (bcc's stackcount).

    \b
    Examples:
      sudo kpctl stacks do_sys_openat2 -d 5 --top 3
      sudo kpctl stacks vfs_read -d 10 --folded > vfs_read.folded
    """
    import json

    from kpctl.aggregation.counts import folded as folded_lines
    from kpctl.counting import choose_engine

    tracefs = open_tracefs()
    kind = choose_engine(tracefs, engine)
    engine = kind.name
    counter = kind.hit_counter(tracefs, [target], "stack", False)

    def show(counts: Sequence[Count], dropped: int) -> None:
        shown = list(counts)[:top]
        if output == "prometheus":
            from kpctl.aggregation.counts import stacks_metric
            from kpctl.metrics import exposition

            click.echo(exposition([stacks_metric(shown, target, engine)]), nl=False)
        elif output == "json":
            click.echo(json.dumps({"engine": engine, "target": target, "dropped": dropped,
                                   "stacks": [{"frames": (c.key or "").split(";"), "hits": c.hits} for c in shown]}))
        elif folded:
            click.echo("\n".join(folded_lines(shown)))
        else:
            for c in shown:
                click.echo("\n".join(f"  {frame}" for frame in (c.key or "").split(";")) + f"\n    {c.hits}\n")

    run_counting(counter, tracefs, 1, duration, interval, show)


def collect_garbage(tracefs: Tracefs) -> Collected:
    """What dead kpctl processes left, removed; said on stderr, with what could not be."""
    from kpctl.gc import collect
    from kpctl.owners import Owners

    done = collect(tracefs, Owners())
    for line in done.removed:
        click.echo(f"kpctl: removed {line}, left by a kpctl process that is gone", err=True)
    for line in done.left:
        click.echo(f"kpctl: could not remove {line} (left by a kpctl process that is gone)", err=True)
    return done


@cli.command()
@json_option
def gc(as_json: bool) -> None:
    """Remove what kpctl processes that are gone left behind (a SIGKILLed trace or count).

    Only kpctl's own: probes whose recorded owner is dead, and the groups, instances and
    synthetic events counting and inspect --arm name after their pid. Commands that make
    short-lived probes run it first. What the kernel refuses to remove is named with the
    reason, and gc exits 1.

    \b
    Example:
      sudo kpctl gc
    """
    done = collect_garbage(open_tracefs())
    if as_json:
        print_json({"removed": done.removed, **({"left": done.left} if done.left else {})})
    elif not done.removed and not done.left:
        click.echo("nothing to remove", err=True)
    if done.left:
        sys.exit(1)


@cli.command()
@click.option("--file", "-f", "path", required=True, help="The probe set, YAML ('-': stdin).")
@click.option("--prune", is_flag=True, help="Also remove the set's probes that the file no longer names.")
@click.option("--delete", is_flag=True, help="Remove every probe of the set instead.")
@click.option("--dry-run", is_flag=True, help=DRY_RUN_HELP)
@click.option("--diff", is_flag=True, help="Also print the changed definitions: '-' the kernel's, '+' the file's.")
@json_option
def apply(path: str, prune: bool, delete: bool, dry_run: bool, diff: bool, as_json: bool) -> None:
    """Make the kernel's probes match a probe set's file, idempotently.

    Missing probes are added, changed ones replaced, and with --prune the set's probes
    that the file no longer names are removed; a second apply changes nothing and says
    so. The set owns its probes (kpctl list shows it) until apply --delete. A bad file
    changes nothing; a change the kernel refuses undoes those before it. --json prints
    {"set", "changed", "added", "replaced", "removed", "enabled", "disabled",
    "unchanged"} for automation. The file's fields are in the README.

    \b
    Examples:
      sudo kpctl apply -f slow-reads.yaml
      sudo kpctl apply -f slow-reads.yaml --prune --diff --dry-run
      sudo kpctl apply --delete -f slow-reads.yaml
    """
    from kpctl import apply as applying
    from kpctl.owners import Owners
    from kpctl.probeset import parse_probe_set, read_probe_set
    from kpctl.signals import signals_ignored

    probe_set = parse_probe_set(read_probe_set(path, sys.stdin.buffer), "<stdin>" if path == "-" else path)
    owners = Owners()
    if dry_run:
        try:
            result = applying.plan(open_probes(probe_set.group), owners, probe_set, prune, delete)
        except KpctlError as e:
            if isinstance(e, UsageError):
                raise
            # No kernel to compare with (a laptop, CI): the file is what can be checked, and was.
            click.echo(f"kpctl: checked the set only: {e.message}", err=True)
            lines = [str(p.probe) for p in probe_set.probes]
            if as_json:
                print_json({"set": probe_set.name, "checked_only": True, "probes": lines})
            else:
                click.echo("\n".join(lines))
            return
    else:
        manager = open_probes(probe_set.group)
        with signals_ignored():  # all or nothing: Ctrl-C waits for the last change
            result = applying.apply(manager, owners, probe_set, prune, delete)
    if diff and not as_json:
        for line in result.diff():
            click.echo(line)
    if as_json:
        print_json({**result.as_json(), "dry_run": dry_run, **({"diff": result.diff()} if diff else {})})
        return
    would = "would be " if dry_run else ""
    for done in ("added", "replaced", "removed", "enabled", "disabled"):
        for name in getattr(result, done):
            click.echo(f"{would}{done} {probe_set.group}/{name}")
    if delete and not result.changed:
        say_no_probes(probe_set.group, f"probes of set {probe_set.name}")
    elif not result.changed:
        n = len(result.unchanged)
        click.echo(f"set {probe_set.name}: no change ({n} probe{'s' * (n != 1)} as the file says)")


@cli.command()
@click.argument("pattern", default="*")
@wide_option
@json_option
def funcs(pattern: str, as_json: bool) -> None:
    """Functions a probe can sit on (shell glob PATTERN), and why a name cannot.

    \b
    Examples:
      sudo kpctl funcs 'vfs_*'
      sudo kpctl funcs do_sys_open
    """
    if not pattern:
        raise UsageError("give a function name or a glob", "kpctl funcs 'vfs_*'")
    symbols = open_tracefs().symbols
    statuses = symbols.statuses(pattern)
    if not statuses:
        raise KpctlError(f"no function matches {pattern}", "kpctl funcs 'vfs_*' lists functions by glob")
    if statuses[0].name == pattern and pattern not in symbols.by_name:
        raise KpctlError(f"no function named {pattern}: {statuses[0].reason}")
    rows = [{"name": s.name, "module": s.module or "", "probeable": s.probeable, "note": s.reason} for s in statuses]
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["name", "module", "probeable", "note"])


@cli.command(cls=Renamed, renamed={"-n": "--calls", "-r": "--runs"})
@click.option("--calls", type=click.IntRange(1, 100_000_000), default=100_000, show_default=True,
              help="Calls of the probed function per run.")
@click.option("--runs", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Runs per mechanism (the median counts).")
@click.option("--driver", "driver_kind", type=click.Choice(["module", "syscall"]),
              help="What makes the calls: the module's loop in the kernel, or getpgid() from here "
                   "(the syscall's function has BTF, so BPF fentry/fexit can be measured). "
                   "Default: the module where it can be loaded.")
@wide_option
@json_option
def bench(calls: int, runs: int, driver_kind: str | None, as_json: bool) -> None:
    """What one hit of each probe mechanism costs on this kernel, side by side.

    A driver calls one function N times: the bundled module's (kpctl kmod build; bench
    loads and unloads it if need be), or else getpgid() from here. Each mechanism in
    turn (ftrace, fprobe, kprobes at +0 and at an offset as int3/BRK and jump-optimized,
    kretprobes, the module's, BPF's through bcc) is set up on that function, timed, and
    checked: its own hit count against the calls made, and the kprobe's state. Rows
    the kernel cannot do say why. Everything is removed afterwards, Ctrl-C included;
    the optimization sysctl is restored.

    \b
    Examples:
      sudo kpctl bench
      sudo kpctl bench --calls 1000000 --runs 7 --json
      sudo kpctl bench --driver syscall
    """
    from dataclasses import asdict

    from kpctl.bench import Bench, context, open_driver, rows_as_table, run_bench
    from kpctl.signals import StopRequested, stop_on_sigterm

    tracefs = open_tracefs()
    driver, close = open_driver(tracefs, driver_kind)
    try:
        about = context(driver)
        if not as_json:
            for key, value in asdict(about).items():
                click.echo(f"{key + ':':<16}{value}")
        progress = (lambda name: click.echo(f"kpctl: timing {name}...", err=True)) if sys.stderr.isatty() else None
        with stop_on_sigterm():
            try:
                rows = run_bench(Bench(tracefs, driver, calls, runs), say=progress)
            except (KeyboardInterrupt, StopRequested):
                raise KpctlError("stopped: everything it set up is removed") from None
    finally:
        close()
    if as_json:
        print_json({"context": asdict(about), "calls": calls, "runs": runs,
                    "rows": [{**asdict(r), "checked": r.checked} for r in rows]})
    else:
        print_table(rows_as_table(rows), ["mechanism", "ns/hit", "spread", "x baseline", "hits", "what"])


@cli.command()
@wide_option
@json_option
def doctor(as_json: bool) -> None:
    """Check what kpctl needs on this machine, and how to fix what is missing.

    \b
    Example:
      sudo kpctl doctor
    """
    from dataclasses import asdict

    from kpctl.doctor import run_checks

    checks = run_checks(say=say_on_stderr)
    if as_json:
        print_json([asdict(c) for c in checks])
    else:
        rows = [
            {"check": c.name, "ok": "yes" if c.ok else ("no" if c.required else "optional: no"),
             "detail": c.detail, "fix": "" if c.ok else c.fix}
            for c in checks
        ]
        print_table(rows, ["check", "ok", "detail", "fix"])
    if not all(c.ok for c in checks if c.required):
        sys.exit(1)


@cli.command(cls=Renamed, renamed={"-n": "--instructions"})
@click.argument("target")
@click.option("--arm", is_flag=True, help="Put a short-lived probe there and show the code at each stage.")
@click.option("--instructions", type=click.IntRange(1, 200), default=16, show_default=True,
              help="How many instructions of the function to show.")
@click.option("--wait", type=Seconds(0.1, 60), default=5.0, show_default=True,
              help="--arm: seconds to wait for the x86 jump optimization and for a return.")
@group_option
@json_option
def inspect(target: str, arm: bool, instructions: int, wait: float, group: str, as_json: bool) -> None:
    """Show what a kprobe at TARGET does to the live kernel code.

    TARGET is SYMBOL, SYMBOL+OFFSET or MODULE:SYMBOL. Prints the address, whether a probe
    may go there (and why not), the function's first instructions from /proc/kcore with
    the places a probe may go marked, and the kprobes already there with their owners.
    --arm adds a probe for a moment and shows each stage: armed (int3 / BRK), optimized
    into a jump (x86), through ftrace (x86, at the ftrace site), restored, and one return
    through the return-probe trampoline.

    \b
    Examples:
      sudo kpctl inspect vfs_read+5
      sudo kpctl inspect --arm vfs_read+5
      sudo kpctl inspect --arm --json ext4:ext4_file_open
    """
    from kpctl.inspect.arm import Arming
    from kpctl.inspect.disasm import host_arch
    from kpctl.inspect.inspector import Inspector
    from kpctl.inspect.render import render_text, to_json

    manager = open_probes(group)
    inspector = Inspector(manager.tracefs, host_arch(), group=group, elsewhere=manager.list_probes())
    report = inspector.inspect(target, instructions)
    if arm:
        from kpctl.signals import StopRequested

        collect_garbage(manager.tracefs)

        try:
            report = Arming(inspector).arm(report, wait=wait, instructions=instructions)
        except (KeyboardInterrupt, StopRequested):
            raise KpctlError("interrupted: inspect --arm removed its probes and shows nothing") from None
    if as_json:
        print_json(to_json(report))
    else:
        color = sys.stdout.isatty()
        click.echo(render_text(report, lambda b: click.style(b, fg="red", bold=True) if color else f"[{b}]"), nl=False)


cli.add_command(kmod)


def main() -> None:
    cli(prog_name="kpctl")
