"""The report's part on same-point gradient studies (``bench.study``): tables and figures from the study
runs' ``study.csv`` and ``paired.csv``.

Every study run (``kind: study``) below the report's root contributes its two files; ``collect_study_tables``
concatenates them into the report folder (with the run's folder and task), and ``study_section`` renders
the Markdown and the figures from those two tables alone, so that a report rebuilt from its tables is the
same. Per task and trajectory:

- the estimators at the same parameters, aggregated over checkpoints and seeds: per seed, the geometric mean
  over the checkpoints of the MSE and of the variance relative to the baseline (``study.baseline``, default
  ``rloo``), and the mean rank by MSE; across seeds, their mean with a 95% interval from a cluster bootstrap
  over seeds (Field & Welsh 2007: the checkpoints of one trajectory are correlated, the seeds are not), and
  no interval with fewer than ``MINIMUM_SEEDS`` seeds;
- per checkpoint, the rank by MSE of every estimator (rankings can change along training) and the test of
  zero bias (``grad_bias_p``);
- figures: MSE, variance and ‖g*‖ against training progress (log scale), the paired MSE ratio against the
  baseline per checkpoint with intervals, and, when several trajectories were studied, the cross-probe
  matrix (trajectory trained by A × estimator probed B).

The own-trajectory tables elsewhere in the report measure each run at its own parameters; ``mark_study_runs``
labels the study's trajectory runs there, so that the two are not confused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.contract import PAIRED_HEADER  # noqa: E402

STUDY_TABLE, PAIRED_TABLE = "study.csv", "paired.csv"
STUDY_TABLES = (STUDY_TABLE, PAIRED_TABLE)
RUN_COLUMNS = ("run", "task")
MINIMUM_SEEDS = 5  # fewer seeds than this: no interval over seeds, said in words
RESAMPLES = 2000
BIAS_LEVEL = 1e-3  # grad_bias_p below this: the checkpoint's draws show a bias
DEFAULT_BASELINE = "rloo"
STUDY_LABEL = " (study trajectory)"


def collect_study_tables(root: Path, directory: Path) -> None:
    """Concatenate the ``study.csv`` and ``paired.csv`` of every study run below ``root`` into ``directory``,
    each row with its run's folder (relative to ``root``) and task; nothing when there is no study."""
    root, found = Path(root), {STUDY_TABLE: [], PAIRED_TABLE: []}
    for summary_path in sorted(root.rglob("summary.json")):
        run = summary_path.parent
        if "report" in run.relative_to(root).parts:
            continue
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(summary, dict) or summary.get("kind") != "study":
            continue
        for name in STUDY_TABLES:
            if (run / name).is_file():
                frame = pd.read_csv(run / name, keep_default_na=False, na_values=[""])
                frame.insert(0, "task", summary.get("task"))
                frame.insert(0, "run", str(run.relative_to(root)) if run != root else run.name)
                found[name].append(frame)
    for name, frames in found.items():
        if frames:
            pd.concat(frames, ignore_index=True).to_csv(directory / name, index=False)
        else:
            (directory / name).unlink(missing_ok=True)


def mark_study_runs(summaries: pd.DataFrame) -> pd.DataFrame:
    """The summaries with `` (study trajectory)`` added to the label of every study run (``kind: study``)."""
    if "kind" not in summaries or "label" not in summaries:
        return summaries
    study = summaries["kind"] == "study"
    if not study.any():
        return summaries
    marked = summaries.copy()
    marked.loc[study, "label"] = marked.loc[study, "label"].astype(str) + STUDY_LABEL
    return marked


