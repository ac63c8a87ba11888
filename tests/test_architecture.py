"""The import graph of ``ttaeval`` keeps its layers: records below the store, the store below the
scorers' users, scorers never reaching into the synthetic world, training never imported, no cycle.

Every ``import`` counts, also those inside functions (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import ttaeval

ROOT = Path(ttaeval.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the ttaeval modules it imports (``from a.b import c`` is ``a.b.c`` when that is a
    module, else ``a.b``)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t.split(".")[0] in ("ttaeval", "resonate_train")}
        graph[name] = edges - {name}
    return graph


def reaches(graph: dict[str, set[str]], start: str, prefix: str) -> list[str]:
    """A path of imports from ``start`` to a module under ``prefix``, or []."""
    seen, stack = {start}, [[start]]
    while stack:
        path = stack.pop()
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == prefix or nxt.startswith(prefix + "."):
                return [*path, nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append([*path, nxt])
    return []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_store_never_imports_a_scorer_only_records():
    graph = import_graph()
    assert not reaches(graph, "ttaeval.store", "ttaeval.scorers")
    assert not reaches(graph, "ttaeval.store", "ttaeval.embedders")
    assert "ttaeval.records" in graph["ttaeval.store"]


def test_scorers_and_embedders_never_import_the_synthetic_world():
    graph = import_graph()
    for module in graph:
        if module.startswith(
            ("ttaeval.scorers", "ttaeval.embedders", "ttaeval.backbones", "ttaeval.metrics")
        ):
            assert not reaches(graph, module, "ttaeval.synth"), reaches(graph, module, "ttaeval.synth")


def test_ttaeval_never_imports_training_and_has_no_import_cycle():
    graph = import_graph()
    assert not [m for m in graph if reaches(graph, m, "resonate_train")]
    assert cycles(graph) == []


def test_the_root_holds_few_modules_and_the_public_names_work():
    root = sorted(p.stem for p in ROOT.glob("*.py") if p.stem not in ("__init__", "__main__"))
    packages = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").exists())
    assert {"embedders", "metrics", "scorers", "judge", "io", "report", "synth"} <= set(packages), packages
    # every root module is an entry point of its own (a new one joins this list on purpose)
    assert root == [
        "checkpoints", "cli", "demo", "devices", "exits", "folder_fad", "optional", "protocols", "records",
        "registry", "rewards", "runner", "scoring",
    ], root  # fmt: skip
    from ttaeval import GaussianStats, frechet_distance, get_scorer, load_audio, load_prompts  # noqa: F401
