"""The answer of a recommendation from its runs: the best candidate at equal cost, the ties, the evidence
for why, and the caveats; written as ``recommendation.json`` (its fields:
``bench.formats.contract.RECOMMENDATION_FIELDS``) and ``recommendation.md``.

**Criterion.** Each leader's final objective (the validation objective where the task records one) over the
stage-2 seeds. The best is the lowest mean. Every other leader is compared with it paired over the seeds
(the same seed: the same data order and initial point): the mean difference with its 95% t-interval and a
paired t-test, Holm-adjusted over the comparisons of the table; "indistinguishable" where the adjusted p is
0.05 or more. The intervals are unadjusted, the tie verdicts adjusted (both said under the table).

**The answer.** The best; where it is indistinguishable from other leaders, the tied group is named, and
within it an estimator whose bias the same-point evidence does not detect is preferred to one whose bias it
does (at equal objective an unbiased gradient keeps improving with more steps, a biased one stalls at the
bias's fixed point), then the lowest mean.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from scipy import stats

from bench.campaigns.recommend.evidence import ALPHA, HORIZON
from bench.campaigns.recommend.plan import Candidate, Plan, RecommendFailed
from bench.campaigns.recommend.settings import Settings
from bench.formats.contract import METRICS_FILE, OK
from bench.formats.tables import markdown_table
from bench.formats.version import code_version
from bench.report.statistics import holm

CRITERION = (
    "final objective (the validation objective where the task records one) over the stage-2 seeds, every "
    "candidate at equal cost in evaluations of f and at its own best learning rate of the stage-1 grid"
)
PREDICTOR = "horizon_mse_rel"  # the same-point statistic the evidence reports as the predictor of training


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval (the interval is the mean twice for fewer than two values or equal values)."""
    mean = sum(values) / len(values)
    if len(values) < 2 or max(values) == min(values):
        return mean, mean, mean
    spread = stats.tstd(values) / math.sqrt(len(values)) * stats.t.ppf(0.975, len(values) - 1)
    return mean, mean - spread, mean + spread


def by_seed(outcomes: list[Any]) -> dict[int, float]:
    """Score per seed of the ok runs (the seed is the folder's ``seed=N``)."""
    found = {}
    for outcome in outcomes:
        if outcome.status == OK and math.isfinite(outcome.score):
            found[int(outcome.folder.name.split("=")[-1])] = outcome.score
    return found


