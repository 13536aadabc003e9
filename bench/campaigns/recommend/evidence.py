"""The same-point evidence of a recommendation: every candidate's gradient at the leader's checkpoints.

Read from the evidence run's ``study.csv`` (``bench.campaigns.same_point``): per candidate at its equal-cost
S and per checkpoint, the test of zero bias (Holm-adjusted over every p-value of this table, so that the
verdicts hold together), the squared bias and the variance of one estimate, both relative to ‖g*‖², and
the *horizon MSE* ‖b‖² + V/H: an optimizer that averages its gradients over about H steps (Adam with
β₁ = 0.9: H = 1/(1 − β₁) = 10) averages the variance V down by H but keeps the bias b.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from bench.campaigns.recommend.plan import Plan
from bench.formats.contract import STUDY_FILE
from bench.report.same_point.statistics import HORIZON
from bench.report.statistics import holm

ALPHA = 0.05
EXACT = 1e-6  # a constant draw within this squared distance of g* (relative to ‖g*‖²) is the gradient


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_evidence(folder: Path, plan: Plan) -> dict[str, Any]:
    """``{"checkpoints": [steps], "reference": kind, "candidates": {key: {...}}}`` (module docstring)."""
    rows: dict[tuple[str, int, int], dict[str, float]] = {}
    steps: dict[int, int] = {}
    with (folder / STUDY_FILE).open(newline="") as stream:
        for row in csv.DictReader(stream):
            checkpoint = int(row["checkpoint"])
            steps[checkpoint] = int(row["step"])
            if not row["samples"]:
                continue
            key = (row["estimator"], int(row["samples"]), checkpoint)
            rows.setdefault(key, {})[row["metric"]] = number(row["value"])
    checkpoints = sorted(steps)
    found: dict[str, Any] = {}
    tests: list[tuple[str, int, float]] = []
    for candidate in plan.candidates:
        per = []
        for checkpoint in checkpoints:
            values = rows.get((candidate.estimator, candidate.samples, checkpoint))
            if values is None:
                continue
            variance = values.get("grad_variance", math.nan)
            bias_sq = values.get("grad_bias_sq", math.nan)
            p = values.get("grad_bias_p", math.nan)
            entry = {
                "step": steps[checkpoint],
                "p": p,
                "bias_sq_rel": values.get("grad_bias_rel", math.nan),
                "variance_rel": values.get("grad_variance_rel", math.nan),
                "bias_sq": bias_sq,
                "variance": variance,
                "mse": values.get("grad_mse", math.nan),
                "horizon_mse": bias_sq + variance / HORIZON,
                "horizon_mse_rel": values.get("grad_bias_rel", math.nan)
                + values.get("grad_variance_rel", math.nan) / HORIZON,
                "varies": bool(math.isfinite(variance) and variance > 0),
            }
            per.append(entry)
            if math.isfinite(p):
                tests.append((candidate.key, len(per) - 1, p))
        found[candidate.key] = {"checkpoints": per}
    adjusted = holm([p for _, _, p in tests])
    for (key, index, _), value in zip(tests, adjusted, strict=True):
        found[key]["checkpoints"][index]["p_holm"] = float(value)
    for item in found.values():
        tested = [entry for entry in item["checkpoints"] if "p_holm" in entry]
        item["tested"] = len(tested)
        item["rejected"] = sum(entry["p_holm"] < ALPHA for entry in tested)
        item["smallest_p_holm"] = min((entry["p_holm"] for entry in tested), default=None)
        item["constant_at"] = [entry["step"] for entry in item["checkpoints"] if not entry["varies"]]
        # Draws that do not vary have no test, but their bias is known exactly: their one value against g*.
        item["exact_at"] = [
            entry["step"]
            for entry in item["checkpoints"]
            if not entry["varies"] and abs(entry["bias_sq_rel"]) <= EXACT
            if math.isfinite(entry["bias_sq_rel"])
        ]
        # Relative to ‖g*‖² at each checkpoint, so that checkpoints of different scales count alike.
        finite = [
            entry["horizon_mse_rel"]
            for entry in item["checkpoints"]
            if math.isfinite(entry["horizon_mse_rel"])
        ]
        item["horizon_mse_rel"] = sum(finite) / len(finite) if finite else None
    return {
        "checkpoints": [steps[checkpoint] for checkpoint in checkpoints],
        "family": f"Holm over the {len(tests)} bias tests of this table (each candidate at each checkpoint)",
        "candidates": found,
    }
