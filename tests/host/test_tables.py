"""Tables fit the terminal: on a terminal (COLUMNS honoured) the widest text columns are
wrapped until each line fits, never cut; into a pipe, and with --wide, lines are whole;
--json is untouched."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from kpctl import doctor
from kpctl.bench import Row, rows_as_table
from kpctl.cli import output
from kpctl.cli.main import cli
from kpctl.tables import MIN_WRAP_WIDTH, render_table

# What doctor printed on a kernel without kprobes: its detail and fix run long.
CHECKS = [
    doctor.Check("root", True, "euid 0"),
    doctor.Check("kprobes enabled", False, "this kernel has no kprobes: no kprobe_events, perf kprobe PMU or debugfs "
                 "kprobes", "the kernel needs CONFIG_KPROBES=y"),
    doctor.Check("backend bpf", False, "BPF programs through bcc, alive while kpctl runs (kpctl trace); probes live "
                 "while kpctl runs: bcc is not installed for this Python",
                 "install Debian's python3-bpfcc (apt install python3-bpfcc); in a venv, make it with python3 -m venv "
                 "--system-site-packages so that it sees bcc", required=False),
]


def _data(table: str) -> str:
    """The table's characters but blanks and dashes (the rule's)."""
    return "".join(c for c in table if not c.isspace() and c != "-")


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "run_checks", lambda say=None: CHECKS)


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """stdout a terminal 80 columns wide (click's runner's stdout is not one)."""
    monkeypatch.setattr(output, "stdout_is_terminal", lambda: True)
    monkeypatch.setenv("COLUMNS", "80")


def doctor_output(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args], prog_name="kpctl")
    assert result.exit_code == 1, result.output  # a required check failed
    return result.stdout


def test_doctor_on_an_80_column_terminal_fits_and_keeps_every_word(checks: None, terminal: None) -> None:
    fitted = doctor_output("doctor")
    assert max(map(len, fitted.splitlines())) <= 80
    # Every character is there (the rule's dashes and the blanks aside): words moved to the lines below.
    assert sorted(_data(fitted)) == sorted(_data(doctor_output("--wide", "doctor")))
    assert "CONFIG_KPROBES=y" in fitted and "install Debian's" in fitted


def test_wide_before_or_after_the_command_and_a_pipe_give_whole_lines(checks: None, terminal: None,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    wide = doctor_output("--wide", "doctor")
    assert doctor_output("doctor", "--wide") == wide
    assert len(wide.splitlines()) == 2 + len(CHECKS)  # header, rule, a line per row
    assert max(map(len, wide.splitlines())) > 200
    monkeypatch.setattr(output, "stdout_is_terminal", lambda: False)
    assert doctor_output("doctor") == wide


def test_json_is_the_same_on_a_terminal(checks: None, terminal: None) -> None:
    assert json.loads(doctor_output("doctor", "--json"))[1]["fix"] == CHECKS[1].fix


def test_bench_rows_fit_and_numbers_are_never_wrapped() -> None:
    rows = rows_as_table([
        Row("kprobe +0 (int3)", 123.4, 5.0, 100.0, 2.5, 1000, 1000,
            "k ffffffff8127a4c4 vfs_read+0x0 [FTRACE] " + "a long detail of what the kprobe was " * 5),
        Row("fentry (bpf)", None, None, None, None, None, None, "the kernel has no BTF for this function"),
    ])
    headers = ["mechanism", "ns/hit", "spread", "x baseline", "hits", "what"]
    text = render_table(rows, headers, 80)
    assert max(map(len, text.splitlines())) <= 80
    assert "123" in text and "2.50" in text and render_table(rows, headers).count("\n") == 3


@given(st.lists(st.tuples(st.text("ab c/_=", max_size=120), st.integers(), st.text("xyz ", max_size=60)),
                max_size=6),
       st.integers(20, 200))
def test_a_fitted_table_keeps_every_character_and_fits_when_it_can(cells: list[tuple[str, int, str]], width: int) -> None:
    rows = [{"text": a, "n": n, "more": b} for a, n, b in cells]
    fitted = render_table(rows, ["text", "n", "more"], width)
    whole = render_table(rows, ["text", "n", "more"])
    assert sorted(_data(fitted)) == sorted(_data(whole))
    for n in (r["n"] for r in rows):
        assert str(n) in fitted  # numbers whole
    numbers = max([len(str(n)) for n in (r["n"] for r in rows)] + [1])
    if 2 * MIN_WRAP_WIDTH + max(numbers, 1) + 4 <= width:
        assert max(map(len, fitted.splitlines())) <= width


def test_floats_none_and_an_empty_table_are_measured_as_tabulate_prints_them() -> None:
    rows = [{"what": "a long text of several words " * 4, "ratio": r, "maybe": m}
            for r, m in ((1.25, None), (10.5, 3), (100.125, None))]
    for width in (40, 60, 80):
        text = render_table(rows, ["what", "ratio", "maybe"], width)
        assert max(map(len, text.splitlines())) <= width
        assert "100.125" in text and " 10.5" in text
    assert render_table([], ["name", "hits"], 10) == render_table([], ["name", "hits"])


text_cells = st.one_of(st.none(), st.booleans(), st.text(alphabet="ab_ :\t", max_size=12))
words = st.text(alphabet="ab_:", min_size=1, max_size=8)


@given(st.integers(1, 4).flatmap(lambda n: st.tuples(
    st.lists(st.text(alphabet="ABC_", min_size=1, max_size=6), min_size=n, max_size=n),
    st.lists(st.lists(text_cells, min_size=n, max_size=n), max_size=5).flatmap(
        lambda rows: st.lists(st.one_of(words, st.booleans()), min_size=n, max_size=n).map(lambda first: [first, *rows])))))
def test_a_table_of_text_is_printed_as_tabulate_prints_it(table: tuple[list[str], list[list[object]]]) -> None:
    from tabulate import tabulate

    from kpctl.tables import _plain_text_table

    names, cells = table
    assert _plain_text_table(cells, names) == tabulate(cells, headers=names)


@pytest.mark.parametrize("cell", [1, 2.5, "12", "+1", ".5", "inf", " nan", "caf\u00e9", "a\rb", "a\nb", "1,000", "-.5"])
def test_numbers_and_what_tabulate_reads_or_measures_its_own_way_go_to_tabulate(cell: object) -> None:
    from kpctl.tables import _plain_text_table

    assert _plain_text_table([["name", cell]], ["A", "B"]) is None


@pytest.mark.parametrize("cell", ["-x", ".E_copy", "nanx", "+"])
def test_text_that_only_starts_like_a_number_is_printed_as_tabulate_prints_it(cell: str) -> None:
    from tabulate import tabulate

    from kpctl.tables import _plain_text_table

    assert _plain_text_table([["name", cell]], ["A", "B"]) == tabulate([["name", cell]], headers=["A", "B"])
