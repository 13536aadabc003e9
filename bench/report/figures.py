"""Figures: PNG and PDF files in the report folder, each configuration (label) in one colour throughout.

Every figure is drawn from the tidy tables alone: ``ok`` (summary rows of the runs that finished) and
``curves`` (long metrics of a task's runs with their ``label``, ``seed``, ``status``, ``stopped_at`` and
``step_time_ms``). Bands are 95% confidence intervals over seeds (seaborn's bootstrap with a fixed seed for
curves over steps, the t-interval for curves over time), so a rebuilt figure is the same figure.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.report.declarations import Panel  # noqa: E402
from bench.report.statistics import t_half_width, training_time  # noqa: E402

BAND = ("ci", 95)
BOOTSTRAP_SEED = 0


def palette_for(labels: list[str]) -> dict[str, tuple]:
    """One colour per label, the same in every figure of the report."""
    colours = sns.color_palette("tab10" if len(labels) <= 10 else "tab20", len(labels))
    return dict(zip(sorted(labels), colours, strict=True))


def save(figure: plt.Figure, directory: Path, stem: str) -> str:
    """Write ``stem``.png and ``stem``.pdf into ``directory``; returns the PNG's file name."""
    figure.tight_layout()
    # bbox_inches="tight": long labels must not push titles and axis labels off the canvas.
    figure.savefig(directory / f"{stem}.png", dpi=130, bbox_inches="tight")
    figure.savefig(directory / f"{stem}.pdf", bbox_inches="tight")
    plt.close(figure)
    return f"{stem}.png"


def count_text(counts: list[int]) -> str:
    """ "3" when every configuration has 3 seeds, "2–3" when they differ."""
    return f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"


def panel_data(panel: Panel, curves: pd.DataFrame) -> pd.DataFrame:
    data = curves[(curves["metric"] == panel.metric) & curves["value"].notna()]
    if panel.skip_step_zero:
        data = data[data["step"] > 0]
    if panel.log:
        data = data[data["value"] > 0]
    return data


