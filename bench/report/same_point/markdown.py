"""The Markdown of a report's studies, per task and trajectory (the package docstring says what it shows)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench.formats.tables import markdown_table
from bench.report.palette import palette_for
from bench.report.same_point.figures import figure_cross_probe, figure_paired, figure_progress
from bench.report.same_point.statistics import (
    BIAS_LEVEL,
    INTERVAL_TEXT,
    MINIMUM_SEEDS,
    RANKED_BY,
    aggregate,
    baseline_of,
    bias_adjusted,
    bias_family,
    coverage_text,
    fixed_members,
    member_label,
    over_seeds,
    pairing_gain,
    ranked_by_horizon,
    shared_trajectory,
    sharpened_pairs,
    wide,
)
from bench.report.same_point.tables import STUDY_LABEL, read_study_tables


def with_interval(estimate: float, low: float, high: float, spec: str = ".3g") -> str:
    if math.isnan(estimate):
        return "—"
    if math.isnan(low):
        return format(estimate, spec)
    return f"{estimate:{spec}} [{low:{spec}}, {high:{spec}}]"


def study_section(directory: Path) -> str:
    """The report's Markdown on the studies in ``directory``'s study tables (writing the figures there); ""
    when there is none."""
    tables = read_study_tables(directory)
    if tables is None:
        return ""
    study, paired = tables
    lines = [
        "## Same-point gradient studies",
        "",
        "Every estimator probed at the same parameters: the checkpoints of a trajectory trained by one "
        "estimator, with common random numbers (the same noise behind every draw m). Gradient statistics "
        "elsewhere in this report are each run's own, at its own parameters; runs marked "
        f"`{STUDY_LABEL.strip()}` there are the trajectories of these studies.",
        "",
    ]
    for task in sorted(study["task"].unique()):
        lines += task_lines(task, study[study["task"] == task], paired[paired["task"] == task], directory)
    return "\n".join(lines) + "\n"


def task_lines(task: str, study: pd.DataFrame, paired: pd.DataFrame, directory: Path) -> list[str]:
    lines = [f"### Task `{task}`", ""]
    members = wide(study)
    checkpoints = study[study["samples"].isna()]
    fixed = fixed_members(paired, members)
    in_fixed = [(e, float(s)) in fixed for e, s in zip(members["estimator"], members["samples"], strict=True)]
    members_fixed = members[in_fixed]
    baseline = baseline_of(study, members_fixed)
    # The figures draw the fixed-samples members only: the equal-cost variants (other S) are tables.
    palette = palette_for(
        [
            member_label(e, s)
            for e, s in zip(members_fixed["estimator"], members_fixed["samples"], strict=True)
        ]
    )
    matrix = {}
    for trajectory in sorted(members["trajectory"].unique()):
        table = members_fixed[members_fixed["trajectory"] == trajectory]
        seeds = sorted(table["seed"].unique())
        steps = sorted(table["step"].unique())
        draws = checkpoints[(checkpoints["trajectory"] == trajectory) & (checkpoints["metric"] == "draws")][
            "value"
        ]
        lines += [
            f"#### Trajectory trained by `{trajectory}`",
            "",
            f"{len(seeds)} seed(s), checkpoints at steps {', '.join(str(int(step)) for step in steps)}; "
            f"M = {int(draws.iloc[0]) if len(draws) else '?'} draws per estimator and checkpoint; every "
            f"estimator at S = {', '.join(sorted({str(int(s)) for s in table['samples']}))}.",
            "",
        ]
        lines += seed_lines(len(seeds), study[study["trajectory"] == trajectory])
        summary = aggregate(table, baseline)
        gains = pairing_gain(paired[paired["trajectory"] == trajectory], baseline)
        shown = pd.DataFrame(
            {
                "estimator": [
                    member_label(e, s) for e, s in zip(summary["estimator"], summary["samples"], strict=True)
                ],
                "f_evals": [int(value) if not math.isnan(value) else "—" for value in summary["f_evals"]],
                f"mean rank by {RANKED_BY}": [with_interval(*value[:3], ".2f") for value in summary["rank"]],
                f"MSE / {baseline}'s": [with_interval(*value[:3]) for value in summary["mse"]],
                f"variance / {baseline}'s": [with_interval(*value[:3]) for value in summary["variance"]],
                "biased (Holm, 5%)": summary["biased"],
                "paired SE / unpaired SE": [
                    f"{gains[key]:.2f}" if key in gains else "—"
                    for key in zip(summary["estimator"], summary["samples"], strict=True)
                ],
            }
        )
        lines += [
            "Over checkpoints and seeds (a seed's value is its mean over the checkpoints; mean over seeds, "
            f"geometric for ratios, with {INTERVAL_TEXT} when there are ≥ {MINIMUM_SEEDS} seeds); best "
            "first. `biased`: probes (checkpoints × seeds) where the test of zero bias rejects at 5% after "
            f"adjustment; `paired SE / unpaired SE`: the median ratio of the standard errors of the MSE "
            f"difference against {baseline}, < 1 where the common random numbers made the comparison "
            "sharper:",
            "",
            markdown_table(shown),
            "",
            f"Bias test: {bias_family(table)}. {coverage_text()}",
            "",
        ]
        lines += per_checkpoint_lines(table)
        lines += variant_lines(paired[paired["trajectory"] == trajectory], baseline)
        sharpened = sharpened_pairs(paired[paired["trajectory"] == trajectory])
        if not sharpened.empty:
            shown = pd.DataFrame(
                {
                    "pair": [
                        f"{member_label(a, s)} − {member_label(b, t)}"
                        for a, s, b, t in sharpened[
                            ["estimator", "samples", "baseline", "baseline_samples"]
                        ].itertuples(index=False)
                    ],
                    "paired SE / unpaired SE": [f"{value:.2f}" for value in sharpened["gain"]],
                    "correlation of ‖ĝ − g*‖²": [f"{value:.2f}" for value in sharpened["correlation"]],
                }
            )
            lines += [
                "Pairs whose MSE difference the common random numbers measure more sharply (median over "
                "checkpoints and seeds of the paired standard error over the unpaired one, below 0.8):",
                "",
                markdown_table(shown),
                "",
            ]
        stem = f"study_{task}_{trajectory}"
        progress = figure_progress(
            table,
            checkpoints[checkpoints["trajectory"] == trajectory],
            palette,
            directory,
            f"{stem}_progress",
            f"{task}: trajectory trained by {trajectory}",
        )
        lines.append(f"![{stem}_progress]({progress})")
        name = figure_paired(
            paired[paired["trajectory"] == trajectory],
            baseline,
            palette,
            directory,
            f"{stem}_paired",
            f"{task}, trajectory {trajectory}: MSE against {baseline}, paired per checkpoint",
        )
        lines += ["", f"![{stem}_paired]({name})" if name else "", ""]
        matrix[trajectory] = {
            member_label(e, s): value[0]
            for e, s, value in zip(summary["estimator"], summary["samples"], summary["mse"], strict=True)
        }
    if len(matrix) > 1:
        frame = pd.DataFrame(matrix).T
        name = figure_cross_probe(
            frame,
            directory,
            f"study_{task}_cross_probe",
            f"{task}: MSE / {baseline}'s at the checkpoints of each trajectory",
        )
        lines += [
            "Cross-probe matrix: the trajectory trained by A (rows) × the estimator probed at its "
            f"checkpoints (columns), MSE relative to {baseline}'s (geometric mean over checkpoints and "
            "seeds):",
            "",
            markdown_table(frame.map(lambda value: f"{value:.3g}").reset_index(names="trained by")),
            "",
            f"![cross-probe]({name})",
            "",
        ]
    return lines


def seed_lines(seeds: int, study: pd.DataFrame) -> list[str]:
    """What a trajectory's seeds allow: no interval with fewer than ``MINIMUM_SEEDS``; and, when the seeds
    share one trajectory (``shared_trajectory``), that the intervals measure the probes' noise only."""
    lines = []
    if seeds < MINIMUM_SEEDS:
        lines += [
            f"Only {seeds} seed(s): fewer than {MINIMUM_SEEDS}, so no interval over seeds is given "
            "(the checkpoints of one trajectory are correlated and do not make up for seeds).",
            "",
        ]
    if seeds > 1 and shared_trajectory(study):
        lines += [
            f"**The {seeds} seeds share one trajectory**: its parameters are the same at every checkpoint "
            "in every seed (the trajectory does not depend on the seed), so the seeds differ only in the "
            "probes' own noise: the intervals over seeds below say how precisely these checkpoints were "
            "measured, not how the comparison varies between trajectories.",
            "",
        ]
    return lines


