"""The layout by layer: no import cycle, no import from a lower layer to a higher one, a short top level."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)


def test_no_module_imports_a_higher_layer_and_no_imports_form_a_cycle():
    graph = import_graph.imports(import_graph.modules())
    assert len(graph) > 50  # the analysis found the package
    assert import_graph.upward(graph) == []
    assert import_graph.cycles(graph) == []


def test_the_checks_see_an_upward_import_and_a_cycle():
    # Negative controls on a made-up graph: a run module importing the report, and two modules importing
    # each other (the cycle build -> probe -> probe.reference -> build that the layout removed).
    graph = {
        "bench.run.build": {"bench.run.probe", "bench.formats.errors"},
        "bench.run.probe": {"bench.run.probe.reference"},
        "bench.run.probe.reference": {"bench.run.build", "bench.report.figures"},
        "bench.report.figures": set(),
        "bench.formats.errors": set(),
    }
    assert import_graph.upward(graph) == [("bench.run.probe.reference", "bench.report.figures")]
    assert import_graph.cycles(graph) == [["bench.run.build", "bench.run.probe", "bench.run.probe.reference"]]


def test_the_top_level_holds_the_layer_folders_and_entry_modules_only():
    package = ROOT / "bench"
    folders = {path.name for path in package.iterdir() if path.is_dir() and path.name != "__pycache__"}
    assert folders <= {*import_graph.LAYERS, "conf"}, folders
    for path in package.glob("*.py"):
        if path.name == "__init__.py":
            continue
        # An entry module hands over to bench.cli in a few lines and holds no logic of its own.
        code = [
            line
            for line in path.read_text().splitlines()
            if line.strip() and not line.startswith(('"""', "#"))
        ]
        assert len(code) <= 6 and any("bench.cli" in line for line in code), (path.name, code)
