"""Lanes: make test's jobs on every core at once, each job's output kept apart.

A job is a command (a guest's kernel tests, an image build, the host checks, the
Vagrant stage) that may need other jobs to pass first. As many lanes as the machine has
cores each take the ready job that heads the longest chain of work still to do (an
arm64 image before the guest tests that wait for it), stream its lines prefixed with
its name, and keep them whole in its own log. A failed job never stops another lane;
the jobs that needed it are reported as not run. Standard library only, as harness.py.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Job:
    name: str
    command: Sequence[str]
    needs: tuple[str, ...] = ()
    # Seconds it is expected to take: orders the lanes' picks, nothing else.
    estimate: float = 60.0


@dataclass
class Outcome:
    job: Job
    verdict: str  # "passed", "FAILED" or "not run"
    seconds: float
    tests: str
    log: Path | None
    why: str = ""


@dataclass
class Budget:
    """Minutes a whole run may take before its last line says it went over; a run that
    built an image is cold."""
    warm_minutes: float
    cold_minutes: float


def critical_path(jobs: Sequence[Job]) -> dict[str, float]:
    """Each job's estimate plus the longest chain of jobs that wait for it."""
    dependents: dict[str, list[Job]] = {job.name: [] for job in jobs}
    for job in jobs:
        for need in job.needs:
            dependents[need].append(job)
    ranks: dict[str, float] = {}

    def rank(job: Job) -> float:
        if job.name not in ranks:
            ranks[job.name] = job.estimate + max((rank(d) for d in dependents[job.name]), default=0.0)
        return ranks[job.name]

    for job in jobs:
        rank(job)
    return ranks


# The last line of pytest's summary: "163 passed, 2 skipped in 612.30s (0:10:12)".
PYTEST_SUMMARY = re.compile(r"\b\d+ (passed|failed|errors?|skipped|deselected)\b|no tests ran")


def tests_line(output_tail: Sequence[str]) -> str:
    """What a job's output says of its tests: pytest's counts without the time."""
    for line in reversed(output_tail):
        if PYTEST_SUMMARY.search(line) and ("passed" in line or "failed" in line or "error" in line or "no tests ran" in line):
            counts = line.strip("= ").split(" in ")[0]
            return counts.split(": ")[-1]
    return "-"


def minutes(seconds: float) -> str:
    return f"{int(seconds) // 60} min {int(seconds) % 60} s"


class Lanes:
    """Runs jobs in lanes; run() returns every job's outcome, in the order given."""

    def __init__(self, jobs: Sequence[Job], lanes: int, logdir: Path,
                 write: Callable[[str], None] | None = None) -> None:
        names = {job.name for job in jobs}
        for job in jobs:
            unknown = set(job.needs) - names
            if unknown:
                raise ValueError(f"job {job.name} needs unknown jobs: {', '.join(sorted(unknown))}")
        self.jobs = list(jobs)
        self.lanes = max(1, lanes)
        self.logdir = logdir
        self._write = write or self._stdout
        self._rank = critical_path(self.jobs)
        self._pending = list(self.jobs)
        self._outcomes: dict[str, Outcome] = {}
        self._cond = threading.Condition()
        self._print = threading.Lock()

    @staticmethod
    def _stdout(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def say(self, line: str) -> None:
        with self._print:
            self._write(line)

    def run(self) -> list[Outcome]:
        self.logdir.mkdir(parents=True, exist_ok=True)
        threads = [threading.Thread(target=self._lane, daemon=True) for _ in range(self.lanes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [self._outcomes[job.name] for job in self.jobs]

    def _next(self) -> Job | None:
        """The ready job with the longest chain ahead of it; None when all are taken.
        Jobs whose needs failed are settled as not run on the way."""
        with self._cond:
            while True:
                for job in list(self._pending):
                    failed = [n for n in job.needs if n in self._outcomes and self._outcomes[n].verdict != "passed"]
                    if failed:
                        self._pending.remove(job)
                        self._outcomes[job.name] = Outcome(job, "not run", 0.0, "-", None, f"{', '.join(failed)} did not pass")
                        self.say(f"[{job.name}] not run: {', '.join(failed)} did not pass")
                        self._cond.notify_all()
                ready = [job for job in self._pending if all(n in self._outcomes for n in job.needs)]
                if ready:
                    job = max(ready, key=lambda j: self._rank[j.name])
                    self._pending.remove(job)
                    return job
                if not self._pending:
                    return None
                self._cond.wait()

    def _lane(self) -> None:
        while (job := self._next()) is not None:
            outcome = self._run_one(job)
            with self._cond:
                self._outcomes[job.name] = outcome
                self._cond.notify_all()

    def _run_one(self, job: Job) -> Outcome:
        log = self.logdir / (re.sub(r"[^A-Za-z0-9_.-]+", "-", job.name).strip("-") + ".log")
        tail: list[str] = []
        self.say(f"[{job.name}] started: {' '.join(job.command)}")
        started = time.monotonic()
        with open(log, "w", encoding="utf-8", errors="replace") as keep:
            proc = subprocess.Popen(job.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                keep.write(line + "\n")
                keep.flush()
                tail = (tail + [line])[-200:]
                self.say(f"[{job.name}] {line}")
            returncode = proc.wait()
        seconds = time.monotonic() - started
        verdict = "passed" if returncode == 0 else "FAILED"
        self.say(f"[{job.name}] {verdict} in {seconds:.0f} s (exit {returncode}); log {log}")
        return Outcome(job, verdict, seconds, tests_line(tail), log, "" if returncode == 0 else f"exit {returncode}")


def summary(outcomes: Sequence[Outcome], seconds: float, cold: bool, budget: Budget | None) -> list[str]:
    """The closing table: every job's verdict, tests and seconds; the last line says
    whether all passed and whether the run kept its budget."""
    width = max([3, *(len(o.job.name) for o in outcomes)])
    tests_width = max([5, *(len(o.tests) for o in outcomes)])
    lines = [f"harness: summary of {len(outcomes)} jobs, {minutes(seconds)} in all ({'cold' if cold else 'warm'}: "
             f"{'an image was built' if cold else 'every image cached'})",
             f"  {'JOB':<{width}}  {'VERDICT':<7}  {'TESTS':<{tests_width}}  SECONDS  LOG"]
    for o in outcomes:
        where = str(o.log) if o.log else o.why
        lines.append(f"  {o.job.name:<{width}}  {o.verdict:<7}  {o.tests:<{tests_width}}  {o.seconds:7.0f}  {where}")
    failed = [o.job.name for o in outcomes if o.verdict != "passed"]
    last = f"harness: FAILED: {', '.join(failed)}" if failed else f"harness: all {len(outcomes)} jobs passed"
    last += f" in {minutes(seconds)}"
    if budget is not None:
        limit = budget.cold_minutes if cold else budget.warm_minutes
        kind = "cold" if cold else "warm"
        if seconds > limit * 60:
            last += f"; OVER BUDGET: a {kind} run may take {limit:.0f} min (README, time budgets)"
        else:
            last += f"; within the {limit:.0f}-minute budget of a {kind} run"
    lines.append(last)
    return lines


def load_seconds(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def save_seconds(path: Path, outcomes: Sequence[Outcome]) -> None:
    """Each passed job's seconds, for the next run's ordering."""
    known = load_seconds(path)
    known.update({o.job.name: round(o.seconds, 1) for o in outcomes if o.verdict == "passed"})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