def read_study_tables(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    directory = Path(directory)
    if not (directory / STUDY_TABLE).is_file():
        return None
    text = {"run": str, "task": str, "trajectory": str, "estimator": str, "baseline": str, "metric": str}
    text.update(params_digest=str, variant=str)
    options = {"keep_default_na": False, "na_values": [""], "dtype": text}
    study = pd.read_csv(directory / STUDY_TABLE, **options)
    paired_path = directory / PAIRED_TABLE
    paired = (
        pd.read_csv(paired_path, **options)
        if paired_path.is_file()
        else pd.DataFrame(columns=[*RUN_COLUMNS, *PAIRED_HEADER])
    )
    for frame in (study, paired):  # "nan" is a number that does not exist, not a name
        for column in ("value", "samples", "baseline_samples", "seed", "checkpoint", "step"):
            if column in frame:
                frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return study, paired


# --- statistics over seeds ------------------------------------------------------------------------------


def over_seeds(values: pd.Series, log: bool, seed: int = 0) -> tuple[float, float, float, int]:
    """(estimate, low, high, seeds) of per-seed values: their mean (geometric with ``log``) and a 95%
    percentile interval from resampling the seeds; low and high are NaN with fewer than MINIMUM_SEEDS."""
    data = values.dropna().to_numpy(dtype=float)
    if log:
        data = np.log(data[data > 0])
    count = len(data)
    if count == 0:
        return math.nan, math.nan, math.nan, 0
    estimate = float(data.mean())
    low = high = math.nan
    if count >= MINIMUM_SEEDS:
        means = np.random.default_rng(seed).choice(data, size=(RESAMPLES, count)).mean(1)
        low, high = (float(value) for value in np.percentile(means, [2.5, 97.5]))
    if log:
        return math.exp(estimate), math.exp(low), math.exp(high), count
    return estimate, low, high, count


def with_interval(estimate: float, low: float, high: float, spec: str = ".3g") -> str:
    if math.isnan(estimate):
        return "—"
    if math.isnan(low):
        return format(estimate, spec)
    return f"{estimate:{spec}} [{low:{spec}}, {high:{spec}}]"


def member_label(estimator: str, samples: float) -> str:
    return f"{estimator} (S={int(samples)})"


def wide(study: pd.DataFrame) -> pd.DataFrame:
    """One row per (trajectory, seed, checkpoint, estimator, S) with a column per metric; members only."""
    members = study[study["samples"].notna()]
    keys = ["trajectory", "seed", "checkpoint", "step", "estimator", "samples"]
    return members.pivot_table(index=keys, columns="metric", values="value", aggfunc="first").reset_index()


def fixed_members(paired: pd.DataFrame, table: pd.DataFrame) -> set[tuple[str, float]]:
    """(estimator, S) of the fixed-samples comparison (every member when paired.csv says nothing)."""
    fixed = paired[paired["variant"] == "fixed"]
    found = set(zip(fixed["estimator"], fixed["samples"].astype(float), strict=True))
    return found or set(zip(table["estimator"], table["samples"].astype(float), strict=True))


def relative(table: pd.DataFrame, column: str, baseline: str) -> pd.Series:
    """``column`` of every row divided by the baseline's at the same trajectory, seed and checkpoint."""
    keys = ["trajectory", "seed", "checkpoint"]
    base = table[table["estimator"] == baseline].groupby(keys)[column].first().rename("base")
    joined = table.join(base, on=keys)
    return joined[column] / joined["base"]


def aggregate(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per estimator: MSE and variance relative to the baseline (geometric means) and the mean rank by MSE,
    each over seeds (a seed's value: its mean over checkpoints) with the cluster-bootstrap interval."""
    table = table.copy()
    table["mse_relative"] = relative(table, "grad_mse", baseline) if "grad_mse" in table else math.nan
    table["variance_relative"] = relative(table, "grad_variance", baseline)
    if "grad_mse" in table:
        table["rank"] = table.groupby(["trajectory", "seed", "checkpoint"])["grad_mse"].rank()
    else:
        table["rank"] = math.nan
    if "grad_bias_p" in table:
        table["biased"] = (table["grad_bias_p"] < BIAS_LEVEL).where(table["grad_bias_p"].notna())
    else:
        table["biased"] = math.nan
    rows = []
    for (estimator, samples), group in table.groupby(["estimator", "samples"]):
        seeds = group.groupby("seed").agg(
            mse=(
                "mse_relative",
                lambda v: float(np.exp(np.log(v[v > 0]).mean())) if (v > 0).any() else math.nan,
            ),
            variance=(
                "variance_relative",
                lambda v: float(np.exp(np.log(v[v > 0]).mean())) if (v > 0).any() else math.nan,
            ),
            rank=("rank", "mean"),
        )
        tested = group["biased"].dropna()
        rows.append(
            {
                "estimator": estimator,
                "samples": samples,
                "f_evals": group["f_evals"].iloc[0] if "f_evals" in group else math.nan,
                "mse": over_seeds(seeds["mse"], log=True),
                "variance": over_seeds(seeds["variance"], log=True),
                "rank": over_seeds(seeds["rank"], log=False),
                "biased": f"{int(tested.sum())}/{len(tested)}" if len(tested) else "—",
            }
        )
    frame = pd.DataFrame(rows)
    order = [value[0] if not math.isnan(value[0]) else math.inf for value in frame["rank"]]
    return frame.assign(order=order).sort_values(["order", "estimator"]).drop(columns="order")


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(column) for column in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


# --- figures ----------------------------------------------------------------------------------------------


def colours(names: list[str]) -> dict[str, tuple]:
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: palette(index % palette.N) for index, name in enumerate(sorted(names))}


def save(figure: plt.Figure, directory: Path, stem: str) -> str:
    figure.tight_layout()
    figure.savefig(directory / f"{stem}.png", dpi=130, bbox_inches="tight")
    figure.savefig(directory / f"{stem}.pdf", bbox_inches="tight")
    plt.close(figure)
    return f"{stem}.png"


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
    axes[0].legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    return save(figure, directory, stem)


def figure_paired(
    paired: pd.DataFrame, baseline: str, palette: dict, directory: Path, stem: str, title: str
) -> str | None:
    """The paired MSE ratio against the baseline per checkpoint: per seed, 1 + (mean difference ± 1.96 paired
    standard errors) / the baseline's MSE; the line is the geometric mean over seeds."""
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
        centre = (
            group[group["mse_ratio"] > 0]
            .groupby("step")["mse_ratio"]
            .apply(lambda v: float(np.exp(np.log(v).mean())))
        )
        axis.plot(
            [position[step] + offset for step in centre.index],
            centre.to_numpy(),
            color=palette[label],
            label=label,
        )
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


# --- Markdown ---------------------------------------------------------------------------------------------


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


def baseline_of(directory: Path, table: pd.DataFrame) -> str:
    names = set(table["estimator"])
    return DEFAULT_BASELINE if DEFAULT_BASELINE in names else sorted(names)[0]


def task_lines(task: str, study: pd.DataFrame, paired: pd.DataFrame, directory: Path) -> list[str]:
    lines = [f"### Task `{task}`", ""]
    members = wide(study)
    checkpoints = study[study["samples"].isna()]
    fixed = fixed_members(paired, members)
    in_fixed = [(e, float(s)) in fixed for e, s in zip(members["estimator"], members["samples"], strict=True)]
    members_fixed = members[in_fixed]
    baseline = baseline_of(directory, members_fixed)
    palette = colours(
        [member_label(e, s) for e, s in set(zip(members["estimator"], members["samples"], strict=True))]
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
        if len(seeds) < MINIMUM_SEEDS:
            lines += [
                f"Only {len(seeds)} seed(s): fewer than {MINIMUM_SEEDS}, so no interval over seeds is given "
                "(the checkpoints of one trajectory are correlated and do not make up for seeds).",
                "",
            ]
        summary = aggregate(table, baseline)
        shown = pd.DataFrame(
            {
                "estimator": [
                    member_label(e, s) for e, s in zip(summary["estimator"], summary["samples"], strict=True)
                ],
                "f_evals": [int(value) if not math.isnan(value) else "—" for value in summary["f_evals"]],
                "mean rank by MSE": [with_interval(*value[:3], ".2f") for value in summary["rank"]],
                f"MSE / {baseline}'s": [with_interval(*value[:3]) for value in summary["mse"]],
                f"variance / {baseline}'s": [with_interval(*value[:3]) for value in summary["variance"]],
                f"biased (p < {BIAS_LEVEL:g})": summary["biased"],
            }
        )
        lines += [
            "Over checkpoints and seeds (a seed's value is its mean over the checkpoints; mean over seeds, "
            f"geometric for ratios, with a 95% cluster-bootstrap interval over seeds when there are ≥ "
            f"{MINIMUM_SEEDS}); best first:",
            "",
            markdown_table(shown),
            "",
        ]
        lines += per_checkpoint_lines(table)
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


def per_checkpoint_lines(table: pd.DataFrame) -> list[str]:
    """Rank by MSE at each checkpoint (mean over seeds) and the bias test's verdict."""
    if "grad_mse" not in table:
        return []
    ranked = table.assign(rank=table.groupby(["seed", "checkpoint"])["grad_mse"].rank())
    ranks = ranked.pivot_table(index=["estimator", "samples"], columns="step", values="rank", aggfunc="mean")
    shown = ranks.map(lambda value: f"{value:.1f}")
    if "grad_bias_p" in table:
        biased = table.assign(biased=table["grad_bias_p"] < BIAS_LEVEL).pivot_table(
            index=["estimator", "samples"], columns="step", values="biased", aggfunc="mean"
        )
        shown = shown.where(biased.reindex_like(shown).fillna(0) < 0.5, shown + " ᵇ")
    shown.columns = [f"step {int(step)}" for step in shown.columns]
    shown = shown.reset_index()
    shown.insert(
        0,
        "estimator ",
        [member_label(e, s) for e, s in zip(shown.pop("estimator"), shown.pop("samples"), strict=True)],
    )
    order = ranks.mean(axis=1).to_numpy().argsort(kind="stable")
    return [
        "Rank by MSE at each checkpoint (1 = lowest; mean over seeds); ᵇ: the test of zero bias rejects "
        f"(grad_bias_p < {BIAS_LEVEL:g}) at most seeds:",
        "",
        markdown_table(shown.iloc[order]),
        "",
    ]
