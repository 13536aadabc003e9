"""A short fault-injection soak (``scripts/soak.py``): four runs of a joblib sweep under a few seconds of
chaos (workers killed with SIGKILL, SIGTERM or SIGINT, the disk filled where a tmpfs can be mounted, a
checkpoint corrupted), re-run until done: every run ends ok, with the metrics of a clean sweep. The full
soak (105 runs) is the script's own. Marked ``soak``: not in the default run (about 50 s), ``pytest -m soak``
runs it."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.soak


def load_soak():
    spec = importlib.util.spec_from_file_location("soak", ROOT / "scripts" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_short_soak_ends_with_every_run_ok_and_equal_to_a_clean_sweep(tmp_path):
    soak = load_soak()
    report = soak.soak(tmp_path, ["rloo", "st"], seeds=2, seconds=5, seed=3, tmpfs_mb=16, interval=(0.1, 0.3))
    figures = report["figures"]
    assert report["ok"], report["problems"]
    assert figures["runs"] == figures["runs_ok"] == 4 and figures["runs_lost"] == 0
    assert figures["metrics_differing"] == 0 and report["bench_check_exit"] == 0
    faults = ("sent_SIGKILL", "sent_SIGTERM", "sent_SIGINT", "disk_full", "checkpoints_corrupted")
    assert sum(figures[name] for name in faults) >= 1, report["chaos_log"]