def still_falling(outcomes: list[Any], metric: str | None) -> tuple[float, float] | None:
    """The slope (per 100 steps) of the objective over the last half of the stage-2 probes, seeds pooled with
    an intercept of their own, and its one-sided p-value (slope < 0); None when there are too few points."""
    xs, ys = [], []
    for outcome in outcomes:
        if outcome.status != OK or metric is None:
            continue
        points = []
        with (outcome.folder / METRICS_FILE).open(newline="") as stream:
            for row in csv.DictReader(stream):
                if row["metric"] == metric:
                    points.append((int(row["step"]), float(row["value"])))
        points = [point for point in points if math.isfinite(point[1])]
        tail = points[len(points) // 2 :]
        if len(tail) < 3:
            continue
        mean_x = sum(x for x, _ in tail) / len(tail)
        mean_y = sum(y for _, y in tail) / len(tail)
        xs += [x - mean_x for x, _ in tail]
        ys += [y - mean_y for _, y in tail]
    if len(xs) < 6 or not any(xs):
        return None
    sxx = sum(x * x for x in xs)
    slope = sum(x * y for x, y in zip(xs, ys, strict=True)) / sxx
    residual = sum((y - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    freedom = len(xs) - 2
    if freedom <= 0 or residual <= 0:
        return slope * 100, 0.0 if slope < 0 else 1.0
    error = math.sqrt(residual / freedom / sxx)
    return slope * 100, float(stats.t.cdf(slope / error, freedom))


def compare(leaders: list[Candidate], stage_two: dict[str, list[Any]]) -> tuple[str | None, dict[str, Any]]:
    """The best leader and, per leader, its stage-2 summary and its paired comparison with the best."""
    rows: dict[str, Any] = {}
    for candidate in leaders:
        scores = by_seed(stage_two.get(candidate.key, []))
        if scores:
            mean, low, high = t_interval(list(scores.values()))
            rows[candidate.key] = {
                "scores": scores,
                "mean": mean,
                "low": low,
                "high": high,
                "seeds": len(scores),
            }
    if not rows:
        return None, rows
    complete = max(row["seeds"] for row in rows.values())
    best = min(
        (key for key, row in rows.items() if row["seeds"] == complete), key=lambda key: rows[key]["mean"]
    )
    others = [key for key in rows if key != best]
    pvalues = []
    for key in others:
        common = sorted(set(rows[key]["scores"]) & set(rows[best]["scores"]))
        differences = [rows[key]["scores"][seed] - rows[best]["scores"][seed] for seed in common]
        mean, low, high = t_interval(differences) if differences else (math.nan,) * 3
        if len(differences) >= 2 and max(differences) > min(differences):
            p = float(stats.ttest_1samp(differences, 0.0).pvalue)
        else:
            p = 1.0 if not differences or all(value == 0 for value in differences) else 0.0
        identical = bool(differences) and all(value == 0 for value in differences)
        rows[key]["comparison"] = {
            "difference": mean,
            "low": low,
            "high": high,
            "p": p,
            "pairs": len(common),
            "identical": identical,
        }
        pvalues.append(p)
    for key, adjusted in zip(others, map(float, holm(pvalues)), strict=True):
        rows[key]["comparison"]["p_holm"] = adjusted
        rows[key]["comparison"]["tied"] = adjusted >= ALPHA
    return best, rows


def biased(evidence: dict[str, Any] | None, key: str) -> bool | None:
    """Whether the same-point evidence rejects zero bias for ``key`` at any checkpoint (None: not tested)."""
    if evidence is None or key not in evidence["candidates"]:
        return None
    item = evidence["candidates"][key]
    return None if not item["tested"] else item["rejected"] > 0


def decide(
    plan: Plan,
    settings: Settings,
    stage_one: dict[str, dict[float, list[Any]]],
    chosen: dict[str, tuple[float, float]],
    stage_two: dict[str, list[Any]],
    evidence: dict[str, Any] | None,
    evidence_note: str | None,
    failures: list[str],
) -> dict[str, Any]:
    keyed = {item.key: item for item in plan.candidates}
    leaders = [keyed[key] for key in stage_two]
    best, rows = compare(leaders, stage_two)
    if best is None:
        raise RecommendFailed("no stage-2 run finished:\n  " + "\n  ".join(failures))
    tied = [key for key, row in rows.items() if row.get("comparison", {}).get("tied")]
    group = [best, *tied]
    unbiased_group = [key for key in group if biased(evidence, key) is False]
    recommended = best
    if biased(evidence, best) and unbiased_group:
        recommended = min(unbiased_group, key=lambda key: rows[key]["mean"])
    pick = keyed[recommended]
    lr = chosen[recommended][0]
    metric = next((o.metric for o in stage_two.get(recommended, []) if o.metric), None)
    optimizers = len(settings.optimizers)
    caveats = list(plan.notes)
    if len(plan.candidates) == 1:
        caveats.insert(0, f"only one estimator fits this task ({pick.estimator}): the answer is its settings")
    grid = plan.learning_rates(pick)
    for key in rows:
        rate = chosen[key][0]
        if len(grid) > 1 and rate in (
            min(plan.learning_rates(keyed[key])),
            max(plan.learning_rates(keyed[key])),
        ):
            caveats.append(
                f"{keyed[key].label(optimizers)}: its learning rate {rate:g} is at the edge of its grid "
                f"({', '.join(f'{value:g}' for value in plan.learning_rates(keyed[key]))}); the best may lie "
                "outside it"
            )
    for key, row in rows.items():
        if row.get("comparison", {}).get("identical"):
            caveats.append(
                f"{keyed[key].label(optimizers)} and {keyed[best].label(optimizers)} gave identical "
                "objectives on every seed: the same estimator under two names, or both exact on this task"
            )
    falling = still_falling(stage_two.get(recommended, []), metric)
    if falling is not None and falling[1] < ALPHA:
        caveats.append(
            f"the {metric} of {pick.label(optimizers)} is still falling at the end of its {plan.steps} steps "
            f"(slope {falling[0]:.3g} per 100 steps over the last half of its curve, one-sided p = "
            f"{falling[1]:.2g}): with more steps the objective, and possibly the ranking, would change"
        )
    if evidence is not None:
        for key, item in evidence["candidates"].items():
            constant, exact = item["constant_at"], item.get("exact_at") or []
            if constant and exact == constant == [entry["step"] for entry in item["checkpoints"]]:
                caveats.append(
                    f"{keyed[key].label(optimizers)} is exact on this task: its draws do not vary and equal "
                    "the reference gradient at every checkpoint (it enumerates every outcome at this S)"
                )
            elif constant:
                caveats.append(
                    f"{keyed[key].label(optimizers)}: its draws do not vary at step(s) "
                    f"{', '.join(map(str, constant))} (deterministic there): its bias is tested at the other "
                    "checkpoints only"
                )
    if plan.reference == "none":
        caveats.append("the task has no reference gradient: the evidence leaves out bias (variance only)")
    if evidence_note:
        caveats.append(evidence_note)
    candidates = []
    for item in plan.candidates:
        entry: dict[str, Any] = {
            "key": item.key,
            "estimator": item.estimator,
            "samples": item.samples,
            "optimizer": item.optimizer,
            "f_evals": item.f_evals,
            "declared_unbiased": item.unbiased,
            "lr_grid": plan.learning_rates(item),
            "chosen_lr": chosen.get(item.key, (None, None))[0],
            "stage_one_score": chosen.get(item.key, (None, math.inf))[1],
            "stage_two": rows.get(item.key),
        }
        if entry["stage_two"] is not None:
            entry["stage_two"] = {k: v for k, v in entry["stage_two"].items() if k != "scores"} | {
                "scores": {str(seed): value for seed, value in rows[item.key]["scores"].items()}
            }
        if evidence is not None and item.key in evidence["candidates"]:
            entry["evidence"] = evidence["candidates"][item.key]
        candidates.append(entry)
    answer = answer_text(pick, lr, rows, recommended, best, tied, keyed, optimizers, evidence, plan)
    return {
        "task": plan.task,
        "overrides": plan.overrides,
        "answer": answer,
        "recommended": {
            "estimator": pick.estimator,
            "samples": pick.samples,
            "optimizer": pick.optimizer,
            "lr": lr,
            "f_evals": pick.f_evals,
            "objective": rows[recommended]["mean"],
            "objective_low": rows[recommended]["low"],
            "objective_high": rows[recommended]["high"],
        },
        "best_by_objective": best,
        "ties": tied,
        "criterion": CRITERION,
        "objective_metric": metric,
        "budget_minutes": float(settings.budget_minutes),
        "budget_f_evals": plan.budget_f_evals,
        "steps": plan.steps,
        "stage_two_seeds": plan.stage_two_seeds,
        "reference": plan.reference,
        "enumeration": plan.enumeration,
        "predictor": PREDICTOR,
        "evidence_checkpoints": evidence["checkpoints"] if evidence else [],
        "evidence_family": evidence["family"] if evidence else None,
        "candidates": candidates,
        "left_out": plan.left_out,
        "caveats": caveats,
        "failures": failures,
        "code_version": code_version(),
    }


def bias_phrase(evidence: dict[str, Any] | None, key: str) -> str:
    if evidence is None or key not in evidence["candidates"]:
        return "no same-point evidence"
    item = evidence["candidates"][key]
    if not item["tested"]:
        if item.get("exact_at") and len(item["exact_at"]) == len(item["checkpoints"]):
            return "exact here: its draws do not vary and equal the reference gradient at every checkpoint"
        return "bias not testable here (no reference gradient, or draws that do not vary)"
    if item["rejected"]:
        return (
            f"biased at {item['rejected']} of {item['tested']} checkpoints "
            f"(Holm-adjusted p down to {item['smallest_p_holm']:.2g})"
        )
    return f"no detectable bias at any of {item['tested']} checkpoints"


def answer_text(
    pick: Candidate,
    lr: float,
    rows: dict[str, Any],
    recommended: str,
    best: str,
    tied: list[str],
    keyed: dict[str, Candidate],
    optimizers: int,
    evidence: dict[str, Any] | None,
    plan: Plan,
) -> str:
    row = rows[recommended]
    parts = [
        f"Use {pick.label(optimizers)} with {pick.optimizer} at learning rate {lr:g}: final objective "
        f"{row['mean']:.4g} [{row['low']:.4g}, {row['high']:.4g}] over {row['seeds']} seeds at "
        f"{pick.f_evals} evaluations of f per estimate; {bias_phrase(evidence, recommended)}."
    ]
    if recommended != best:
        parts.append(
            f"{keyed[best].label(optimizers)} has the lowest mean ({rows[best]['mean']:.4g}) but is "
            f"indistinguishable from it at this budget and {bias_phrase(evidence, best)}."
        )
    others = [key for key in tied if key != recommended] + ([best] if recommended != best else [])
    others = [key for key in dict.fromkeys(others) if key != recommended and key != best]
    if others:
        parts.append(
            f"{' and '.join(keyed[key].label(optimizers) for key in [recommended, *others])} are "
            "indistinguishable at this budget."
        )
    if plan.enumeration:
        parts.append(plan.enumeration[0].upper() + plan.enumeration[1:] + ".")
    return " ".join(parts)


def markdown(document: dict[str, Any]) -> str:
    """``recommendation.md``: the answer, why, the leaders' table, every candidate, the caveats, how."""
    lines = [f"# Recommendation for task `{document['task']}`", "", f"**{document['answer']}**", ""]
    if document["overrides"]:
        lines += [f"Command line: `{' '.join(document['overrides'])}`.", ""]
    lines += ["## Why", ""]
    candidates = document["candidates"]
    leaders = [item for item in candidates if item["stage_two"]]
    table = []
    for item in sorted(leaders, key=lambda entry: entry["stage_two"]["mean"]):
        two = item["stage_two"]
        comparison = two.get("comparison")
        table.append(
            {
                "candidate": f"{item['estimator']} (S = {item['samples']}, {item['optimizer']})",
                "lr": f"{item['chosen_lr']:g}",
                "final objective (95% interval)": f"{two['mean']:.4g} [{two['low']:.4g}, {two['high']:.4g}]",
                "seeds": two["seeds"],
                "minus the best (95% interval)": "best"
                if comparison is None
                else f"{comparison['difference']:+.3g} [{comparison['low']:+.3g}, {comparison['high']:+.3g}]",
                "p (Holm)": "" if comparison is None else f"{comparison['p_holm']:.2g}",
                "verdict": "best"
                if comparison is None
                else ("indistinguishable" if comparison["tied"] else "worse"),
                "bias (same-point evidence)": evidence_cell(item),
            }
        )
    if table:
        import pandas as pd

        lines += [
            f"The leaders of stage 1, rerun on {len(document['stage_two_seeds'])} fresh seeds "
            f"({document['steps']} steps, {document['budget_f_evals']} evaluations of f per estimate each):",
            "",
            markdown_table(pd.DataFrame(table)),
            "",
            "Differences are paired over seeds; intervals unadjusted, p-values and verdicts Holm-adjusted "
            "over the comparisons of this table. Bias: "
            + (document["evidence_family"] or "no same-point evidence")
            + ".",
            "",
        ]
    others = []
    for item in candidates:
        evidence = item.get("evidence") or {}
        others.append(
            {
                "candidate": f"{item['estimator']} (S = {item['samples']}, {item['optimizer']})",
                "declared unbiased": "yes" if item["declared_unbiased"] else "no",
                "stage-1 best lr": "" if item["chosen_lr"] is None else f"{item['chosen_lr']:g}",
                "stage-1 objective": fmt(item["stage_one_score"]),
                "bias": evidence_cell(item),
                f"horizon MSE / ‖g*‖² (H = {HORIZON:g})": fmt(evidence.get("horizon_mse_rel")),
            }
        )
    if others:
        import pandas as pd

        lines += [
            "Every candidate (stage 1: one seed per learning rate; the same-point evidence at steps "
            f"{', '.join(map(str, document['evidence_checkpoints'])) or '-'} of the recommended trajectory):",
            "",
            markdown_table(pd.DataFrame(others)),
            "",
            "The horizon MSE is the squared bias plus the variance of one estimate over H (Adam averages its "
            "gradients over about H = 1/(1 − β₁) steps, which averages variance away but not bias), relative "
            "to ‖g*‖² and averaged over the checkpoints: the same-point statistic reported as the predictor "
            "of training (see the results page's predictive-validity table).",
            "",
            *unbiased_but_rejected(candidates),
        ]
    if document["caveats"]:
        lines += ["## Caveats", "", *(f"- {caveat}" for caveat in document["caveats"]), ""]
    if document["left_out"]:
        lines += ["## Left out", "", *(f"- {name}: {why}" for name, why in document["left_out"].items()), ""]
    lines += [
        "## How",
        "",
        f"Criterion: {document['criterion']}. Budget {document['budget_minutes']:g} min "
        f"({document['elapsed_minutes']:.1f} min used); runs in `{document['folder']}`; "
        "`python -m bench.report` on that folder gives every table and figure of its runs.",
        "",
    ]
    return "\n".join(lines)


MARGINAL_P = 1e-3
"""A Holm-adjusted p above this, for an estimator that declares itself unbiased, reads as a possible false
rejection: the test is liberal in its far tail for heavy-tailed draws (up to 6x at alpha = 0.001,
scripts/bias_calibration.py)."""


def unbiased_but_rejected(candidates: list[dict[str, Any]]) -> list[str]:
    """A paragraph on each candidate that declares itself unbiased and that the bias test rejects: what the
    rejection can mean, so that the table is not read as a proof of bias."""
    lines = []
    for item in candidates:
        evidence = item.get("evidence") or {}
        if not (item["declared_unbiased"] and evidence.get("rejected")):
            continue
        smallest = evidence["smallest_p_holm"]
        where = (
            f"at {evidence['rejected']} of {evidence['tested']} checkpoints (smallest Holm p {smallest:.2g})"
        )
        if smallest > MARGINAL_P:
            lines.append(
                f"`{item['estimator']}` declares itself unbiased, and the test rejects {where}: a rejection "
                "this marginal is within what the table's 5% family error allows, and the test is liberal in "
                "its far tail for heavy-tailed draws (the results page's bias calibration); a defect would "
                "show at most checkpoints with far smaller p."
            )
        else:
            lines.append(
                f"`{item['estimator']}` declares itself unbiased, yet the test rejects {where}: check the "
                "estimator and the task (`python -m bench.check unbiasedness`)."
            )
    return [*lines, ""] if lines else []


def evidence_cell(item: dict[str, Any]) -> str:
    evidence = item.get("evidence")
    if not evidence:
        return "-"
    if not evidence["tested"]:
        exact = evidence.get("exact_at") or []
        return (
            "exact (constant draws = g*)"
            if exact and len(exact) == len(evidence["checkpoints"])
            else "not testable"
        )
    if evidence["rejected"]:
        smallest = evidence["smallest_p_holm"]
        return f"biased at {evidence['rejected']}/{evidence['tested']} (smallest Holm p {smallest:.2g})"
    return f"none detected at {evidence['tested']}/{evidence['tested']}"


def fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) and math.isfinite(value) else "-"


def write(document: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    import json

    from bench.formats.contract import RECOMMENDATION_FILE, RECOMMENDATION_REPORT
    from bench.formats.files import atomic_write_text, strict

    json_path, md_path = folder / RECOMMENDATION_FILE, folder / RECOMMENDATION_REPORT
    atomic_write_text(json_path, json.dumps(strict(document), indent=2, allow_nan=False, default=str) + "\n")
    atomic_write_text(md_path, markdown(document))
    return json_path, md_path
