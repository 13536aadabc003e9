"""Figures of a report's studies: MSE, variance and ‖g*‖ along training, the paired MSE ratio against the
baseline per checkpoint, and the cross-probe matrix (PNG and PDF in the report folder).

Colours are the report's (``bench.report.palette``: one per estimator, in every figure); intervals are
computed on the scale they are drawn on (log ratios on a log axis); with fewer than ``MINIMUM_SEEDS`` seeds
each seed's value is drawn and no band; estimators whose values coincide are drawn with their own dashes and
markers and named ("rebar = relax")."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.report.figures import write_files  # noqa: E402
from bench.report.palette import coinciding, groups_note, styles  # noqa: E402
from bench.report.same_point.statistics import MINIMUM_SEEDS, member_label, over_seeds  # noqa: E402

Z95 = 1.959963984540054  # the normal 97.5% quantile: a checkpoint's interval from its M draws
ROUNDING = 1e-8
"""An MSE below this fraction of the largest at the same checkpoint is rounding error: the estimator is
exact there (LEG or the unordered-set estimator on one variable). Such members are named, not drawn: on a
log axis they would squeeze every other member into a sliver of it."""


def at_rounding_level(table: pd.DataFrame) -> list[str]:
    """Members (labels) whose ``grad_mse`` is below ``ROUNDING`` times the largest member's at the same seed
    and checkpoint, everywhere."""
    if "grad_mse" not in table or table.empty:
        return []
    largest = table.groupby(["seed", "step"])["grad_mse"].transform("max")
    tiny = table.assign(tiny=table["grad_mse"] < ROUNDING * largest)
    found = tiny.groupby(["estimator", "samples"])["tiny"].all()
    return sorted(member_label(estimator, samples) for (estimator, samples), flag in found.items() if flag)


def rounding_note(labels: list[str], of: str = "the largest at the checkpoint") -> str:
    """The title's line naming the members not drawn because their MSE is rounding error."""
    return f"not drawn (MSE at rounding level, < {ROUNDING:g} of {of}): {', '.join(labels)}" if labels else ""


def save(figure: plt.Figure, directory: Path, stem: str) -> str:
    figure.tight_layout()
    return write_files(figure, directory, stem)


def checkpoint_axis(axis: plt.Axes, steps: list[int]) -> None:
    """x: the checkpoints in order, labelled by their training step (log-spaced steps read as a log axis)."""
    axis.set_xticks(range(len(steps)), [str(step) for step in steps])
    axis.set_xlabel("training step of the checkpoint")


