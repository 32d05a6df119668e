"""The lanes of make test (guest/lanes.py): jobs on every core, the longest chain first,
a failure that stops no other lane, and a summary that says when the budget was not
kept. Real processes, no guest."""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "guest"))
import lanes  # noqa: E402


def job(name: str, script: str, needs: tuple[str, ...] = (), estimate: float = 1.0) -> lanes.Job:
    return lanes.Job(name, ["sh", "-c", script], needs, estimate)


def test_the_longest_chain_goes_first() -> None:
    jobs = [job("host", "true", estimate=90), job("image arm64", "true", estimate=900),
            job("arm64", "true", ("image arm64",), 700), job("x86_64", "true", estimate=600)]
    assert lanes.critical_path(jobs) == {"host": 90, "image arm64": 1600, "arm64": 700, "x86_64": 600}
    lines: list[str] = []
    lanes.Lanes(jobs, 1, Path("/tmp/kpctl-lanes-test"), lines.append).run()
    started = [line.split("]")[0][1:] for line in lines if "] started: " in line]
    assert started == ["image arm64", "arm64", "x86_64", "host"]


def test_two_lanes_run_side_by_side_and_a_failure_stops_no_other_lane(tmp_path: Path) -> None:
    jobs = [job("slow", "sleep 1; echo '2 passed in 1.0s'"), job("broken", "echo oops; exit 3"),
            job("after broken", "echo never", ("broken",)), job("after slow", "echo '1 passed in 0.1s'", ("slow",))]
    lines: list[str] = []
    began = time.monotonic()
    outcomes = lanes.Lanes(jobs, 2, tmp_path, lines.append).run()
    assert time.monotonic() - began < 2.5  # broken and slow at once
    verdicts = {o.job.name: (o.verdict, o.tests) for o in outcomes}
    assert verdicts == {"slow": ("passed", "2 passed"), "broken": ("FAILED", "-"),
                        "after broken": ("not run", "-"), "after slow": ("passed", "1 passed")}
    # Every line is prefixed with its job's name, and each job's own lines are kept whole.
    assert "[broken] oops" in lines and all(line.startswith("[") for line in lines)
    assert (tmp_path / "broken.log").read_text() == "oops\n"
    assert "never" not in "".join(lines)


def test_the_last_line_says_when_a_warm_run_went_over_its_budget() -> None:
    outcome = lanes.Outcome(job("x86_64/6.1", "true"), "passed", 2800.0, "163 passed", None)
    budget = lanes.Budget(warm_minutes=45, cold_minutes=65)
    over = lanes.summary([outcome], 46 * 60, cold=False, budget=budget)
    assert over[-1] == "harness: all 1 jobs passed in 46 min 0 s; OVER BUDGET: a warm run may take 45 min (README, time budgets)"
    cold = lanes.summary([outcome], 46 * 60, cold=True, budget=budget)
    assert cold[-1].endswith("within the 65-minute budget of a cold run")
    assert over[2].startswith("  x86_64/6.1  passed   163 passed     2800  ")