def variant_lines(paired: pd.DataFrame, baseline: str) -> list[str]:
    """The equal-cost comparisons (``bench.campaigns.same_point.roster``): where they choose other sample
    counts than the fixed-samples one, every member's MSE and variance relative to the variant's RLOO member
    (geometric mean over checkpoints, then over seeds)."""
    lines = []
    members = {
        variant: set(zip(group["estimator"], group["samples"], strict=True))
        for variant, group in paired.groupby("variant")
    }
    fixed = members.get("fixed", set())
    for variant in sorted(set(members) - {"fixed"}):
        if members[variant] == fixed:
            lines += [
                f"`{variant}` (evaluations of f matched to {baseline}'s): every estimator takes the same S "
                "as above here, so it is the same comparison.",
                "",
            ]
            continue
        group = paired[(paired["variant"] == variant) & (paired["baseline"] == baseline)]
        rows = []
        for (estimator, samples, against), pair in group.groupby(
            ["estimator", "samples", "baseline_samples"]
        ):
            values = {}
            for metric in ("mse_ratio", "variance_ratio"):
                chosen = pair[(pair["metric"] == metric) & (pair["value"] > 0)]
                per_seed = chosen.groupby("seed")["value"].apply(lambda v: float(np.exp(np.log(v).mean())))
                values[metric] = with_interval(*over_seeds(per_seed, log=True)[:3])
            rows.append(
                {
                    "estimator": member_label(estimator, samples),
                    f"against {baseline}": member_label(baseline, against),
                    "MSE ratio": values["mse_ratio"],
                    "variance ratio": values["variance_ratio"],
                }
            )
        if rows:
            lines += [
                f"`{variant}`: at equal evaluations of f per estimate (`f_evals`), against {baseline}:",
                "",
                markdown_table(pd.DataFrame(rows)),
                "",
            ]
    return lines