def figure_progress(
    table: pd.DataFrame, checkpoints: pd.DataFrame, palette: dict, directory: Path, stem: str, title: str
) -> str:
    """MSE, variance (log scale) and ‖g*‖ against training progress: geometric mean over seeds, band
    min–max over seeds."""
    steps = sorted(table["step"].unique())
    position = {step: index for index, step in enumerate(steps)}
    panels = [
        (metric, name)
        for metric, name in (("grad_mse", "MSE"), ("grad_variance", "variance"))
        if metric in table
    ]
    figure, axes = plt.subplots(1, len(panels) + 1, figsize=(4.6 * (len(panels) + 1), 3.8))
    seeds = table["seed"].nunique()
    exact = at_rounding_level(table)
    notes = [rounding_note(exact)] if exact else []
    labels = [member_label(e, s) for e, s in zip(table["estimator"], table["samples"], strict=True)]
    table = table[~pd.Series(labels, index=table.index).isin(exact)]
    for axis, (metric, name) in zip(axes, panels, strict=False):
        centres = {}
        for (estimator, samples), group in table.groupby(["estimator", "samples"]):
            values = group[group[metric] > 0]
            centre = values.groupby("step")[metric].apply(lambda v: float(np.exp(np.log(v).mean())))
            centres[member_label(estimator, samples)] = centre.reindex(steps).to_numpy(dtype=float)
        groups = coinciding(centres, log=True)
        style = styles(centres, groups)
        if groups and groups_note(groups) not in notes:
            notes.append(groups_note(groups))
        for (estimator, samples), group in table.groupby(["estimator", "samples"]):
            label = member_label(estimator, samples)
            drawn = style[label]
            values = group[group[metric] > 0]
            by_step = values.groupby("step")[metric]
            x = [position[step] for step in steps]
            axis.plot(
                x,
                centres[label],
                ls=drawn.line,
                marker=drawn.marker,
                ms=4 if drawn.filled else 6,
                mfc=palette[label] if drawn.filled else "none",
                color=palette[label],
                label=drawn.legend,
            )
            if seeds >= MINIMUM_SEEDS:
                low, high = by_step.min().reindex(steps), by_step.max().reindex(steps)
                axis.fill_between(x, low.to_numpy(), high.to_numpy(), color=palette[label], alpha=0.15)
            else:  # too few seeds for a band: each seed's value
                axis.plot(
                    [position[step] for step in values["step"]],
                    values[metric],
                    ".",
                    ms=3,
                    color=palette[label],
                    alpha=0.6,
                )
        axis.set_yscale("log")
        axis.set_title(f"{name} of one estimate (at the same parameters)", fontsize=9)
        checkpoint_axis(axis, steps)
    axis = axes[-1]
    norms = checkpoints[checkpoints["metric"] == "reference_norm"]
    for _, group in norms.groupby("seed"):
        axis.plot(
            [position[step] for step in group["step"]],
            group["value"],
            marker="o",
            ms=3,
            color="0.4",
            alpha=0.7,
        )
    axis.set_yscale("log")
    axis.set_title("‖g*‖, the true gradient (one line per seed)", fontsize=9)
    checkpoint_axis(axis, steps)
    # Beside the last panel: inside the first, the legend hid the lines it names.
    axes[-1].legend(
        *axes[0].get_legend_handles_labels(), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0)
    )
    spread = (
        "band: min–max over seeds"
        if seeds >= MINIMUM_SEEDS
        else f"dots: each seed (fewer than {MINIMUM_SEEDS}: no band)"
    )
    lines = [title, f"(line: geometric mean over {seeds} seed(s); {spread})", *notes]
    figure.suptitle("\n".join(textwrap.fill(line, 160) for line in lines), fontsize=10)
    return save(figure, directory, stem)


