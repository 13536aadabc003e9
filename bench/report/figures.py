"""Figures: PNG and PDF files in the report folder, each configuration (label) in one colour throughout.

Every figure is drawn from the tidy tables alone: ``ok`` (summary rows of the runs that finished),
``curves`` (long metrics of a task's runs with their ``label``, ``seed``, ``status``, ``stopped_at`` and
``step_time_ms``) and what the report computed from them. Bands and bars are the report's one interval over
seeds (``bench.report.statistics.interval``: t-interval, on the log scale for scale quantities), the same
numbers as the tables'. Beside each figure, ``<stem>.csv`` holds the numbers it draws (columns ``panel``,
``label``, the position, ``center``, ``low``, ``high``, ``seeds``), so a rebuilt figure is the same figure
and a reader can check it against the tables.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.formats.contract import OK
from bench.formats.names import file_name, inside
from bench.report.declarations import Panel  # noqa: E402
from bench.report.gradients import COSTS, Crossing, mse_at_budget  # noqa: E402
from bench.report.palette import Group, coinciding, groups_note, styles  # noqa: E402
from bench.report.statistics import (  # noqa: E402
    MINIMUM_BAND_SEEDS,
    bands,
    interval,
    on_log_scale,
    per_seed,
    training_time,
)
from bench.report.survival import KaplanMeier  # noqa: E402

BAND_ALPHA = 0.25


@dataclass
class Output:
    """How every figure of a report is written: the PNG's resolution, and a PDF beside it or not."""

    dpi: int = 130
    pdf: bool = True


OUTPUT = Output()


@contextlib.contextmanager
def output(dpi: int, pdf: bool) -> Iterator[None]:
    """Write figures at ``dpi`` (and a PDF beside each PNG when ``pdf``) within the block (a results page:
    small PNGs only)."""
    saved = Output(OUTPUT.dpi, OUTPUT.pdf)
    OUTPUT.dpi, OUTPUT.pdf = dpi, pdf
    try:
        yield
    finally:
        OUTPUT.dpi, OUTPUT.pdf = saved.dpi, saved.pdf


WRITTEN: list[Path] = []
"""Every file ``write_files`` and ``save`` wrote in this process, in order (the results page removes exactly
these when it draws again, ``bench.report.publish.page``)."""


def output_file(directory: Path, stem: str, suffix: str) -> Path:
    """Where a figure's file goes: ``bench.formats.names.file_name`` (the stem made safe: task and section
    names come from results folders, which are untrusted input) inside ``directory``, symbolic links
    resolved; ConfigError rather than a path outside it. Recorded in ``WRITTEN``."""
    path = inside(directory, file_name(stem, suffix))
    WRITTEN.append(path)
    return path


def write_files(figure: plt.Figure, directory: Path, stem: str) -> str:
    """``stem``.png (and ``stem``.pdf, see ``OUTPUT``) in ``directory``; closes the figure; returns the PNG's
    file name (``output_file``: the stem made safe)."""
    # bbox_inches="tight": long labels must not push titles and axis labels off the canvas.
    try:
        figure.savefig(output_file(directory, stem, ".png"), dpi=OUTPUT.dpi, bbox_inches="tight")
        if OUTPUT.pdf:
            figure.savefig(output_file(directory, stem, ".pdf"), bbox_inches="tight")
    finally:
        plt.close(figure)
    return file_name(stem, ".png")


def save(figure: plt.Figure, directory: Path, stem: str, data: pd.DataFrame | None = None) -> str:
    """Write ``stem``.png and ``stem``.pdf (and ``stem``.csv, the numbers drawn) into ``directory``;
    returns the PNG's file name (``output_file``: the stem made safe)."""
    figure.tight_layout()
    write_files(figure, directory, stem)
    if data is not None:
        data.to_csv(output_file(directory, stem, ".csv"), index=False)
    return file_name(stem, ".png")


def count_text(counts: list[int]) -> str:
    """ "3" when every configuration has 3 seeds, "2–3" when they differ."""
    return f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"


def interval_words(log: bool) -> str:
    return "geometric mean ×/÷ 95% t-interval" if log else "mean ± 95% t-interval"


