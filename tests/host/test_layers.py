"""kpctl's layers point one way: CLI -> commands and library -> backends -> model. Read
from the source, every import counted, those inside functions and under TYPE_CHECKING
too: a lazy import may keep start-up fast, never hide a cycle."""
from __future__ import annotations

import ast
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "kpctl"

# Lowest first. A module may import its own layer and those below it; a new module
# needs a place here.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("kpctl", "kpctl.inspect", "kpctl.aggregation", "kpctl.errors", "kpctl.features", "kpctl.signals",  # packages: docstrings only
     "kpctl.bcc_glue", "kpctl.limits", "kpctl.sessions", "kpctl.ebpf", "kpctl.tables"),
    ("kpctl.model", "kpctl.symbols", "kpctl.histograms", "kpctl.metrics", "kpctl.owners", "kpctl.probeset"),
    ("kpctl.hits", "kpctl.tracefs", "kpctl.aggregation.counts"),
    ("kpctl.watch", "kpctl.kmod", "kpctl.kmod.*", "kpctl.ebpf.*", "kpctl.inspect.kcore", "kpctl.inspect.disasm", "kpctl.inspect.report"),
    ("kpctl.backends", "kpctl.backends.*"),
    ("kpctl.registry",),
    ("kpctl.gc",),  # owned_session(): every feature's short-lived state, the manager's too
    ("kpctl.manager",),
    ("kpctl.apply", "kpctl.bench", "kpctl.aggregation.*", "kpctl.inspect.*"),
    ("kpctl.doctor", "kpctl.counting"),
    ("kpctl.cli", "kpctl.cli.*", "kpctl.__main__"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The kpctl modules that importing name runs: every import statement anywhere in
    it, and the packages above each imported module (their __init__ runs first)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    with_parents = set()
    for target in found:
        parts = target.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in with_parents if m in MODULES and m != name}


GRAPH = {name: imports(name) for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> Iterator[list[str]]:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                yield from visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                yield sorted(component)

    for node in sorted(graph):
        if node not in index:
            yield from visit(node)


def layer(name: str) -> int:
    return next(i for i, patterns in enumerate(LAYERS) if any(fnmatch(name, p) for p in patterns))


def test_the_reader_sees_lazy_imports() -> None:
    assert "kpctl.backends.kmod" in GRAPH["kpctl.registry"]  # imported inside a function
    assert "kpctl.cli.output" in GRAPH["kpctl.cli.kmod"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert list(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})) == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    assert list(cycles(GRAPH)) == []


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in MODULES if not any(fnmatch(m, p) for patterns in LAYERS for p in patterns)]
    assert unplaced == [], "add them to LAYERS"


def test_imports_point_down() -> None:
    upward = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets if layer(t) > layer(m))
    assert upward == []


def test_only_the_cli_imports_click() -> None:
    users = sorted(
        name for name, path in MODULES.items()
        if not name.startswith("kpctl.cli") and any(
            isinstance(node, (ast.Import, ast.ImportFrom))
            and any((getattr(node, "module", None) or alias.name).split(".")[0] == "click" for alias in node.names)
            for node in ast.walk(ast.parse(path.read_text()))
        )
    )
    assert users == []
