"""``python -m bench.report DIR``: tables and figures from every run below DIR (reads files only).

Reads each ``summary.json`` and ``metrics.csv`` below DIR into two tidy pandas frames, then writes into
``DIR/report/`` (or ``--out``):

- ``summary.csv``: one row per run (every summary field, plus ``label`` and ``run``);
- PNG (and PDF) figures per task, each estimator (or optimizer) in the same colour in every figure;
- ``report.md``: per task, runs by status, a table of mean ± 95% CI over seeds (with the seed count), and
  links to the figures, with a one-line explanation of each metric.

It imports nothing from the runner: it only knows the results contract (DESIGN.md "Results").
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import yaml  # noqa: E402
from scipy import stats  # noqa: E402

REPORT_DIR = "report"
# Overrides that do not distinguish one configuration from another (seeds are what we average over).
NOT_A_VARIANT = ("seed", "task", "estimator", "optimizer", "progress", "threads", "+experiment", "experiment")

METRIC_NOTES = {
    "final_loss": "the task's headline objective at the end (exact where the task has one, else held-out "
    "loss); lower is better",
    "grad_variance": "trace of the covariance of one gradient estimate, 1/(M−1) Σ‖ĝ_m − ḡ‖²; lower is better",
    "grad_bias": "‖ḡ − g*‖, distance of the mean estimate from the reference gradient",
    "bias_in_se": "grad_bias / grad_bias_se: about 1 for an unbiased estimator, ≫ 1 means measurable bias",
    "grad_mse": "1/M Σ‖ĝ_m − g*‖² = variance + squared bias; lower is better",
    "grad_cos": "cosine between the mean estimate and the reference gradient; 1 is the right direction",
    "grad_snr": "‖ḡ‖² / grad_variance, signal-to-noise ratio of one estimate; higher is better",
    "step_time_ms": "median wall time of one training step (probes excluded)",
    "estimate_time_ms": "wall time of one gradient estimate in a probe",
    "work_variance": "grad_variance × estimate_time_ms: variance at equal compute (lower is better)",
    "optimizer_time_ms": "median wall time of the optimizer's step alone (part of step_time_ms)",
    "time to target": "training time (step × median step time) until the objective first reaches the target",
}


@dataclass
class Runs:
    """Every run found below a folder: one row per run, and all their metrics in long form."""

    summaries: pd.DataFrame
    metrics: pd.DataFrame
    skipped_files: list[str]


def read_overrides(run: Path) -> list[str]:
    path = run / ".hydra" / "overrides.yaml"
    try:
        return [str(item) for item in (yaml.safe_load(path.read_text()) or [])]
    except (OSError, yaml.YAMLError):
        return []


def variant_of(overrides: list[str]) -> str:
    """The overrides that make a configuration differ, other than task/estimator/optimizer/seed."""
    kept = [
        item
        for item in overrides
        if item.split("=", 1)[0] not in NOT_A_VARIANT and not item.startswith("hydra")
    ]
    return ",".join(sorted(kept))


def load_runs(root: Path) -> Runs:
    """Read every ``summary.json`` (and the ``metrics.csv`` beside it) below ``root``.

    A malformed summary is skipped with a warning; the rest is still read.
    """
    summaries, metrics, skipped = [], [], []
    for path in sorted(root.rglob("summary.json")):
        if REPORT_DIR in path.relative_to(root).parts[:-1]:
            continue
        run = path.parent
        try:
            summary = json.loads(path.read_text())
            if not isinstance(summary, dict) or not {"task", "estimator", "status"} <= summary.keys():
                raise ValueError("not a run summary (needs at least task, estimator, status)")
        except (OSError, ValueError) as error:
            warnings.warn(f"skipping {path}: {error}", stacklevel=2)
            skipped.append(str(path))
            continue
        run_id = str(run.relative_to(root)) if run != root else run.name
        summary["run"] = run_id
        summary["variant"] = variant_of(read_overrides(run))
        summaries.append(summary)
        csv = run / "metrics.csv"
        if csv.exists():
            try:
                frame = pd.read_csv(csv)
                frame["run"] = run_id
                metrics.append(frame)
            except (OSError, ValueError, pd.errors.ParserError) as error:
                warnings.warn(f"skipping {csv}: {error}", stacklevel=2)
                skipped.append(str(csv))
    summary_frame = pd.DataFrame(summaries)
    if not summary_frame.empty:
        summary_frame["label"] = labels(summary_frame)
    metric_frame = (
        pd.concat(metrics, ignore_index=True)
        if metrics
        else pd.DataFrame(columns=["step", "metric", "value", "run"])
    )
    return Runs(summary_frame, metric_frame, skipped)


def labels(frame: pd.DataFrame) -> pd.Series:
    """A label per run: what varies within the run's task among estimator, optimizer, S and other overrides.

    The estimator is named unless it is the same for every run of the task and something else varies (an
    optimizer study: "adam", not "none adam").
    """
    result = pd.Series(index=frame.index, dtype=object)
    for _, group in frame.groupby("task"):
        parts = pd.DataFrame(index=group.index)
        if group["estimator"].nunique() > 1 or group["optimizer"].nunique() == 1:
            parts["estimator"] = group["estimator"].astype(str)
        if group["optimizer"].nunique() > 1:
            parts["optimizer"] = group["optimizer"].astype(str)
        if "samples" in group and group["samples"].nunique() > 1:
            # A skipped run never resolved its sample count (null): label it S=? instead of failing on NaN.
            parts["samples"] = group["samples"].map(lambda s: f"S={int(s)}" if pd.notna(s) else "S=?")
        if group["variant"].nunique() > 1:
            # "task.codebook_update=ema" reads as "codebook_update=ema": the group prefix adds only width.
            parts["variant"] = (
                group["variant"]
                .astype(str)
                .str.replace(r"(^|,)(task|estimator|optimizer)\.", r"\1", regex=True)
            )
        named = parts.agg(" ".join, axis=1).str.strip()
        if "variant_digest" in group:
            # Two configurations with the same name (e.g. settings from different experiment files) must
            # not be pooled as seeds of one: tell them apart by a short fingerprint of their config.
            digests = group["variant_digest"].fillna("")
            shared = digests.groupby(named).transform("nunique") > 1
            named = named.where(~shared, named + " [" + digests.str[:6] + "]")
        result[group.index] = named
    return result


def mean_ci(values: pd.Series) -> tuple[float, float, int]:
    """Mean, half-width of the 95% t-interval over seeds, and the count of finite values."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    values = values[np.isfinite(values)]
    count = len(values)
    if count == 0:
        return math.nan, math.nan, 0
    if count == 1:
        return float(values.mean()), math.nan, 1
    half = stats.t.ppf(0.975, count - 1) * values.std(ddof=1) / math.sqrt(count)
    return float(values.mean()), float(half), count


