"""The package's import structure: no import circle, and light jobs import no heavy libraries."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, at module level or inside functions."""
    files = {}
    for path in sorted((ROOT / "harness").rglob("*.py")) + sorted((ROOT / "models").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        files[name] = path
    graph = {}
    for name, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                         for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    graph = import_graph()
    assert "harness.tables" in graph and "harness.systems" in graph["harness.tables"]  # the reader works
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert cycles(graph) == []


FACTS = "from harness.scorers.registry import SCORERS, scorer_class; [scorer_class(m).label for m in SCORERS]; "


@pytest.mark.parametrize("module, also, heavy", [
    ("harness.manifests", "", ("torch", "diffusers", "transformers", "open_clip")),  # the merge job
    ("harness.tables", FACTS, ("diffusers", "transformers", "open_clip")),  # tables read every scorer's facts
    ("harness.regression", FACTS, ("diffusers", "transformers", "open_clip")),
    ("harness.expansion_report", FACTS, ("diffusers",)),
    ("harness.scoring", FACTS, ("diffusers",)),
])
def test_light_jobs_import_no_heavy_library(module, also, heavy):
    code = f"import sys, {module}; {also}print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"{module} imports {out.stdout.strip()}"
