"""A soak of kpctl's whole surface, bounded in time (KPCTL_SOAK_SECONDS; `make soak`
runs it longer): several processes add, enable, disable and remove probes of both
backends on hot functions while a workload calls them, two watches read, and
short-lived `kpctl trace` processes get SIGINT or SIGTERM at random moments.

Afterwards nothing of kpctl's is left (probe, tracefs instance, module probe), the
kernel log is clean (the kmod fixture), no process printed a traceback, and each watch
saw no more hits of the probes that lived through the soak than the kernel counted.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from kmod_fixtures import (  # noqa: F401 (fixtures)
    TRACEFS,
    WORKLOAD_SYSCALL,
    kmod,
    run_workload,
    syscall_symbol,
)

from kpctl.kmod.client import KmodClient

SOAK_SECONDS = float(os.environ.get("KPCTL_SOAK_SECONDS", "10"))
WORKERS = 3
# Work done whatever the time: on a loaded machine kpctl may start only a few times in
# SOAK_SECONDS, and the soak then goes on until it has done this much.
MIN_OPERATIONS = 6  # per worker
MIN_SIGNALS = 2
HOT = ("getppid", "getpid", "getuid", "getgid", WORKLOAD_SYSCALL)
KEEP = {"soak_keep": "tracefs", "soak_keep_kmod": "kmod"}
CHECKOUT = Path(__file__).resolve().parents[2]

# A churning process: kpctl's own command line, in process (start-up under emulation
# costs seconds), on probes of its own. Prints its counts as JSON.
_WORKER = """
import json, random, sys, time
import click
from kpctl.cli.main import cli
index, until, least, symbols = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
rng = random.Random(index)
mine, counts = [], {"operations": 0, "refused_adds": 0}

def run(*args):
    counts["operations"] += 1
    try:
        cli.main(list(args), prog_name="kpctl", standalone_mode=False)
        return True
    except click.ClickException as e:
        if args[0] != "add":  # its own probes: nothing else may refuse
            raise SystemExit(f"kpctl {' '.join(args)}: {e.format_message()}")
        counts["refused_adds"] += 1  # one module probe of a kind per address
        return False

while time.time() < until or counts["operations"] < least:
    choice = rng.random()
    if choice < 0.4 or not mine:
        name = f"soak{index}_{counts['operations']}"
        args = ["add", rng.choice(symbols), "--name", name, "--backend", rng.choice(["tracefs", "kmod"])]
        if run(*args, *(["--ret"] if rng.random() < 0.4 else [])):
            mine.append(name)
    elif choice < 0.6:
        run("disable", rng.choice(mine))
    elif choice < 0.8:
        run("enable", rng.choice(mine))
    else:
        run("rm", mine.pop(rng.randrange(len(mine))))
for name in mine:
    run("rm", name)
print(json.dumps(counts))
"""


def kpctl(*args: str, stdout: int | IO[str] = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kpctl", *args], cwd=CHECKOUT, text=True, stdout=stdout, stderr=subprocess.PIPE,
    )


def finished(proc: subprocess.Popen[str], timeout: float = 120, interrupted: bool = False) -> tuple[str, str]:
    """stdout and stderr of a process that ended with exit code 0, or by a signal when
    interrupted, and without a traceback of kpctl's. (A signal that lands while the
    interpreter itself starts gets Python's traceback of runpy and importlib, whatever
    kpctl does.)"""
    out, err = proc.communicate(timeout=timeout)
    if interrupted:
        assert "Traceback" not in err or ("KeyboardInterrupt" in err and "kpctl/kpctl/" not in err), err
    else:
        assert "Traceback" not in err, err
        assert proc.returncode == 0, (proc.args, proc.returncode, err)
    return out, err


def test_soak(kmod: KmodClient, tmp_path: Path) -> None:
    symbols = [syscall_symbol(name) for name in HOT]
    for name, backend in KEEP.items():
        finished(kpctl("add", symbols[0], "--name", name, "--backend", backend))
    outputs = [tmp_path / f"watch{i}.jsonl" for i in range(2)]
    watches = [kpctl("watch", "--json", stdout=out.open("w")) for out in outputs]
    time.sleep(3)  # both watches read before the churn starts
    until = time.time() + SOAK_SECONDS
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(i), str(until), str(MIN_OPERATIONS), ",".join(symbols)],
                         cwd=CHECKOUT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(WORKERS)
    ]
    stop = threading.Event()
    signals: list[tuple[str, str]] = []  # (probe name, stderr) of each interrupted trace

    def interrupt_traces() -> None:
        rng = random.Random(7)
        while time.time() < until or len(signals) < MIN_SIGNALS:
            name = f"soak_sig{len(signals)}"
            proc = kpctl("trace", rng.choice(symbols), "--name", name, "--duration", "30", "--json")
            time.sleep(rng.uniform(0.5, 2.5))
            proc.send_signal(rng.choice((signal.SIGINT, signal.SIGTERM)))
            signals.append((name, finished(proc, interrupted=True)[1]))

    def workload() -> None:
        # Paced: the watches' output stays small enough to check.
        while not stop.wait(0.005):
            os.getppid(), os.getpid(), os.getuid(), os.getgid()
            run_workload(1)

    threads = [threading.Thread(target=interrupt_traces), threading.Thread(target=workload)]
    for t in threads:
        t.start()
    try:
        results = [finished(w, timeout=SOAK_SECONDS + 300) for w in workers]
    finally:
        stop.set()
        for t in threads:
            t.join()
    counted = {row["name"]: row["hits"] for row in json.loads(finished(kpctl("stats", "--json"))[0])}
    for watch in watches:
        watch.send_signal(signal.SIGINT)
    seen = []
    for watch, output in zip(watches, outputs):
        _, err = finished(watch, interrupted=True)
        hits = [json.loads(line) for line in output.read_text().splitlines()]
        seen.append({name: sum(1 for h in hits if h.get("probe") == name) for name in KEEP})
        print(f"soak: watch {watch.pid}: {err.strip()}")
    for name in KEEP:
        # A watch reads what the kernel recorded: never more than the probe's own count.
        assert all(0 < s[name] <= counted[name] for s in seen), (name, seen, counted)

    # Every worker removed its probes and every interrupted trace its own.
    assert sorted(row["name"] for row in json.loads(finished(kpctl("list", "--json"))[0])) == sorted(KEEP)
    finished(kpctl("rm", "--all"))
    operations = sum(json.loads(out.splitlines()[-1])["operations"] for out, _ in results)
    print(f"soak: {SOAK_SECONDS:.0f} s, {WORKERS} workers, {operations} operations, "
          f"{len(signals)} traces interrupted, hits of the lasting probes {counted}")
    listed = (TRACEFS / "kprobe_events").read_text()
    assert "kpctl/" not in listed, listed
    assert [d.name for d in (TRACEFS / "instances").iterdir() if d.name.startswith("kpctl")] == []
    assert kmod.dump() == []
    assert operations >= WORKERS * MIN_OPERATIONS and len(signals) >= MIN_SIGNALS