def panel_data(panel: Panel, curves: pd.DataFrame) -> pd.DataFrame:
    data = curves[(curves["metric"] == panel.metric) & curves["value"].notna()]
    if panel.skip_step_zero:
        data = data[data["step"] > 0]
    if panel.log:
        data = data[data["value"] > 0]
    return data


def centre_series(band: pd.DataFrame, position: str) -> dict[str, np.ndarray]:
    """Each label's centre line at the positions of every label (NaN where it has none), for
    ``palette.coinciding``."""
    if band.empty:
        return {}
    wide = band.pivot_table(index=position, columns="label", values="center", aggfunc="first", dropna=False)
    return {str(label): wide[label].to_numpy(dtype=float) for label in wide.columns}


def few_seeds(band: pd.DataFrame) -> list[str]:
    """Labels of ``band`` with fewer than ``MINIMUM_BAND_SEEDS`` seeds at every position: drawn seed by
    seed, without a band."""
    if band.empty:
        return []
    most = band.groupby("label")["seeds"].max()
    return sorted(str(label) for label in most[most < MINIMUM_BAND_SEEDS].index)


def draw_band(
    axis: plt.Axes,
    band: pd.DataFrame,
    position: str,
    palette: dict,
    data: pd.DataFrame | None = None,
    log: bool = False,
) -> list[Group]:
    """Each label's centre line and its interval as a shaded band; a label with fewer than
    ``MINIMUM_BAND_SEEDS`` seeds gets each seed's own line from ``data`` (columns ``label``, ``seed``,
    ``position``, ``value``) instead of a band (a t-interval over two seeds is 12.7 standard errors wide).
    Labels whose centre lines coincide (``palette.coinciding``) are drawn with their own dashes and markers
    and named in the legend (``log``: the y axis is logarithmic, where closeness is judged). Returns those
    groups."""
    groups = coinciding(centre_series(band, position), log=log)
    style = styles(band["label"].unique(), groups)
    grouped = {label for group in groups for label in group.labels}
    few = set(few_seeds(band))
    for label, rows in band.groupby("label", sort=True):
        rows = rows.sort_values(position)
        colour, drawn = palette[label], style[label]
        marks = {}
        if label in grouped:
            index = next(group.labels.index(label) for group in groups if label in group.labels)
            marks = {
                "marker": drawn.marker,
                "ms": 5,
                "mfc": colour if drawn.filled else "white",
                "markevery": (index, max(2, len(rows) // 8)),
            }
        axis.plot(rows[position], rows["center"], color=colour, ls=drawn.line, label=drawn.legend, **marks)
        if label in few and data is not None:
            mine = data[data["label"] == label]
            for _, seed in mine.groupby("seed"):
                seed = seed.sort_values(position)
                dots = {"marker": ".", "ms": 3} if len(seed) <= 20 else {}  # a dense grid reads as a line
                axis.plot(seed[position], seed["value"], color=colour, lw=0.7, alpha=0.6, **dots)
        elif label not in few:
            axis.fill_between(rows[position], rows["low"], rows["high"], color=colour, alpha=BAND_ALPHA, lw=0)
    return groups


def band_notes(band: pd.DataFrame, groups: list[Group]) -> list[str]:
    """What a figure's caption adds about its bands: labels drawn seed by seed, and coinciding labels."""
    notes = []
    few = few_seeds(band)
    if few:
        notes.append(f"fewer than {MINIMUM_BAND_SEEDS} seeds ({', '.join(few)}): each seed's line, no band")
    if groups:
        notes.append(groups_note(groups))
    if band.attrs.get("clipped"):
        notes.append("bands clipped at the metric's bounds")
    return notes


def notes_text(panels: dict[str, list[str]]) -> str:
    """The caption's notes of several panels (title → its notes): a note every panel has once, any other
    after the titles of the panels it is about."""
    every = [note for notes in panels.values() for note in notes]
    lines = []
    for note in dict.fromkeys(every):
        titles = [title for title, notes in panels.items() if note in notes]
        lines.append(note if len(titles) == len(panels) else f"{', '.join(titles)}: {note}")
    return "\n".join(textwrap.fill(line, 120) for line in lines)


def draw_panel(
    axis: plt.Axes, panel: Panel, data: pd.DataFrame, palette: dict, annotate: bool
) -> pd.DataFrame:
    """The interval over seeds (``statistics.bands``) of the runs that finished; runs that stopped early
    (diverged, failed part-way) thin and dashed, ending in a cross where they stopped. Returns the band."""
    finished = data[data["status"] == OK]
    stopped = data[data["status"] != OK]
    band = bands(finished, "step", on_log_scale(panel.metric, panel.log))
    if panel.low is not None or panel.high is not None:  # a t-band of 3 seeds ran to a "fraction" of 2
        clipped = band[["low", "high"]].clip(lower=panel.low, upper=panel.high)
        band.attrs["clipped"] = bool((clipped != band[["low", "high"]]).any().any())
        band[["low", "high"]] = clipped
    band.attrs["groups"] = draw_band(axis, band, "step", palette, finished, log=panel.log)
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
    return band


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
    seeds, stopped, legend, drawn, scales, notes = [], False, None, [], set(), {}
    for axis, panel, frame, visible in zip(axes.flat, panels, data, shown, strict=False):
        if not visible:
            axis.set_visible(False)
            continue
        band = draw_panel(axis, panel, frame, palette, annotate=single)
        notes[panel.title] = band_notes(band, band.attrs.get("groups", []))
        drawn.append(band.assign(panel=panel.metric))
        scales.add(on_log_scale(panel.metric, panel.log))
        finished = frame[frame["status"] == OK]
        seeds += finished.groupby("label")["seed"].nunique().tolist()
        stopped = stopped or (frame["status"] != OK).any()
        if single:  # the title names the panel; a long one would not fit along the axis
            ylabel = panel.title if len(panel.title) <= 40 else panel.metric
            axis.set(xlabel="training step", ylabel=ylabel + (" (log scale)" if panel.log else ""))
        else:
            axis.set(title=panel.title, xlabel="training step", ylabel="")
        if axis.get_legend_handles_labels()[0]:
            if legend is None:
                legend = axis
    if legend is not None:
        legend.legend(fontsize=8 if single else 7)
    words = " / ".join(interval_words(log) for log in sorted(scales))
    band_text = f"{words} over {count_text(seeds or [0])} seeds"
    band_text += "; ✕ = run stopped early" if stopped else ""
    written = notes_text(notes)
    band_text += f";\n{written}" if written else ""
    if single:
        axes.flat[0].set_title(f"{task}: {title or panels[0].title}\n({band_text})")
    else:
        figure.suptitle(f"{task}: {title}\n({band_text})")
    table = pd.concat(drawn, ignore_index=True)
    return save(figure, directory, stem, table[["panel", "label", "step", "center", "low", "high", "seeds"]])


def figure_scale(
    task: str, point: pd.DataFrame, metric: str, where: str, palette: dict, directory: Path
) -> str | None:
    """A positive scale quantity per configuration at one probe point: each seed a dot, the geometric mean
    ×/÷ its 95% interval over seeds as a bar (log axis; configurations with zero values are listed)."""
    values = point[["label", "seed", metric]].rename(columns={metric: "value"})
    values = values[pd.to_numeric(values["value"], errors="coerce").notna()]
    if values.empty:
        return None
    rows = []
    for label, group in values.groupby("label"):
        found = interval(per_seed(group["value"], group["seed"], True), log=True)
        rows.append((label, found.center, found.low, found.high, found.count))
    table = pd.DataFrame(rows, columns=["label", "center", "low", "high", "seeds"])
    zero = table[~(table["center"] > 0)]["label"].tolist()
    shown = table[table["center"] > 0].sort_values("center")
    if shown.empty:
        return None
    figure, axis = plt.subplots(figsize=(7, 0.5 * len(shown) + 1.9))
    for position, row in enumerate(shown.itertuples()):
        colour = palette[row.label]
        seeds = values[(values["label"] == row.label) & (values["value"] > 0)]["value"]
        axis.plot(seeds, np.full(len(seeds), position), "o", color=colour, alpha=0.4, ms=4)
        if math.isfinite(row.low) and row.seeds >= MINIMUM_BAND_SEEDS:
            axis.plot([row.low, row.high], [position, position], color=colour, lw=2.5)
        axis.plot([row.center], [position], "D", color=colour, ms=7)
    axis.set_yticks(range(len(shown)), shown["label"])
    axis.invert_yaxis()
    axis.set_xscale("log")
    note = f"\nvalue 0 (not drawn): {', '.join(zero)}" if zero else ""
    few = shown.loc[shown["seeds"] < MINIMUM_BAND_SEEDS, "label"].tolist()
    if few:
        note += f"\nfewer than {MINIMUM_BAND_SEEDS} seeds (no bar): {', '.join(few)}"
    axis.set(
        xlabel=f"{metric} at {where} (log scale)",
        ylabel="",
        title=f"{task}: {metric} per configuration\n(dots: seeds; diamond and bar: "
        f"{interval_words(True)} over {count_text(shown['seeds'].tolist())} seeds){note}",
    )
    axis.grid(axis="x", which="both", alpha=0.3)
    return save(figure, directory, f"{task}_variance", table.assign(panel=metric))


def figure_bias_variance(
    task: str,
    parts: pd.DataFrame,
    draws: float,
    where: str,
    verdicts: dict[str, tuple[int, int]],
    palette: dict,
    directory: Path,
    family: str = "Holm over the probes of the table",
) -> str | None:
    """Squared bias against variance per configuration, both relative to ‖g*‖² where every run has them:
    the variance's geometric mean ×/÷ its interval (log x axis), the squared bias's mean ± its t-interval
    (symmetric-log y axis: the unbiased estimate can be negative); filled markers where the bias test
    rejects zero bias at that point (``verdicts``: per configuration, probes rejected and tested there,
    adjusted over ``family``, the table's). With fewer than ``MINIMUM_BAND_SEEDS`` seeds, each seed's point
    and no bars. Configurations at the same point (``palette.coinciding``) get their own marker shapes and
    are named beside it ("rebar = relax"). The dashed line is the probe's noise level V/M, the size of the
    noise subtracted from ‖ĝ − g*‖² to estimate ‖b‖²: squared biases well below it cannot be resolved."""
    data = parts[~parts["deterministic"] & (parts["variance"] > 0)]
    if data.empty:
        return None
    aside = sorted(set(parts["label"]) - set(data["label"]))
    exact = f"\nnot drawn (variance 0: draws do not vary): {', '.join(aside)}" if aside else ""
    relative = parts.attrs.get("relative", False)
    raw = data.assign(bias=data["raw_bias"]) if "raw_bias" in data else data
    rows = []
    for label, group in raw.groupby("label"):
        variance = interval(per_seed(group["variance"], group["seed"], True), log=True)
        bias = interval(per_seed(group["bias"], group["seed"]))
        rows.append(
            (
                label,
                variance.center,
                variance.low,
                variance.high,
                bias.center,
                bias.low,
                bias.high,
                bias.count,
            )
        )
    columns = ["label", "variance", "variance_low", "variance_high", "bias", "bias_low", "bias_high", "seeds"]
    table = pd.DataFrame(rows, columns=columns)
    figure, axis = plt.subplots(figsize=(9.5, 5.4))
    span = np.geomspace(table["variance"].min() / 3, table["variance"].max() * 3, 50)
    if math.isfinite(draws) and draws > 0:
        threshold = float(span[0] / draws)  # the noise level stays on the logarithmic part of the axis
    else:
        magnitudes = np.abs(table[["bias", "bias_low", "bias_high"]].to_numpy(float)).ravel()
        magnitudes = magnitudes[magnitudes > 0]
        threshold = float(magnitudes.min()) if len(magnitudes) else 1e-12
    # Where the axes place each point (log variance, symmetric-log bias), to find the ones drawn together.
    placed = pd.DataFrame(
        {
            "x": np.log10(table["variance"]),
            "y": np.sign(table["bias"]) * np.log10(1 + np.abs(table["bias"]) / threshold),
        }
    )
    points = {
        label: np.array([x, y]) for label, x, y in zip(table["label"], placed["x"], placed["y"], strict=True)
    }
    spans = np.array([np.ptp(placed["x"]) or 1.0, np.ptp(placed["y"]) or 1.0])
    groups = coinciding(points, spans=spans)
    style = styles(table["label"], groups)
    # What one estimate costs, written beside each configuration: at unequal cost a lower error can be bought
    # with more evaluations of f (the same-point study's equal-cost comparison matches them).
    costs = (
        pd.to_numeric(parts["f_evals"], errors="coerce").groupby(parts["label"]).median()
        if "f_evals" in parts
        else pd.Series(dtype=float)
    )
    unequal = costs.dropna().nunique() > 1
    for row in table.itertuples():
        colour = palette[row.label]
        rejected, tested = verdicts.get(row.label, (0, 0))
        bars = row.seeds >= MINIMUM_BAND_SEEDS
        drawn = style[row.label]
        cost = cost_text(costs.get(row.label)) if unequal else ""  # in the legend only when costs differ
        # Hollow (white) where the test does not reject; a second member of a coinciding group is drawn
        # smaller, so that the first shows around it.
        size = 8 if drawn.filled else 5
        axis.errorbar(
            [row.variance],
            [row.bias],
            xerr=[[row.variance - row.variance_low], [row.variance_high - row.variance]]
            if bars and math.isfinite(row.variance_low)
            else None,
            yerr=[[row.bias - row.bias_low], [row.bias_high - row.bias]]
            if bars and math.isfinite(row.bias_low)
            else None,
            fmt=drawn.marker,
            ms=size,
            color=colour,
            mfc=colour if rejected else "white",
            mew=2,
            capsize=3,
            label=(
                f"{drawn.legend}{cost}: {rejected} of {tested} probes biased"
                if tested
                else f"{drawn.legend}{cost}: no test"
            ),
        )
        if unequal and math.isfinite(costs.get(row.label, math.nan)):
            axis.annotate(
                f"{costs[row.label]:g} f",
                (row.variance, row.bias),
                xytext=(7, 5),
                textcoords="offset points",
                fontsize=7,
                color=colour,
            )
        if not bars:
            seeds = raw[raw["label"] == row.label]
            axis.plot(seeds["variance"], seeds["bias"], ".", color=colour, alpha=0.6, ms=5)
    for group in groups:
        first = table[table["label"] == group.labels[0]].iloc[0]
        axis.annotate(
            group.text,
            (first["variance"], first["bias"]),
            xytext=(8, -12),
            textcoords="offset points",
            fontsize=7,
        )
    if math.isfinite(draws) and draws > 0:
        axis.plot(span, span / draws, "k--", lw=1, label=f"probe noise level V/M (M = {draws:.0f})")
    axis.axhline(0, color="grey", lw=0.8)
    axis.set_xscale("log")
    axis.set_yscale("symlog", linthresh=threshold)
    unit = " / ‖g*‖²" if relative else ""
    few = table.loc[table["seeds"] < MINIMUM_BAND_SEEDS, "label"].tolist()
    few_text = (
        f"\nfewer than {MINIMUM_BAND_SEEDS} seeds (dots: seeds; no bars): {', '.join(few)}" if few else ""
    )
    axis.set(
        xlabel=f"variance of one estimate{unit} (log scale)",
        ylabel=f"squared bias ‖b‖²{unit} (symmetric log: linear within ±{threshold:.2g})",
        title=f"{task}: squared bias against variance at {where}\n(variance: {interval_words(True)};\n"
        f"‖b‖²: {interval_words(False)}; over {count_text(table['seeds'].tolist())} seeds;\n"
        f"filled: the bias test rejects zero bias at 5% at {where} in at least one seed,\n"
        f"{family})"
        + exact
        + few_text
        + (f"\n{groups_note(groups)}" if groups else "")
        + ("\nunequal cost: 'n f' beside a point is its evaluations of f per estimate" if unequal else ""),
    )
    axis.title.set_fontsize(9)
    # Outside the axes: inside, the legend hides the points it names.
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    axis.grid(which="both", alpha=0.3)
    return save(figure, directory, f"{task}_bias_variance", table.assign(panel="bias_variance"))


def cost_text(evaluations: float | None) -> str:
    """`` (n f)``: a configuration's evaluations of f per estimate in a legend; nothing when unknown."""
    if evaluations is None or not math.isfinite(evaluations):
        return ""
    return f" ({evaluations:g} f)"


def figure_by_training_time(
    task: str,
    metric: str,
    curves: pd.DataFrame,
    palette: dict,
    directory: Path,
    target: float | None = None,
) -> str | None:
    """``metric`` against training time: per configuration, each run's curve interpolated onto a common
    time grid (log scale: configurations can differ in speed by orders of magnitude), its interval over
    seeds at every grid point; the time-to-target level dashed."""
    data = curves[(curves["metric"] == metric) & (curves["status"] == OK) & curves["value"].notna()].copy()
    data["time"] = training_time(data)
    data = data[data["time"].notna()]
    if data.empty or data["step"].nunique() < 2:
        return None
    log = on_log_scale(metric)
    rows = []
    for label, group in data.groupby("label", sort=True):
        runs = [run.sort_values("time") for _, run in group.groupby("run")]
        start = max(run.loc[run["time"] > 0, "time"].min() for run in runs)
        end = min(run["time"].max() for run in runs)
        if not (math.isfinite(start) and end > start):
            continue
        grid = np.geomspace(start, end, 60)
        for run in runs:
            values = np.interp(grid, run["time"], run["value"])
            rows.append(
                pd.DataFrame({"label": label, "seed": run["seed"].iloc[0], "time": grid, "value": values})
            )
    if not rows:
        return None
    interpolated = pd.concat(rows, ignore_index=True)
    band = bands(interpolated, "time", log)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    groups = draw_band(axis, band, "time", palette, interpolated)
    notes = notes_text({metric: band_notes(band, groups)})
    if target is not None:
        axis.axhline(target, color="black", ls="--", lw=1, label=f"target {target:.4g}")
    axis.set_xscale("log")
    counts = band.groupby("label")["seeds"].max().tolist()
    axis.set(
        xlabel="training time, s (log scale) = step × median step time, probes excluded",
        ylabel=metric,
        title=f"{task}: {metric} by training time\n({interval_words(log)} over {count_text(counts)} seeds)"
        + (f"\n{notes}" if notes else ""),
    )
    axis.grid(which="both", alpha=0.3)
    axis.legend(fontsize=8)
    return save(figure, directory, f"{task}_{metric}_by_time", band.assign(panel=metric))


def figure_time_to_target(
    task: str,
    fits: dict[str, KaplanMeier],
    found: pd.DataFrame,
    target_text: str,
    palette: dict,
    directory: Path,
) -> str | None:
    """One panel per configuration (shared axes): the fraction of runs that reached the target by each
    training time with its 95% interval, as the time-to-target table gives it
    (``KaplanMeier.fraction_by``); a tick where a run was censored; the median time dotted."""
    if not fits:
        return None
    count = len(fits)
    columns = min(4, count)
    rows_count = math.ceil(count / columns)
    figure, axes = plt.subplots(
        rows_count,
        columns,
        figsize=(3.2 * columns + 0.6, 2.6 * rows_count + 0.9),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for axis in axes.flat[count:]:
        axis.set_visible(False)
    rows = []
    end = float(found["time"].max())
    positive = found.loc[found["time"] > 0, "time"]
    logarithmic = not positive.empty and positive.max() / positive.min() > 20
    for axis, (label, fit) in zip(axes.flat, sorted(fits.items()), strict=False):
        colour = palette[label]
        times = np.append(fit.timeline, end)
        reached, low, high = np.array([fit.fraction_by(time) for time in times]).T  # the table's numbers
        axis.step(times, reached, where="post", color=colour, lw=2)
        axis.fill_between(times, low, high, step="post", color=colour, alpha=BAND_ALPHA, lw=0)
        censored = found[(found["label"] == label) & ~found["reached"]]
        for time in censored["time"]:
            axis.plot([time], [fit.fraction_by(time)[0]], "|", color="black", ms=12, mew=2)
        if math.isfinite(fit.median):
            axis.axvline(fit.median, color=colour, ls=":", lw=1)
        axis.set_title(label, fontsize=9, color=colour)
        axis.set_ylim(-0.03, 1.03)
        axis.grid(alpha=0.3)
        if logarithmic:
            axis.set_xscale("symlog", linthresh=float(positive.min()))
        rows.append(
            pd.DataFrame({"label": label, "time": times, "center": reached, "low": low, "high": high})
        )
    for axis in axes[-1]:
        axis.set_xlabel("training time, s")
    for axis in axes[:, 0]:
        axis.set_ylabel("fraction reached")
    figure.suptitle(
        f"{task}: time to target\n{textwrap.fill(target_text, 120)}\n"
        "fraction of runs that reached it, 95% interval; | = censored run; dotted: median",
        fontsize=10,
    )
    data = pd.concat(rows, ignore_index=True).assign(panel="fraction_reached")
    return save(figure, directory, f"{task}_time_to_target", data)


def figure_work(
    task: str,
    parts: pd.DataFrame,
    cost: str,
    budget: float,
    crossings: list[Crossing],
    palette: dict,
    directory: Path,
) -> str | None:
    """MSE(T) = ‖b‖² + V·t/T against the budget T per configuration: the geometric mean ×/÷ its interval
    over seeds at each budget; configurations whose draws do not vary drawn as a vertical line at their cost
    (MSE 0 from there on); the stated budget dashed; crossings marked."""
    usable = parts[parts[cost].notna()]
    if usable.empty:
        return None
    name, unit, _ = COSTS[cost]
    low, high = float(usable[cost].min()), float(max(usable[cost].max(), budget))
    end = max([high * 100] + [2 * crossing.budget for crossing in crossings])
    grid = np.geomspace(low, end, 100)
    mse = mse_at_budget(usable, cost, grid)
    rows = []
    for index, (label, seed) in enumerate(zip(usable["label"], usable["seed"], strict=True)):
        rows.append(pd.DataFrame({"label": label, "seed": seed, "budget": grid, "value": mse[index]}))
    long = pd.concat(rows, ignore_index=True)
    sampling = long[long["label"].isin(usable.loc[~usable["deterministic"], "label"])]
    sampling = sampling[np.isfinite(sampling["value"])]
    band = bands(sampling, "budget", log=True)
    figure, axis = plt.subplots(figsize=(7.5, 4.8))
    positive = band[band["center"] > 0]
    notes = notes_text(
        {cost: band_notes(positive, draw_band(axis, positive, "budget", palette, sampling, log=True))}
    )
    for label, group in usable[usable["deterministic"]].groupby("label"):
        price = float(np.exp(np.log(group[cost]).mean()))
        axis.axvline(price, color=palette[label], lw=2, label=f"{label}: MSE 0 from T = {price:.4g}")
    axis.axvline(budget, color="black", ls="--", lw=1, label=f"stated budget T = {budget:.3g} {unit}")
    for crossing in crossings:
        if crossing.large not in set(usable.loc[usable["deterministic"], "label"]):
            axis.axvline(crossing.budget, color="grey", ls=":", lw=1)
    axis.set_xscale("log")
    axis.set_yscale("log")
    relative = parts.attrs.get("relative", False)
    counts = band.groupby("label")["seeds"].max().tolist() or [0]
    axis.set(
        xlabel=f"budget T ({unit}; log scale)",
        ylabel="MSE(T) = ‖b‖² + V·t/T" + (" (÷ ‖g*‖²)" if relative else ""),
        title=f"{task}: mean squared error at a budget of {name}\n({interval_words(True)} over "
        f"{count_text(counts)} seeds; dotted: crossings)" + (f"\n{notes}" if notes else ""),
    )
    axis.grid(which="both", alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    stem = f"{task}_work_{'time' if cost == 'estimate_time_ms' else 'f_evals'}"
    return save(figure, directory, stem, band.assign(panel=f"mse_at_budget_{cost}"))