def draw_panel(axis: plt.Axes, panel: Panel, data: pd.DataFrame, palette: dict, annotate: bool) -> None:
    """Mean and 95% CI band over seeds for runs that finished; runs that stopped early (diverged, failed
    part-way) thin and dashed, ending in a cross where they stopped."""
    finished = data[data["status"] == "ok"]
    stopped = data[data["status"] != "ok"]
    if not finished.empty:
        # Runs of one seed (a run redone elsewhere) are one replicate.
        means = finished.groupby(["label", "seed", "step"], as_index=False)["value"].mean()
        sns.lineplot(
            data=means,
            x="step",
            y="value",
            hue="label",
            hue_order=sorted(means["label"].unique()),
            palette=palette,
            errorbar=BAND,
            seed=BOOTSTRAP_SEED,
            ax=axis,
        )
    for (_run, label, status, stopped_at), group in stopped.groupby(["run", "label", "status", "stopped_at"]):
        group = group.sort_values("step")
        axis.plot(group["step"], group["value"], "--", lw=0.8, color=palette[label], alpha=0.8)
        axis.plot(group["step"].iloc[-1:], group["value"].iloc[-1:], "x", ms=9, mew=2, color=palette[label])
        if annotate:
            axis.annotate(
                f"{label}: {status} at step {stopped_at:.0f}",
                (group["step"].iloc[-1], group["value"].iloc[-1]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
                color=palette[label],
            )
    if panel.horizontal_line is not None:
        axis.axhline(panel.horizontal_line, color="grey", ls="--", lw=1)
    if panel.log:
        axis.set_yscale("log")
    axis.grid(alpha=0.3)


def figure_panels(
    task: str,
    stem: str,
    title: str,
    panels: tuple[Panel, ...],
    curves: pd.DataFrame,
    palette: dict,
    directory: Path,
) -> str | None:
    """Panels of metrics over training steps in one figure (one panel: one plot); None when no panel has
    data at two steps or more. A panel without data is left blank."""
    data = [panel_data(panel, curves) for panel in panels]
    shown = [not frame.empty and frame["step"].nunique() >= 2 for frame in data]
    if not any(shown):
        return None
    single = len(panels) == 1
    columns = 1 if single else 2 if len(panels) <= 4 else 3
    rows = math.ceil(len(panels) / columns)
    size = (7, 4.5) if single else (5.5 * columns, 3.75 * rows)
    figure, axes = plt.subplots(rows, columns, figsize=size, sharex=not single, squeeze=False)
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    seeds, stopped, legend = [], False, None
    for axis, panel, frame, visible in zip(axes.flat, panels, data, shown, strict=False):
        if not visible:
            axis.set_visible(False)
            continue
        draw_panel(axis, panel, frame, palette, annotate=single)
        finished = frame[frame["status"] == "ok"]
        seeds += finished.groupby("label")["seed"].nunique().tolist()
        stopped = stopped or (frame["status"] != "ok").any()
        if single:  # the title names the panel; a long one would not fit along the axis
            ylabel = panel.title if len(panel.title) <= 40 else panel.metric
            axis.set(xlabel="training step", ylabel=ylabel + (" (log scale)" if panel.log else ""))
        else:
            axis.set(title=panel.title, xlabel="training step", ylabel="")
        if axis.get_legend() is not None:
            if legend is None:
                legend = axis
            else:
                axis.get_legend().remove()
    if legend is not None:
        legend.legend(fontsize=8 if single else 7)
    band = f"mean, 95% CI band over {count_text(seeds or [0])} seeds"
    band += "; ✕ = run stopped early" if stopped else ""
    if single:
        axes.flat[0].set_title(f"{task}: {title or panels[0].title}\n({band})")
    else:
        figure.suptitle(f"{task}: {title} ({band})")
    return save(figure, directory, stem)


def figure_variance(task: str, ok: pd.DataFrame, palette: dict, directory: Path) -> str | None:
    """Gradient variance at the end per configuration: each run a dot, mean and 95% CI over runs."""
    data = ok[ok["grad_variance"] > 0]
    if data.empty:
        return None
    order = data.groupby("label")["grad_variance"].mean().sort_values().index.tolist()
    figure, axis = plt.subplots(figsize=(7, 0.5 * len(order) + 1.8))
    common = dict(data=data, y="label", x="grad_variance", hue="label", order=order, palette=palette, ax=axis)
    sns.pointplot(**common, errorbar=BAND, seed=BOOTSTRAP_SEED, linestyles="none", legend=False)
    sns.stripplot(**common, alpha=0.4, size=4, legend=False)
    axis.set_xscale("log")
    axis.set(
        xlabel="gradient variance at the end (trace of covariance, log scale)",
        ylabel="",
        title=f"{task}: gradient variance per estimator (mean, 95% CI over seeds)",
    )
    axis.grid(axis="x", which="both", alpha=0.3)
    return save(figure, directory, f"{task}_variance")


def figure_bias_variance(task: str, ok: pd.DataFrame, palette: dict, directory: Path) -> str | None:
    """Bias against variance, one point per run (bars ±1 SE), with the noise floor √(variance/M)."""
    data = ok[(ok["grad_variance"] > 0) & ok["grad_bias"].notna()]
    if data.empty:
        return None
    figure, axis = plt.subplots(figsize=(7, 5))
    for label, group in data.groupby("label"):
        axis.errorbar(
            group["grad_variance"],
            group["grad_bias"],
            yerr=group["grad_bias_se"],
            fmt="o",
            color=palette[label],
            label=label,
            alpha=0.8,
            capsize=2,
        )
    # The noise floor: an unbiased estimator's grad_bias is about grad_bias_se = sqrt(variance / M).
    draws = float(data["probe_draws"].median()) if "probe_draws" in data else math.nan
    if math.isfinite(draws):
        span = np.geomspace(data["grad_variance"].min() / 2, data["grad_variance"].max() * 2, 50)
        axis.plot(span, np.sqrt(span / draws), "k--", lw=1, label=f"noise floor √(variance/M), M={draws:.0f}")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set(
        xlabel="gradient variance (log)",
        ylabel="gradient bias ‖ḡ − g*‖ (log)",
        title=f"{task}: bias against variance (one point per run, bars ±1 SE)",
    )
    axis.legend(fontsize=8, loc="best")
    axis.grid(which="both", alpha=0.3)
    return save(figure, directory, f"{task}_bias_variance")


def figure_by_training_time(
    task: str, metric: str, ylabel: str, curves: pd.DataFrame, palette: dict, directory: Path
) -> str | None:
    """``metric`` against training time: per configuration, each run's curve interpolated onto a common
    time grid (log scale: configurations can differ in speed by orders of magnitude), mean and 95% CI band."""
    data = curves[(curves["metric"] == metric) & (curves["status"] == "ok")].copy()
    data["time"] = training_time(data)
    data = data[data["time"].notna()]
    if data.empty or data["step"].nunique() < 2:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    counts = []
    for label, group in sorted(data.groupby("label"), key=lambda item: item[0]):
        runs = [run.sort_values("time") for _, run in group.groupby("run")]
        start = max(run.loc[run["time"] > 0, "time"].min() for run in runs)
        end = min(run["time"].max() for run in runs)
        if not (math.isfinite(start) and end > start):
            continue
        grid = np.geomspace(start, end, 60)
        values = np.array([np.interp(grid, run["time"], run["value"]) for run in runs])
        mean = values.mean(0)
        half = t_half_width(values) if len(runs) > 1 else np.zeros_like(mean)
        axis.plot(grid, mean, color=palette[label], label=label)
        axis.fill_between(grid, mean - half, mean + half, color=palette[label], alpha=0.25, lw=0)
        counts.append(len(runs))
    if not counts:
        plt.close(figure)
        return None
    axis.set_xscale("log")
    axis.set(
        xlabel="training time, s (log scale) = step × median step time, probes excluded",
        ylabel=ylabel,
        title=f"{task}: {ylabel} by training time\n(mean, 95% CI band over {count_text(counts)} seeds)",
    )
    axis.grid(which="both", alpha=0.3)
    axis.legend(fontsize=8)
    return save(figure, directory, f"{task}_{metric}_by_time")
