"""Print the shape of evaluator/: modules, lines, the largest module and function, import circles, upward arrows.

The import graph counts every `from .x import` / `from evaluator.x import` / `import evaluator.x`, at module level or
inside a function (a function-level import is still a dependency). "Floor" is 1 for a module that imports nothing from
the package and one above its highest import otherwise; a circle has no floors, so it is reported instead.

    python benchmarks/architecture.py [--functions 60] [--modules 450]
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "evaluator"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1:
                names = [base] if base else [a.name for a in node.names]
            elif base.startswith("evaluator"):
                rest = base.removeprefix("evaluator").lstrip(".")
                names = [rest] if rest else [a.name for a in node.names]
            else:
                continue
            found.update(n.split(".")[0] for n in names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("evaluator."):
                    found.add(a.name.split(".")[1])
    return {m for m in found if m in modules and m != path.stem}


def functions_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            out.append((node.end_lineno - node.lineno + 1, f"{path.stem}.{node.name}:{node.lineno}"))
    return out


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    memo: dict[str, int] = {}

    def floor(m: str, seen: frozenset[str]) -> int:
        if m in memo:
            return memo[m]
        deps = [d for d in graph[m] if d not in seen]
        memo[m] = 1 + max((floor(d, seen | {m}) for d in deps), default=0)
        return memo[m]

    for m in graph:
        floor(m, frozenset())
    return memo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--functions", type=int, default=60, help="list functions longer than this")
    ap.add_argument("--modules", type=int, default=450, help="list modules longer than this")
    a = ap.parse_args()
    files = sorted(p for p in PKG.glob("*.py"))
    names = {p.stem for p in files}
    graph = {p.stem: imports_of(p, names) for p in files}
    lines = {p.stem: len(p.read_text().splitlines()) for p in files}
    funcs = sorted((f for p in files for f in functions_of(p)), reverse=True)
    circ = circles(graph)
    fl = floors(graph) if not circ else {}
    print(f"modules {len(files)}, lines {sum(lines.values())}, arrows {sum(len(v) for v in graph.values())}")
    big = max(lines, key=lines.__getitem__)
    print(f"largest module {big}.py {lines[big]} lines; largest function {funcs[0][1]} {funcs[0][0]} lines")
    print(f"circles {len(circ)}" + "".join(f"\n  {' <-> '.join(c)}" for c in circ))
    if fl:
        print(f"floors {max(fl.values())}")
    for m in sorted(lines, key=lines.__getitem__, reverse=True):
        if lines[m] > a.modules:
            print(f"  module over {a.modules}: {m}.py {lines[m]}")
    for n, name in funcs:
        if n > a.functions:
            print(f"  function over {a.functions}: {name} {n}")


if __name__ == "__main__":
    main()
