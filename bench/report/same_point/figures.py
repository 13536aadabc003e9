"""Figures of a report's studies: MSE, variance and ‖g*‖ along training, the paired MSE ratio against the
baseline per checkpoint, and the cross-probe matrix (PNG and PDF in the report folder)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.report.figures import write_files  # noqa: E402
from bench.report.same_point.statistics import member_label, over_seeds  # noqa: E402


def colours(names: list[str]) -> dict[str, tuple]:
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: palette(index % palette.N) for index, name in enumerate(sorted(names))}


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
    for axis, (metric, name) in zip(axes, panels, strict=False):
        for (estimator, samples), group in table.groupby(["estimator", "samples"]):
            label = member_label(estimator, samples)
            values = group[group[metric] > 0]
            by_step = values.groupby("step")[metric]
            centre = by_step.apply(lambda v: float(np.exp(np.log(v).mean())))
            x = [position[step] for step in centre.index]
            axis.plot(x, centre.to_numpy(), marker="o", ms=3, color=palette[label], label=label)
            axis.fill_between(
                x, by_step.min().to_numpy(), by_step.max().to_numpy(), color=palette[label], alpha=0.15
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
    figure.suptitle(title, fontsize=10)
    return save(figure, directory, stem)


def figure_paired(
    paired: pd.DataFrame, baseline: str, palette: dict, directory: Path, stem: str, title: str
) -> str | None:
    """The paired MSE ratio against the baseline per checkpoint: per seed, 1 + (mean difference ± 1.96 paired
    standard errors) / the baseline's MSE; the line is the geometric mean over seeds, the band its interval
    from resampling the seeds (with at least ``MINIMUM_SEEDS``)."""
    chosen = paired[(paired["variant"] == "fixed") & (paired["baseline"] == baseline)]
    if chosen.empty:
        return None
    keys = ["seed", "step", "estimator", "samples", "baseline_samples"]
    table = chosen.pivot_table(index=keys, columns="metric", values="value", aggfunc="first").reset_index()
    if "mse_ratio" not in table:
        return None
    steps = sorted(table["step"].unique())
    position = {step: index for index, step in enumerate(steps)}
    figure, axis = plt.subplots(figsize=(7.5, 4.2))
    members = list(table.groupby(["estimator", "samples"]))
    width = 0.6 / max(1, len(members))
    for number, ((estimator, samples), group) in enumerate(members):
        label = member_label(estimator, samples)
        offset = (number - (len(members) - 1) / 2) * width
        baseline_mse = group["mse_difference"] / (group["mse_ratio"] - 1)
        low = 1 + (group["mse_difference"] - 1.96 * group["mse_difference_se"]) / baseline_mse
        high = 1 + (group["mse_difference"] + 1.96 * group["mse_difference_se"]) / baseline_mse
        x = np.array([position[step] for step in group["step"]]) + offset
        ratio = group["mse_ratio"].to_numpy()
        axis.errorbar(
            x,
            ratio,
            yerr=[np.clip(ratio - low.to_numpy(), 0, None), np.clip(high.to_numpy() - ratio, 0, None)],
            fmt="o",
            ms=3,
            color=palette[label],
            alpha=0.6,
            lw=1,
        )
        by_step = [
            (step, over_seeds(values, log=True)) for step, values in group.groupby("step")["mse_ratio"]
        ]
        x = [position[step] + offset for step, _ in by_step]
        axis.plot(x, [value[0] for _, value in by_step], color=palette[label], label=label)
        if all(not math.isnan(value[1]) for _, value in by_step):  # enough seeds: the interval over seeds
            lows, highs = [value[1] for _, value in by_step], [value[2] for _, value in by_step]
            axis.fill_between(x, lows, highs, color=palette[label], alpha=0.15, lw=0)
    axis.axhline(1.0, color="0.3", lw=0.8, ls="--")
    axis.set_yscale("log")
    axis.set_ylabel(f"MSE / MSE of {baseline} (paired, same draws' noise)")
    checkpoint_axis(axis, steps)
    axis.legend(fontsize=7, ncol=2)
    axis.set_title(title, fontsize=10)
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