def format_ci(mean: float, half: float) -> str:
    if not math.isfinite(mean):
        return "—"
    if not math.isfinite(half):
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {half:.2g}"


def palette_for(labels_: list[str]) -> dict[str, tuple]:
    """One colour per label, the same in every figure of the report."""
    colours = sns.color_palette("tab10" if len(labels_) <= 10 else "tab20", len(labels_))
    return dict(zip(sorted(labels_), colours, strict=True))


def add_derived(summaries: pd.DataFrame) -> pd.DataFrame:
    frame = summaries.copy()
    for column in ("grad_bias", "grad_bias_se", "grad_variance", "estimate_time_ms", "final_loss"):
        if column not in frame:
            frame[column] = np.nan
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["bias_in_se"] = frame["grad_bias"] / frame["grad_bias_se"].where(frame["grad_bias_se"] > 0)
    frame["work_variance"] = frame["grad_variance"] * frame["estimate_time_ms"]
    return frame


def aggregate(summaries: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Mean ± 95% CI over seeds of ``columns`` for every (task, label), over runs with status ok."""
    rows = []
    ok = summaries[summaries["status"] == "ok"]
    for (task, label), group in ok.groupby(["task", "label"]):
        row = {
            "task": task,
            "label": label,
            "seeds": int(group["seed"].nunique()),
            "reference": group["reference"].iloc[0],
        }
        for column in columns:
            if column in group:
                # Runs of the same seed (a re-run, or the same seed in two folders) are one replicate:
                # averaged per seed first, so that the interval's n is the seed count shown.
                per_seed = pd.to_numeric(group[column], errors="coerce").groupby(group["seed"]).mean()
                mean, half, _ = mean_ci(per_seed)
                row[column], row[f"{column}_ci95"] = mean, half
        rows.append(row)
    return pd.DataFrame(rows)


def save(figure: plt.Figure, directory: Path, stem: str) -> str:
    figure.tight_layout()
    # bbox_inches="tight": long estimator labels must not push titles and axis labels off the canvas.
    figure.savefig(directory / f"{stem}.png", dpi=130, bbox_inches="tight")
    figure.savefig(directory / f"{stem}.pdf", bbox_inches="tight")
    plt.close(figure)
    return f"{stem}.png"


def figure_variance(task: str, ok: pd.DataFrame, palette: dict, directory: Path) -> str | None:
    data = ok[ok["grad_variance"] > 0]
    if data.empty:
        return None
    order = data.groupby("label")["grad_variance"].mean().sort_values().index.tolist()
    figure, axis = plt.subplots(figsize=(7, 0.5 * len(order) + 1.8))
    sns.pointplot(
        data=data,
        y="label",
        x="grad_variance",
        hue="label",
        order=order,
        palette=palette,
        errorbar=("ci", 95),
        linestyles="none",
        ax=axis,
        legend=False,
    )
    sns.stripplot(
        data=data,
        y="label",
        x="grad_variance",
        hue="label",
        order=order,
        palette=palette,
        alpha=0.4,
        size=4,
        ax=axis,
        legend=False,
    )
    axis.set_xscale("log")
    axis.set(
        xlabel="gradient variance at the end (trace of covariance, log scale)",
        ylabel="",
        title=f"{task}: gradient variance per estimator (mean, 95% CI over seeds)",
    )
    axis.grid(axis="x", which="both", alpha=0.3)
    return save(figure, directory, f"{task}_variance")


def figure_bias_variance(task: str, ok: pd.DataFrame, palette: dict, directory: Path) -> str | None:
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


def figure_over_steps(
    task: str,
    metric: str,
    ylabel: str,
    curves: pd.DataFrame,
    palette: dict,
    directory: Path,
    log: bool = False,
    stem: str | None = None,
    x: str = "step",
    xlabel: str = "training step",
) -> str | None:
    """Mean and 95% CI band over seeds of ``metric`` for runs that finished; runs that diverged (or failed
    part-way) are drawn thin and dashed, ending in a cross where they stopped."""
    data = curves[curves["metric"] == metric]
    if log:
        data = data[data["value"] > 0]
    finished = data[data["status"] == "ok"]
    stopped = data[data["status"] != "ok"]
    if data.empty or data[x].nunique() < 2:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    if not finished.empty:
        sns.lineplot(
            data=finished,
            x=x,
            y="value",
            hue="label",
            hue_order=sorted(finished["label"].unique()),
            palette=palette,
            errorbar=("ci", 95),
            ax=axis,
        )
    for (_run, label, status, stopped_at), group in stopped.groupby(["run", "label", "status", "stopped_at"]):
        group = group.sort_values(x)
        axis.plot(group[x], group["value"], "--", lw=0.8, color=palette[label], alpha=0.8)
        axis.plot(group[x].iloc[-1:], group["value"].iloc[-1:], "x", ms=9, mew=2, color=palette[label])
        axis.annotate(
            f"{label}: {status} at step {stopped_at}",
            (group[x].iloc[-1], group["value"].iloc[-1]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
            color=palette[label],
        )
    if log:
        axis.set_yscale("log")
    seeds = finished.groupby("label")["run"].nunique() if not finished.empty else pd.Series([0])
    count = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
    title = f"{task}: {ylabel}\n(mean, 95% CI band over {count} seeds"
    title += "; ✕ = run stopped early)" if not stopped.empty else ")"
    axis.set(xlabel=xlabel, ylabel=ylabel + (" (log scale)" if log else ""), title=title)
    axis.grid(alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8)
    return save(figure, directory, stem or f"{task}_{metric}" + ("" if x == "step" else f"_by_{x}"))


# Codebook metrics of vector-quantized tasks (vqvae's evaluate(): held-out reconstruction, codebook usage).
CODEBOOK_PANELS = [
    ("objective", "held-out reconstruction −log p(x | z_q)", False),
    ("codes_used", "fraction of codes used (held-out)", False),
    ("perplexity", "codebook perplexity (held-out)", False),
    ("quantization_error", "quantization error ‖z_e − e_k‖²", True),
]
CODEBOOK_COLUMNS = ["objective", "codes_used", "perplexity", "dead_codes", "quantization_error"]


def codebook_section(task: str, curves: pd.DataFrame, palette: dict, directory: Path) -> list[str]:
    """For tasks that record codebook usage: a table of the final values and a 2×2 figure over steps.

    Runs that finished only; mean ± 95% CI over seeds. Empty when the task records no ``codes_used``.
    """
    finished = curves[(curves["status"] == "ok") & curves["metric"].isin(CODEBOOK_COLUMNS)]
    if "codes_used" not in set(finished["metric"]):
        return []
    last = finished[finished["step"] == finished.groupby("run")["step"].transform("max")]
    final = last.pivot_table(index=["label", "run"], columns="metric", values="value").reset_index()
    rows = []
    for label, group in final.groupby("label"):
        row = {"estimator": label, "seeds": group["run"].nunique()}
        for column in CODEBOOK_COLUMNS:
            row[column] = format_ci(*mean_ci(group[column])[:2]) if column in group else "—"
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("estimator")
    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    for axis, (metric, title, log) in zip(axes.flat, CODEBOOK_PANELS, strict=True):
        data = finished[finished["metric"] == metric]
        if log:
            data = data[data["value"] > 0]
        if data.empty:
            axis.set_visible(False)
            continue
        sns.lineplot(
            data=data,
            x="step",
            y="value",
            hue="label",
            hue_order=sorted(data["label"].unique()),
            palette=palette,
            errorbar=("ci", 95),
            ax=axis,
            legend=metric == "objective",
        )
        if log:
            axis.set_yscale("log")
        axis.set(title=title, xlabel="training step", ylabel="")
        axis.grid(alpha=0.3)
    if axes.flat[0].get_legend() is not None:
        axes.flat[0].legend(fontsize=7)
    figure.suptitle(f"{task}: reconstruction and codebook usage (mean, 95% CI band over seeds)")
    name = save(figure, directory, f"{task}_codebook")
    return [
        "Codebook at the end of training (held-out images; `dead_codes`: codes assigned to no training "
        "image), mean ± 95% CI over seeds:",
        "",
        markdown_table(table),
        "",
        f"![{name}]({name})",
        "",
        "Without a reference gradient, `grad_variance` here is the spread of the estimate across data "
        "batches. It is not a measure of gradient quality across estimators: the rotation trick rescales "
        "the gradient by ‖e_k‖/‖z_e‖, and a collapsed codebook (few codes used) makes it small.",
        "",
    ]


# Tasks with a latent-variable ELBO and an exact reference (vae's evaluate(): test_kl, test_nll, ...).
ELBO_PANELS = [
    ("objective", "test −ELBO (nats; step 0 left out)", False),
    ("bias_in_se", "bias ‖ḡ − g*‖ in standard errors (≈ 1: unbiased)", True),
    ("grad_variance", "gradient variance (trace of the covariance)", True),
    ("grad_cos", "cosine of the mean estimate with the exact gradient", False),
]


def elbo_section(task: str, curves: pd.DataFrame, palette: dict, directory: Path) -> list[str]:
    """For tasks whose evaluate() records an ELBO (``test_kl``): held-out numbers and gradient quality.

    A table of the final test −ELBO, test −log p(x) and train −ELBO, with the gradient's bias (in standard
    errors), variance and cosine averaged over the probes after step 0 and at step 0 (where every estimator
    of a seed sees the same parameters), and a 2×2 figure of test −ELBO, bias, variance and cosine over
    steps. Empty unless the task records ``test_kl`` and a reference gradient.
    """
    finished = curves[curves["status"] == "ok"]
    if (
        "test_kl" not in set(finished["metric"])
        or not finished.loc[finished["metric"] == "grad_bias", "value"].notna().any()
    ):
        return []
    wide = finished.pivot_table(
        index=["label", "run", "step"], columns="metric", values="value"
    ).reset_index()
    wide["bias_in_se"] = wide["grad_bias"] / wide["grad_bias_se"].where(wide["grad_bias_se"] > 0)
    probed = wide[wide["grad_variance"].notna()]
    rows = []
    for label, group in probed.groupby("label"):
        per_run = group.groupby("run")
        last = group[group["step"] == per_run["step"].transform("max")].set_index("run")
        later, start = group[group["step"] > 0].groupby("run"), group[group["step"] == 0].set_index("run")
        time = finished[finished["label"] == label].groupby("run")["step_time_ms"].first()
        row = {"estimator": label, "seeds": per_run.ngroups}
        for name, values in [
            ("test −ELBO", last.get("objective")),
            ("test −log p(x)", last.get("test_nll")),
            ("train −ELBO", last.get("train_negative_elbo")),
            ("bias/SE (training)", later["bias_in_se"].mean()),
            ("variance (training)", later["grad_variance"].mean()),
            ("cosine (training)", later["grad_cos"].mean()),
            ("bias/SE (step 0)", start.get("bias_in_se")),
            ("variance (step 0)", start.get("grad_variance")),
            ("step_time_ms", time),
        ]:
            row[name] = format_ci(*mean_ci(values)[:2]) if values is not None else "—"
        rows.append((mean_ci(last.get("objective", pd.Series(dtype=float)))[0], row))
    table = pd.DataFrame([row for _, row in sorted(rows, key=lambda item: item[0])])
    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    for axis, (metric, title, log) in zip(axes.flat, ELBO_PANELS, strict=True):
        data = wide[wide[metric].notna()] if metric in wide else wide.iloc[:0]
        if metric == "objective":  # the first drop from the initial value would squash the differences
            data = data[data["step"] > 0]
        if log:
            data = data[data[metric] > 0]
        if data.empty:
            axis.set_visible(False)
            continue
        sns.lineplot(
            data=data,
            x="step",
            y=metric,
            hue="label",
            hue_order=sorted(data["label"].unique()),
            palette=palette,
            errorbar=("ci", 95),
            ax=axis,
            legend=metric == "objective",
        )
        if metric == "bias_in_se":
            axis.axhline(1.0, color="grey", ls="--", lw=1)
        if log:
            axis.set_yscale("log")
        axis.set(title=title, xlabel="training step", ylabel="")
        axis.grid(alpha=0.3)
    if axes.flat[0].get_legend() is not None:
        axes.flat[0].legend(fontsize=7)
    figure.suptitle(
        f"{task}: held-out ELBO and gradient quality against the exact gradient (mean, 95% CI band)"
    )
    name = save(figure, directory, f"{task}_elbo")
    return [
        "Held-out ELBO at the end and gradient quality along training (mean ± 95% CI over seeds; sorted "
        "by test −ELBO). `(training)`: each run's mean over its probes after step 0; `(step 0)`: the first "
        "probe, where every estimator of a seed sees the same parameters. bias/SE ≈ 1 means no measurable "
        "bias; ≫ 1, a systematic error that more samples do not remove.",
        "",
        markdown_table(table),
        "",
        f"![{name}]({name})",
        "",
    ]


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


TABLE_COLUMNS = [
    "final_loss",
    "grad_variance",
    "grad_bias",
    "bias_in_se",
    "grad_mse",
    "grad_cos",
    "step_time_ms",
    "estimate_time_ms",
    "work_variance",
]


RANKINGS = {
    "grad_mse": "mean squared error to the reference gradient (variance + squared bias)",
    "work_variance": (
        "work-normalized variance, grad_variance × estimate_time_ms (what a unit of compute buys)"
    ),
}


def rankings(table: pd.DataFrame, reference: str) -> list[str]:
    """Per-task rankings, best first, each value with its 95% CI and the seed count."""
    lines = []
    for column, meaning in RANKINGS.items():
        if table.empty or column not in table or not table[column].notna().any():
            continue
        if reference == "none":
            # Without a reference, a low variance may mean a collapsed model (a VQ codebook using one code)
            # as well as a good estimator: we do not rank on it.
            lines += [
                "No ranking: without a reference gradient neither MSE nor variance alone ranks estimators.",
                "",
            ]
            break
        ranked = table[table[column].notna()].sort_values(column).reset_index(drop=True)
        shown = pd.DataFrame(
            {
                "rank": range(1, len(ranked) + 1),
                "estimator": ranked["label"],
                column: [
                    format_ci(m, h) for m, h in zip(ranked[column], ranked[f"{column}_ci95"], strict=True)
                ],
                "seeds": ranked["seeds"],
            }
        )
        lines += [f"Ranking by {meaning}, lower is better:", "", markdown_table(shown), ""]
    return lines


def training_time(rows: pd.DataFrame) -> pd.Series:
    """Seconds of training at each row's step: step × the run's median step time (probes excluded).

    metrics.csv holds no wall times (it is reproducible from the seed); summary.json's ``step_time_ms``
    turns steps into time.
    """
    return rows["step"] * pd.to_numeric(rows["step_time_ms"], errors="coerce") / 1000


def figure_by_training_time(
    task: str, metric: str, ylabel: str, curves: pd.DataFrame, palette: dict, directory: Path
) -> str | None:
    """``metric`` against training time: per configuration, each seed's curve interpolated onto a common
    time grid (log scale: configurations can differ in speed by orders of magnitude), mean and 95% CI band."""
    data = curves[(curves["metric"] == metric) & (curves["status"] == "ok")].copy()
    data["time"] = training_time(data)
    data = data[data["time"].notna()]
    if data.empty or data["step"].nunique() < 2:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    seeds = []
    for label, group in sorted(data.groupby("label"), key=lambda item: item[0]):
        runs = [run.sort_values("time") for _, run in group.groupby("run")]
        start = max(run.loc[run["time"] > 0, "time"].min() for run in runs)
        end = min(run["time"].max() for run in runs)
        if not (math.isfinite(start) and end > start):
            continue
        grid = np.geomspace(start, end, 60)
        values = np.array([np.interp(grid, run["time"], run["value"]) for run in runs])
        mean = values.mean(0)
        half = (
            stats.t.ppf(0.975, len(runs) - 1) * values.std(0, ddof=1) / math.sqrt(len(runs))
            if len(runs) > 1
            else np.zeros_like(mean)
        )
        axis.plot(grid, mean, color=palette[label], label=label)
        axis.fill_between(grid, mean - half, mean + half, color=palette[label], alpha=0.25, lw=0)
        seeds.append(len(runs))
    if not seeds:
        plt.close(figure)
        return None
    axis.set_xscale("log")
    axis.set(
        xlabel="training time, s (log scale) = step × median step time, probes excluded",
        ylabel=ylabel,
        title=f"{task}: {ylabel} by training time\n(mean, 95% CI band over "
        + (f"{min(seeds)}" if min(seeds) == max(seeds) else f"{min(seeds)}–{max(seeds)}")
        + " seeds)",
    )
    axis.grid(which="both", alpha=0.3)
    axis.legend(fontsize=8)
    return save(figure, directory, f"{task}_{metric}_by_time")


def time_to_target(
    task: str, ok: pd.DataFrame, curves: pd.DataFrame, target: float | None = None
) -> list[str]:
    """A table: for each configuration, how many seeds reach ``objective ≤ target`` and after how many
    steps and seconds of training (mean ± 95% CI over the seeds that reach it).

    The default target is the best level that every configuration's mean curve (over seeds) reaches: the
    largest, over configurations, of the lowest point of the mean curve. (Not the final values: a held-out
    objective can rise again when a model overfits.) Resolution: the objective is measured at probe steps.
    """
    objective = curves[(curves["metric"] == "objective") & (curves["status"] == "ok")]
    if objective.empty or objective["step"].nunique() < 2 or ok.empty:
        return []
    how = "given on the command line"
    if target is None:
        mean_curves = objective.groupby(["label", "step"])["value"].mean()
        target = float(mean_curves.groupby("label").min().max())
        how = "the best level every configuration's mean curve reaches"
    rows = []
    for label, group in objective.groupby("label"):
        steps, seconds, total = [], [], 0
        for _, run in group.groupby("run"):
            total += 1
            hit = run[run["value"] <= target].sort_values("step")
            if not hit.empty:
                steps.append(float(hit["step"].iloc[0]))
                seconds.append(float(training_time(hit.iloc[:1]).iloc[0]))
        runs = ok[ok["label"] == label]
        step_mean, step_half, _ = mean_ci(pd.Series(steps, dtype=float))
        time_mean, time_half, _ = mean_ci(pd.Series(seconds, dtype=float))
        rows.append(
            {
                "configuration": label,
                "reached": f"{len(steps)}/{total}",
                "steps to target": format_ci(step_mean, step_half),
                "training time to target (s)": format_ci(time_mean, time_half),
                "step_time_ms": format_ci(*mean_ci(runs["step_time_ms"])[:2]),
                "optimizer_time_ms": format_ci(*mean_ci(runs.get("optimizer_time_ms", pd.Series()))[:2]),
                "_sort": time_mean if math.isfinite(time_mean) else math.inf,
            }
        )
    table = pd.DataFrame(rows).sort_values("_sort").drop(columns="_sort")
    return [
        f"Time to target: objective ≤ **{target:.4g}** ({how}); first probe step at which a run's objective "
        "is at or below it, and that step × the run's median step time (mean ± 95% CI over the seeds that "
        "reach it):",
        "",
        markdown_table(table),
        "",
    ]


def task_section(
    task: str,
    summaries: pd.DataFrame,
    curves: pd.DataFrame,
    palette: dict,
    directory: Path,
    target: float | None = None,
) -> list[str]:
    runs = summaries[summaries["task"] == task]
    ok = runs[runs["status"] == "ok"]
    reference = ok["reference"].iloc[0] if not ok.empty else "none"
    lines = [f"## Task `{task}`", ""]
    counts = runs.groupby(["label", "status"]).size().unstack(fill_value=0).reset_index()
    lines += ["Runs by status:", "", markdown_table(counts), ""]
    not_ok = runs[runs["status"] != "ok"]
    if not not_ok.empty:
        lines += ["Runs that did not finish:", ""]
        lines += [markdown_table(not_ok[["run", "label", "seed", "status", "steps", "error"]].fillna("")), ""]
    table = aggregate(ok, TABLE_COLUMNS)
    if not table.empty:
        table = table.sort_values("final_loss")
        columns = [c for c in TABLE_COLUMNS if c in table and table[c].notna().any()]
        shown = pd.DataFrame({"estimator": table["label"], "seeds": table["seeds"]})
        for column in columns:
            shown[column] = [
                format_ci(m, h) for m, h in zip(table[column], table[f"{column}_ci95"], strict=True)
            ]
        lines += [
            f"Mean ± 95% CI over seeds (runs with status ok; reference gradient: **{reference}**):",
            "",
            markdown_table(shown),
            "",
        ]
        if reference == "none":
            lines += [
                "This task has no reference gradient: bias, MSE and cosine are not defined "
                "and are not shown.",
                "",
            ]
    lines += rankings(table, reference)
    lines += time_to_target(task, ok, curves, target)
    lines += codebook_section(task, curves, palette, directory)
    lines += elbo_section(task, curves, palette, directory)
    figures = [
        figure_over_steps(task, "objective", "objective", curves, palette, directory),
        figure_by_training_time(task, "objective", "objective", curves, palette, directory),
        figure_variance(task, ok, palette, directory),
        figure_bias_variance(task, ok, palette, directory) if reference != "none" else None,
        figure_over_steps(task, "grad_variance", "gradient variance", curves, palette, directory, log=True),
        figure_over_steps(task, "train_loss", "training loss", curves, palette, directory),
        # Optimizers on sparse gradients (the embedding task): accuracy, and how far the rows outside the
        # batch moved (0 for lazy optimizers). None where a task does not record them.
        figure_over_steps(task, "test_accuracy", "test accuracy", curves, palette, directory),
        figure_over_steps(
            task, "untouched_row_shift", "mean move of rows outside the batch", curves, palette, directory
        ),
    ]
    lines += [f"![{name}]({name})" for name in figures if name] + [""]
    return lines


def write_report(root: Path, out: Path | None = None, targets: dict[str, float] | None = None) -> Path:
    """Read every run below ``root`` and write the report; returns the report folder.

    ``targets`` maps a task to the objective level of its time-to-target table (default: see
    ``time_to_target``).
    """
    runs = load_runs(root)
    if runs.summaries.empty:
        raise FileNotFoundError(f"no run summaries (summary.json) found below {root}")
    directory = out or root / REPORT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    summaries = add_derived(runs.summaries)
    summaries.to_csv(directory / "summary.csv", index=False)
    palette = palette_for(summaries["label"].unique().tolist())
    curves = runs.metrics.merge(
        summaries[["run", "label", "task", "status", "steps", "step_time_ms"]].assign(
            # Where a run stopped: the step that diverged, else the last step it finished.
            stopped_at=summaries["diverged_step"].fillna(summaries["steps"]).astype(int)
            if "diverged_step" in summaries
            else summaries["steps"]
        ),
        on="run",
    )
    lines = [
        f"# Report: {root}",
        "",
        f"{len(summaries)} runs; "
        + ", ".join(f"{count} {status}" for status, count in summaries["status"].value_counts().items()),
        "",
    ]
    if runs.skipped_files:
        lines += ["Skipped unreadable files: " + ", ".join(f"`{path}`" for path in runs.skipped_files), ""]
    for task in sorted(summaries["task"].unique()):
        target = (targets or {}).get(task)
        lines += task_section(task, summaries, curves[curves["task"] == task], palette, directory, target)
    lines += ["## Metrics", ""] + [f"- `{name}`: {note}" for name, note in METRIC_NOTES.items()] + [""]
    (directory / "report.md").write_text("\n".join(lines))
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "root", type=Path, nargs="?", default=Path("results"), help="folder holding runs (default: results)"
    )
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: ROOT/report)")
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="TASK=VALUE",
        help="objective level of TASK's time-to-target table (repeatable; default: the best level that every "
        "configuration's mean curve reaches)",
    )
    arguments = parser.parse_args(argv)
    targets = {}
    for item in arguments.target:
        task, _, value = item.partition("=")
        try:
            targets[task] = float(value)
        except ValueError:
            print(
                f"error: --target {item!r}: expected TASK=NUMBER, e.g. --target embedding=0.7",
                file=sys.stderr,
            )
            return 2
    if not arguments.root.is_dir():
        print(
            f"error: {arguments.root} is not a folder; give the folder that holds your runs.", file=sys.stderr
        )
        return 2
    try:
        directory = write_report(arguments.root, arguments.out, targets)
    except FileNotFoundError as error:
        print(f"error: {error}. Run `python -m bench ...` first.", file=sys.stderr)
        return 2
    print(f"report written to {directory / 'report.md'} (summary.csv and figures beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