def figure_paired(
    paired: pd.DataFrame, baseline: str, palette: dict, directory: Path, stem: str, title: str
) -> str | None:
    """The paired MSE ratio against the baseline per checkpoint, on a log axis, every interval on the log
    scale: per seed, the ratio with exp(log ratio ± 1.96 ``mse_log_ratio_se``), its paired standard error
    from the M draws (tables written before that metric existed: the seeds' points without bars); the line
    is the geometric mean over seeds and the band its t-interval over seeds (``over_seeds``, with at least
    ``MINIMUM_SEEDS`` seeds)."""
    chosen = paired[(paired["variant"] == "fixed") & (paired["baseline"] == baseline)]
    if chosen.empty:
        return None
    keys = ["seed", "step", "estimator", "samples", "baseline_samples"]
    table = chosen.pivot_table(index=keys, columns="metric", values="value", aggfunc="first").reset_index()
    if "mse_ratio" not in table:
        return None
    table = table[table["mse_ratio"] > 0]
    labels = pd.Series(
        [member_label(e, s) for e, s in zip(table["estimator"], table["samples"], strict=True)],
        index=table.index,
    )
    exact = sorted(set(labels[table["mse_ratio"] < ROUNDING]) - set(labels[table["mse_ratio"] >= ROUNDING]))
    table = table[~labels.isin(exact)]
    steps = sorted(table["step"].unique())
    position = {step: index for index, step in enumerate(steps)}
    seeds = table["seed"].nunique()
    bars = "mse_log_ratio_se" in table and table["mse_log_ratio_se"].notna().any()
    figure, axis = plt.subplots(figsize=(7.5, 4.2))
    members = list(table.groupby(["estimator", "samples"]))
    means = {
        member_label(estimator, samples): np.array(
            [
                over_seeds(group.loc[group["step"] == step, "mse_ratio"], log=True)[0]
                if (group["step"] == step).any()
                else np.nan
                for step in steps
            ]
        )
        for (estimator, samples), group in members
    }
    groups = coinciding(means, log=True)
    style = styles(means, groups)
    width = 0.6 / max(1, len(members))
    for number, ((estimator, samples), group) in enumerate(members):
        label = member_label(estimator, samples)
        drawn = style[label]
        offset = (number - (len(members) - 1) / 2) * width
        x = np.array([position[step] for step in group["step"]]) + offset
        ratio = group["mse_ratio"].to_numpy(dtype=float)
        error = None
        if bars:
            spread = Z95 * group["mse_log_ratio_se"].to_numpy(dtype=float)
            spread = np.where(np.isfinite(spread), spread, 0.0)
            error = [ratio - ratio * np.exp(-spread), ratio * np.exp(spread) - ratio]
        axis.errorbar(
            x,
            ratio,
            yerr=error,
            fmt=drawn.marker,
            ms=3,
            color=palette[label],
            mfc=palette[label] if drawn.filled else "none",
            alpha=0.6,
            lw=1,
        )
        by_step = [
            (step, over_seeds(values, log=True)) for step, values in group.groupby("step")["mse_ratio"]
        ]
        x = [position[step] + offset for step, _ in by_step]
        axis.plot(
            x, [value[0] for _, value in by_step], color=palette[label], ls=drawn.line, label=drawn.legend
        )
        if all(not math.isnan(value[1]) for _, value in by_step):  # enough seeds: the interval over seeds
            lows, highs = [value[1] for _, value in by_step], [value[2] for _, value in by_step]
            axis.fill_between(x, lows, highs, color=palette[label], alpha=0.15, lw=0)
    axis.axhline(1.0, color="0.3", lw=0.8, ls="--")
    axis.set_yscale("log")
    axis.set_ylabel(f"MSE / MSE of {baseline} (paired, same draws' noise)")
    checkpoint_axis(axis, steps)
    # Beside the axes: inside, a long legend hides the points it names.
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    per_seed = (
        "dots: each seed, bars ×/÷ exp(1.96 SE of the log ratio) over the M draws"
        if bars
        else "dots: each seed (no per-seed bars: these tables predate mse_log_ratio_se)"
    )
    band = (
        "band: 95% t-interval over seeds of the log ratio"
        if seeds >= MINIMUM_SEEDS
        else f"fewer than {MINIMUM_SEEDS} seeds: no band"
    )
    lines = [title, f"(line: geometric mean over {seeds} seed(s); {band};", f"{per_seed})"]
    lines += [groups_note(groups)] if groups else []
    lines += [rounding_note(exact, baseline + "'s")] if exact else []
    axis.set_title("\n".join(textwrap.fill(line, 85) for line in lines), fontsize=9)
    return save(figure, directory, stem)


def figure_cross_probe(matrix: pd.DataFrame, directory: Path, stem: str, title: str) -> str:
    """Heat map: rows the trajectories (trained by), columns the estimators probed, cells the MSE relative
    to the baseline (geometric mean over checkpoints and seeds), log colour scale."""
    values = np.log10(matrix.to_numpy(dtype=float))
    figure, axis = plt.subplots(figsize=(1.1 * matrix.shape[1] + 2.5, 0.7 * matrix.shape[0] + 1.8))
    limit = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
    image = axis.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    axis.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(matrix.shape[0]), [f"trained by {name}" for name in matrix.index], fontsize=8)
    for (row, column), value in np.ndenumerate(matrix.to_numpy(dtype=float)):
        if np.isfinite(value):
            axis.text(column, row, f"{value:.3g}", ha="center", va="center", fontsize=7)
    figure.colorbar(image, ax=axis, label="log10 MSE relative to the baseline")
    axis.set_title(title, fontsize=10)
    return save(figure, directory, stem)