def per_checkpoint_lines(table: pd.DataFrame) -> list[str]:
    """Rank by the horizon MSE at each checkpoint (mean over seeds) and the bias test's verdict."""
    if "grad_mse" not in table:
        return []
    ranked = table.assign(rank=ranked_by_horizon(table, ["seed", "checkpoint"]))
    ranks = ranked.pivot_table(index=["estimator", "samples"], columns="step", values="rank", aggfunc="mean")
    shown = ranks.map(lambda value: f"{value:.1f}")
    if "grad_bias_p" in table:
        biased = table.assign(biased=bias_adjusted(table) < BIAS_LEVEL).pivot_table(
            index=["estimator", "samples"], columns="step", values="biased", aggfunc="mean"
        )
        shown = shown.where(biased.reindex_like(shown).fillna(0) < 0.5, shown + " ᵇ")
    shown.columns = [f"step {int(step)}" for step in shown.columns]
    shown = shown.reset_index()
    shown.insert(
        0,
        "estimator",
        [member_label(e, s) for e, s in zip(shown.pop("estimator"), shown.pop("samples"), strict=True)],
    )
    order = ranks.mean(axis=1).to_numpy().argsort(kind="stable")
    return [
        f"Rank by the {RANKED_BY} at each checkpoint (1 = lowest; mean over seeds: the same-point statistic "
        "that best predicted training in the predictive-validity study); ᵇ: the test of zero bias rejects at "
        f"{BIAS_LEVEL:.0%} at most seeds, {bias_family(table)}:",
        "",
        markdown_table(shown.iloc[order]),
        "",
    ]
