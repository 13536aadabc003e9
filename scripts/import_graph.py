"""The imports between the modules of ``bench``, by layer: ``python scripts/import_graph.py [--out PNG]``.

Every ``import`` of a ``bench`` module counts, at the top of a file or inside a function. The layers, from the
bottom: ``formats`` (0), ``tasks`` (1), ``run`` (2), ``report`` (3), ``campaigns`` (4), ``cli`` (5), and the
entry modules (``bench/__main__.py``, ``bench/<command>.py``, ``bench/report/__main__.py``), which only hand
over to ``bench.cli``. A module may import its own layer and the layers below it, never one above, and no
set of modules may import each other in a cycle. ``tests/layout/test_layers.py`` checks both; this script
prints every import that breaks a rule and draws the graph (one column per layer) to ``--out``.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("formats", "tasks", "run", "report", "campaigns", "cli")
ENTRY = "entry"


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the ``bench`` package, by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for path in sorted((root / "bench").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def layer(module: str) -> str:
    """The layer of a dotted module name: one of ``LAYERS``, ``entry``, or ``bench`` (the package itself)."""
    parts = module.split(".")
    if module == "bench":
        return "bench"
    if parts[-1] == "__main__" or (len(parts) == 2 and parts[1] not in LAYERS):  # bench/<command>.py
        return ENTRY
    return parts[1]


def rank(module: str) -> int:
    name = layer(module)
    return {"bench": -1, ENTRY: len(LAYERS)}.get(name, LAYERS.index(name) if name in LAYERS else -1)


def imports(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the ``bench`` modules it imports (``from bench.x import y`` names ``bench.x.y`` when that is a
    module, else ``bench.x``)."""

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(resolve(alias.name) for alias in node.names if alias.name.startswith("bench"))
            elif (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").startswith("bench")
            ):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in known else resolve(node.module))
        targets.discard(None)
        targets.discard(module)
        graph[module] = {target for target in targets if target is not None}
    return graph


def upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from a lower layer to a higher one."""
    return sorted(
        (source, target)
        for source, targets in graph.items()
        for target in targets
        if rank(target) > rank(source)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def draw(graph: dict[str, set[str]], out: Path) -> None:
    """The graph with one column per layer, modules as labelled points, imports as grey lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [*LAYERS, ENTRY]
    placed: dict[str, tuple[float, float]] = {}
    for column, name in enumerate(columns):
        members = sorted(module for module in graph if layer(module) == name)
        for row, module in enumerate(members):
            placed[module] = (column * 3.0, -row)
    height = max(-y for _, y in placed.values()) + 2
    figure, axes = plt.subplots(figsize=(18, max(6, height * 0.28)))
    for source, targets in graph.items():
        for target in targets:
            if source in placed and target in placed:
                (x0, y0), (x1, y1) = placed[source], placed[target]
                colour = f"C{columns.index(layer(source)) % 10}" if layer(source) in columns else "0.7"
                axes.plot([x0, x1], [y0, y1], color=colour, alpha=0.35, linewidth=0.6, zorder=1)
    for module, (x, y) in placed.items():
        axes.scatter([x], [y], s=12, color=f"C{columns.index(layer(module)) % 10}", zorder=2)
        axes.text(x + 0.08, y, module.removeprefix("bench."), fontsize=6, va="center", zorder=3)
    for column, name in enumerate(columns):
        axes.text(column * 3.0, 1.2, name, fontsize=11, fontweight="bold")
    axes.set_axis_off()
    axes.set_title(
        "Imports between the modules of bench, one column per layer; each line is coloured by the importing "
        "module's layer and runs to a column on its left or its own (no import points right)",
        pad=28,
    )
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="draw the graph into this PNG file")
    arguments = parser.parse_args(argv)
    graph = imports(modules())
    problems = [f"upward import: {source} imports {target}" for source, target in upward(graph)]
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    print(
        "\n".join(problems)
        or f"{len(graph)} modules, {sum(map(len, graph.values()))} imports: no cycle, none upward"
    )
    if arguments.out is not None:
        draw(graph, arguments.out)
        print(f"drawn: {arguments.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
