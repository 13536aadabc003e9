"""The report's part on tuned optimizer studies (``python -m bench.tune``): what was chosen and from what, how
sensitive each optimizer is to its learning rate, the tuned settings over steps and over time, the table of
the tuned settings' test objective with paired differences, and a performance profile across problems.

A study's folder (``ROOT``) holds ``tuning.json`` (stage 1's grid, every run's score, the rule, the budget
and the choice), ``tune/`` (stage 1's runs) and ``final/`` (stage 2's runs: the chosen settings with fresh
seeds). ``python -m bench.report DIR`` finds every study at or below DIR: the report's generic tables read
only the stage-2 runs (stage 1's runs are scored in tuning.json; pooling them would report the grid as
configurations), ``collect_tuning`` copies each tuning.json into the report folder (``tuning/``), and
``tuning_section`` renders this part from those copies and the report's tidy tables alone, so a report
rebuilt from its tables is the same.

- **Choices**: per optimizer and condition (a condition is tuned separately: an estimator, a vocabulary), the
  chosen setting, its mean stage-1 score, the grid, whether the choice lies at the grid's edge, and the
  tuning budget (runs × steps).
- **Learning-rate sensitivity**: the final validation objective of every stage-1 run against the learning
  rate, per optimizer (a line through the mean over the stage-1 seeds, a dot per seed). Other tuned axes
  (Lookahead's k and α) are profiled out: at each learning rate the line shows their best setting.
- **Tuned settings over steps and over time**: the test objective of the stage-2 runs, mean ± 95% t-interval
  over the fresh seeds, per condition.
- **Final table**: the test objective at the end (mean ± 95% t-interval over seeds) per condition and
  optimizer, and each optimizer's difference from the study's ``baseline``, paired over seeds (the same
  seed: the same initialisation and data order).
- **Held-out check**: where the study names a held-out variant (``tuning.heldout``: another data set or
  size), the chosen settings rerun there with the same fresh seeds (``heldout/``); per condition, every
  optimizer's rank interval on the tuned problem and on the variant, and a flag where they do not overlap
  (the ranking changed). A rank interval is what the 95% intervals allow: best rank 1 + the number of
  optimizers whose interval lies wholly below this one's, worst rank n − the number whose interval lies
  wholly above it (lower is better).
- **Performance profile** (Dolan & Moré 2002) across every problem (study × condition) of the report: an
  optimizer's time to target on a problem is the Kaplan–Meier median over its seeds of the training time
  until the validation objective first reaches the problem's target; r = time / the best optimizer's time on
  that problem; the profile is the fraction of problems with r ≤ ρ. The target follows Moré & Wild (2009)'s
  convergence test, f(x₀) − f(x) ≥ (1 − τ)(f(x₀) − f_L) with τ = 0.1: 90% of the way from the initial
  validation objective (step 0, mean over the problem's runs) to f_L, the best final validation objective
  (mean over seeds) any tuned optimizer reached on the problem. An optimizer that does not reach the target
  in half of its seeds has r = ∞ on that problem.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.formats.contract import (
    OK,
    REPORT_DIR,
    TUNING_FILE,
    TUNING_HELDOUT_DIR,
    TUNING_STAGE_ONE_DIR,
    TUNING_STAGE_TWO_DIR,
)
from bench.formats.names import file_name, inside
from bench.formats.tables import markdown_table
from bench.report.statistics import interval
from bench.report.survival import crossing_time, kaplan_meier

TUNING_DIR = "tuning"  # the report folder's copy of every study's tuning.json
STAGE_ONE_DIR = TUNING_STAGE_ONE_DIR
PROFILE_FRACTION = 0.9
PROFILE_RATIOS = (1.0, 1.5, 2.0, 4.0)
CURVE_METRIC = "objective"
TARGET_METRIC = "validation_objective"


# ---- Finding and collecting studies --------------------------------------------------------------------


def find_studies(root: Path) -> list[Path]:
    """Every study folder (one holding ``tuning.json``) at or below ``root``, report folders left out."""
    root = Path(root)
    found = []
    for path in sorted(root.rglob(TUNING_FILE)):
        parts = path.relative_to(root).parts[:-1]
        if REPORT_DIR in parts or TUNING_DIR in parts:
            continue
        found.append(path.parent)
    return found


def relative(study: Path, root: Path) -> str:
    rel = Path(study).resolve().relative_to(Path(root).resolve()).as_posix()
    return "" if rel == "." else rel


def stage_one_prefixes(root: Path) -> list[str]:
    """Run ids (folders relative to ``root``) below which stage-1 runs lie."""
    return [(Path(relative(study, root)) / STAGE_ONE_DIR).as_posix() + "/" for study in find_studies(root)]


def study_name(document: dict[str, Any], rel: str) -> str:
    return document.get("experiment") or (Path(rel).name if rel else "study")


def collect_tuning(root: Path, directory: Path) -> int:
    """Copy every study's tuning.json below ``root`` into ``directory/tuning/`` with the study's folder
    (``root`` key, relative to ``root``); returns how many. Stale copies are removed first."""
    target = inside(Path(directory), TUNING_DIR)
    if target.is_dir():
        for old in target.glob("*.json"):
            old.unlink()
    studies = find_studies(root)
    if not studies:
        return 0
    target.mkdir(parents=True, exist_ok=True)
    for index, study in enumerate(studies):
        document = json.loads((study / TUNING_FILE).read_text())
        rel = relative(study, root)
        document["root"] = rel
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", study_name(document, rel))
        path = inside(target, file_name(f"{index:02d}_{slug}", ".json"))
        path.write_text(json.dumps(document, indent=1) + "\n")
    return len(studies)


def read_studies(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted((Path(directory) / TUNING_DIR).glob("*.json"))]


# ---- From tuning.json and the stage-2 runs to tables -----------------------------------------------------


def setting_text(setting: dict[str, Any] | None) -> str:
    if setting is None:
        return "— (every setting scored +∞)"
    return ", ".join(
        f"{key.removeprefix('optimizer.')}={value:g}"
        if isinstance(value, float)
        else f"{key.removeprefix('optimizer.')}={value}"
        for key, value in setting.items()
    )


def metric_of(document: dict[str, Any]) -> str:
    """The metric stage 1 read (``objective`` where a task records no ``validation_objective``)."""
    return ", ".join(sorted({choice.get("metric") or document["metric"] for choice in document["choices"]}))


def budget_text(document: dict[str, Any]) -> str:
    """The tuning budget of a study, in one sentence."""
    choices = document["choices"]
    runs = sum(choice["budget"]["runs"] for choice in choices)
    steps = sorted({choice["budget"]["steps"] for choice in choices if choice["budget"]["steps"]})
    per = sorted({choice["budget"]["settings"] for choice in choices})
    conditions = len({choice["condition_label"] for choice in choices})
    metrics = metric_of(document)
    return (
        f"tuning budget: {runs} stage-1 runs of {'/'.join(map(str, steps))} steps "
        f"({'/'.join(map(str, per))} settings × {len(document['seeds'])} seeds per optimizer"
        f"{' and condition, ' + str(conditions) + ' conditions' if conditions > 1 else ''}), "
        f"scored on the final {metrics}; reported over {len(document['final_seeds'])} fresh seeds"
    )


def learning_rate_key(grid: dict[str, list[Any]]) -> str | None:
    """The grid's learning-rate axis (``optimizer.lr``, ``optimizer.inner.lr``), else its first numeric
    one."""
    for key in grid:
        if key.split(".")[-1] == "lr":
            return key
    for key, values in grid.items():
        if all(isinstance(value, int | float) and not isinstance(value, bool) for value in values):
            return key
    return None


def sensitivity_table(document: dict[str, Any]) -> pd.DataFrame:
    """One row per stage-1 run: condition, optimizer, learning rate, seed, value (NaN: +∞, did not finish
    well), the setting's mean and whether the setting is the profile's best at its learning rate and the
    chosen one."""
    rows = []
    for choice in document["choices"]:
        key = learning_rate_key(choice["grid"])
        if key is None:
            continue
        best: dict[float, float] = {}
        for score in choice["scores"]:
            lr = float(score["setting"][key])
            mean = math.inf if score["mean"] is None else score["mean"]
            best[lr] = min(best.get(lr, math.inf), mean)
        for score in choice["scores"]:
            lr = float(score["setting"][key])
            mean = math.inf if score["mean"] is None else score["mean"]
            profile = mean == best[lr] and not any(
                other["setting"][key] == score["setting"][key]
                and (math.inf if other["mean"] is None else other["mean"]) == mean
                for other in choice["scores"][: choice["scores"].index(score)]
            )
            for seed, value, status in zip(score["seeds"], score["values"], score["statuses"], strict=True):
                rows.append(
                    {
                        "condition": choice["condition_label"],
                        "optimizer": choice["name"],
                        "lr": lr,
                        "setting": setting_text(score["setting"]),
                        "seed": seed,
                        "value": math.nan if value is None else float(value),
                        "status": status,
                        "mean": math.nan if score["mean"] is None else float(score["mean"]),
                        "profile": profile,
                        "chosen": score["setting"] == choice["chosen"],
                    }
                )
    return pd.DataFrame(rows)


@dataclass
class StageTwo:
    """The stage-2 runs of one study: summaries with ``optimizer`` (the runs' optimizer name) and
    ``condition`` columns, and their curves."""

    runs: pd.DataFrame
    curves: pd.DataFrame


def stage_two_runs(
    document: dict[str, Any], summaries: pd.DataFrame, curves: pd.DataFrame, heldout: bool = False
) -> StageTwo:
    """The stage-2 runs of ``document`` among ``summaries`` (``heldout``: its held-out reruns)."""
    rel = document.get("root", "")
    frames = []
    ids = summaries["run"].astype(str)
    for choice in document["choices"]:
        folder = choice["stage_two"].rstrip("/")
        if heldout:  # final/<optimizer>[/<condition>] → heldout/<optimizer>[/<condition>]
            folder = TUNING_HELDOUT_DIR + folder.removeprefix(TUNING_STAGE_TWO_DIR)
        prefix = (f"{rel}/" if rel else "") + folder + "/"
        found = summaries[ids.str.startswith(prefix)].copy()
        found["optimizer"] = choice["name"]
        found["condition"] = choice["condition_label"]
        frames.append(found)
    runs = (
        pd.concat(frames, ignore_index=True)
        if frames
        else summaries.iloc[0:0].assign(optimizer="", condition="")
    )
    keep = runs[["run", "optimizer", "condition"]]
    joined = curves.merge(keep, on="run") if not runs.empty else curves.iloc[0:0]
    return StageTwo(runs, joined)


def final_values(runs: pd.DataFrame) -> pd.DataFrame:
    """Per condition, optimizer and seed: the final test objective (``final_loss``; NaN unless ``ok``),
    runs of one seed averaged."""
    data = runs.assign(value=pd.to_numeric(runs["final_loss"], errors="coerce").where(runs["status"] == OK))
    return data.groupby(["condition", "optimizer", "seed"], as_index=False)["value"].mean()


def final_table(document: dict[str, Any], stage_two: StageTwo) -> pd.DataFrame:
    """Rows: conditions; columns: each optimizer's test objective, then each one's paired difference from
    the baseline (mean ± 95% t-interval over seeds; ok/total runs where some did not finish)."""
    values = final_values(stage_two.runs)
    optimizers = list(dict.fromkeys(choice["name"] for choice in document["choices"]))
    baseline = next(
        (choice["name"] for choice in document["choices"] if choice["optimizer"] == document.get("baseline")),
        None,
    )
    rows = []
    for condition in dict.fromkeys(choice["condition_label"] for choice in document["choices"]):
        row: dict[str, str] = {"condition": condition}
        here = values[values["condition"] == condition]
        for name in optimizers:
            found = here[here["optimizer"] == name]
            ok = int(found["value"].notna().sum())
            text = interval(found["value"]).text() if len(found) else "not run"
            row[name] = text if ok == len(found) else f"{text} ({ok}/{len(found)} ok)"
        if baseline is not None:
            base = here[here["optimizer"] == baseline].set_index("seed")["value"]
            for name in optimizers:
                if name == baseline:
                    continue
                other = here[here["optimizer"] == name].set_index("seed")["value"]
                diff = (other - base).dropna()
                found = interval(diff)
                mark = ""
                if found.count >= 2 and math.isfinite(found.low):
                    mark = " (lower)" if found.high < 0 else " (higher)" if found.low > 0 else ""
                row[f"{name} − {baseline}"] = found.text() + mark if found.count else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def rank_intervals(values: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer (``values``: optimizer, seed, value): mean, 95% interval and the rank interval the
    intervals allow (module docstring: best 1 + #wholly below, worst n − #wholly above; lower is better)."""
    rows = []
    for name, group in values.groupby("optimizer", sort=False):
        found = interval(group["value"])
        rows.append({"optimizer": name, "found": found, "low": found.low, "high": found.high})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    low = table["low"].where(np.isfinite(table["low"]), table["found"].map(lambda item: item.center))
    high = table["high"].where(np.isfinite(table["high"]), table["found"].map(lambda item: item.center))
    count = len(table)
    table["best"] = [1 + int((high < low.iloc[i]).sum()) for i in range(count)]
    table["worst"] = [count - int((low > high.iloc[i]).sum()) for i in range(count)]
    return table


def heldout_table(document: dict[str, Any], tuned: StageTwo, heldout: StageTwo) -> pd.DataFrame:
    """Per condition and optimizer: the test objective and rank interval on the tuned problem and on the
    held-out variant, and whether the rank intervals are disjoint (the ranking changed)."""
    rows = []
    first, second = final_values(tuned.runs), final_values(heldout.runs)
    for condition in dict.fromkeys(choice["condition_label"] for choice in document["choices"]):
        here = [data[data["condition"] == condition] for data in (first, second)]
        common = set(here[0]["optimizer"]) & set(here[1]["optimizer"])  # ranked among the same optimizers
        ranks = [rank_intervals(data[data["optimizer"].isin(common)]) for data in here]
        if ranks[0].empty or ranks[1].empty:
            continue
        there = ranks[1].set_index("optimizer")
        for _, row in ranks[0].iterrows():
            name = row["optimizer"]
            if name not in there.index:
                continue
            other = there.loc[name]
            changed = row["worst"] < other["best"] or other["worst"] < row["best"]
            rows.append(
                {
                    "condition": condition,
                    "optimizer": name,
                    "tuned problem": row["found"].text(),
                    "rank": rank_text(row["best"], row["worst"]),
                    "held-out variant": other["found"].text(),
                    "held-out rank": rank_text(other["best"], other["worst"]),
                    "ranking changed": "**yes**" if changed else "no",
                }
            )
    table = pd.DataFrame(rows)
    if not table.empty and table["condition"].nunique() == 1:
        table = table.drop(columns="condition")
    return table


def rank_text(best: int, worst: int) -> str:
    return str(best) if best == worst else f"{best}–{worst}"


def heldout_text(document: dict[str, Any]) -> str:
    return ", ".join(f"`{key}={value_text(value)}`" for key, value in (document.get("heldout") or {}).items())


def value_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def choices_table(document: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for choice in document["choices"]:
        grid = "; ".join(
            f"{key.removeprefix('optimizer.')} ∈ {{{', '.join(map(value_text, values))}}}"
            for key, values in choice["grid"].items()
        )
        fixed = ", ".join(
            f"{key.removeprefix('optimizer.')}={value}" for key, value in choice["fixed"].items()
        )
        budget = choice["budget"]
        rows.append(
            {
                "optimizer": choice["name"],
                "condition": choice["condition_label"],
                "chosen": setting_text(choice["chosen"]),
                f"mean stage-1 {choice['metric']}": "—"
                if choice["score"] is None
                else f"{choice['score']:.4g}",
                "grid": grid + (f" (fixed: {fixed})" if fixed else ""),
                "at the grid's edge": ", ".join(key.removeprefix("optimizer.") for key in choice["at_edge"])
                or "no",
                "budget": f"{budget['runs']} runs × {budget['steps']} steps",
            }
        )
    return pd.DataFrame(rows)


# ---- Performance profile ---------------------------------------------------------------------------------


def problem_times(problem: pd.DataFrame, runs: pd.DataFrame) -> tuple[dict[str, float], float | None, str]:
    """Per optimizer, the Kaplan–Meier median time to the problem's target (∞: not reached by half of the
    seeds), the target, and how it was fixed. ``problem``: the curves of one problem's stage-2 runs."""
    curves = problem[(problem["metric"] == TARGET_METRIC) & problem["value"].notna()]
    metric = TARGET_METRIC
    if curves.empty:
        curves = problem[(problem["metric"] == CURVE_METRIC) & problem["value"].notna()]
        metric = CURVE_METRIC
    ok = set(runs.loc[runs["status"] == OK, "run"])
    curves = curves[curves["run"].isin(ok)]
    if curves.empty:
        return {}, None, f"no {metric} curve"
    start = curves[curves["step"] == 0]["value"]
    last = curves.sort_values("step").groupby("run").tail(1)
    finals = last.groupby(["optimizer", "seed"])["value"].mean().groupby("optimizer").mean()
    if start.empty or finals.empty:
        return {}, None, "no value at step 0"
    initial, best = float(start.mean()), float(finals.min())
    target = initial - PROFILE_FRACTION * (initial - best)
    times: dict[str, float] = {}
    for name, group in curves.groupby("optimizer"):
        reached, when = [], []
        for _, run in group.groupby("run"):
            run = run.sort_values("step")
            time = (run["step"] * pd.to_numeric(run["step_time_ms"], errors="coerce") / 1000).to_numpy(float)
            values = run["value"].to_numpy(float)
            hit = crossing_time(time, values, target)
            reached.append(hit is not None)
            when.append(hit if hit is not None else float(time[-1]))
        fit = kaplan_meier(np.array(when), np.array(reached))
        times[str(name)] = float(fit.median)
    source = (
        f"{metric} ≤ {target:.4g} (90% of the way from {initial:.4g} at step 0 to the best final mean "
        f"{best:.4g})"
    )
    return times, target, source


def profile_table(problems: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Per optimizer and problem: the ratio of its time to the best time on that problem (∞: no time)."""
    rows = []
    for problem, times in problems.items():
        finite = [time for time in times.values() if math.isfinite(time)]
        best = min(finite) if finite else math.nan
        for name, time in times.items():
            ratio = time / best if math.isfinite(time) and best > 0 else (1.0 if time == best else math.inf)
            rows.append({"problem": problem, "optimizer": name, "time_s": time, "ratio": ratio})
    return pd.DataFrame(rows, columns=["problem", "optimizer", "time_s", "ratio"])


def profile_fraction(ratios: pd.Series, rho: float) -> float:
    return float((ratios <= rho).mean()) if len(ratios) else math.nan


# ---- Figures ---------------------------------------------------------------------------------------------


def figure_sensitivity(table: pd.DataFrame, document: dict[str, Any], directory: Path, stem: str) -> str:
    import matplotlib.pyplot as plt

    from bench.report.figures import save
    from bench.report.palette import palette_for

    conditions = list(dict.fromkeys(table["condition"]))
    names = list(dict.fromkeys(table["optimizer"]))
    palette = palette_for(names)
    columns = min(4, len(conditions))
    rows = math.ceil(len(conditions) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns + 2.0, 3.4 * rows), squeeze=False)
    for axis, condition in zip(axes.ravel(), conditions, strict=False):
        here = table[table["condition"] == condition]
        finite = here["value"].dropna()
        if finite.empty:
            axis.set_title(condition, fontsize=8)
            continue
        low = float(finite.min())
        spread = float(np.percentile(finite, 75)) - low
        top = low + max(3 * spread, 1e-9) if len(finite) > 3 else float(finite.max())
        top = min(top, float(finite.max())) if float(finite.max()) > low else low + 1.0
        margin = 0.06 * (top - low if top > low else 1.0)
        for name in names:
            found = here[(here["optimizer"] == name) & here["profile"]]
            if found.empty:
                continue
            colour = palette[name]
            means = found.groupby("lr")["mean"].first().sort_index()
            axis.plot(means.index, means.clip(upper=top + margin), "-", color=colour, label=name, lw=1.4)
            seeds = found[found["value"].notna()]
            axis.scatter(seeds["lr"], seeds["value"].clip(upper=top + margin), s=10, color=colour, alpha=0.6)
            above = seeds[seeds["value"] > top + margin]
            axis.scatter(above["lr"], [top + margin] * len(above), marker="^", s=22, color=colour)
            failed = found[found["value"].isna()]
            axis.scatter(failed["lr"], [top + margin] * len(failed), marker="x", s=30, color=colour)
            chosen = found[found["chosen"]].groupby("lr")["mean"].first()
            axis.scatter(
                chosen.index, chosen.values, marker="*", s=120, color=colour, edgecolor="black", zorder=5
            )
        axis.set_xscale("log")
        axis.set_ylim(low - margin, top + 2 * margin)
        axis.set_title(condition if condition != "default" else document.get("task", ""), fontsize=8)
        axis.set_xlabel("learning rate")
        axis.set_ylabel(f"final {metric_of(document)}", fontsize=8)
        axis.grid(alpha=0.3)
    for axis in axes.ravel()[len(conditions) :]:
        axis.set_visible(False)
    legend_outside(figure, axes[0][-1])
    figure.suptitle(
        f"{study_name(document, document.get('root', ''))}: sensitivity to the learning rate "
        f"(stage 1, {len(document['seeds'])} seeds)",
        fontsize=9,
    )
    return save(figure, directory, stem, table)


def figure_tuned_curves(stage_two: StageTwo, document: dict[str, Any], directory: Path, stem: str) -> str:
    """Test objective of the tuned settings over steps (top) and training time (bottom), per condition."""
    import matplotlib.pyplot as plt

    from bench.report.figures import save
    from bench.report.palette import palette_for
    from bench.report.statistics import bands

    data = stage_two.curves[
        (stage_two.curves["metric"] == CURVE_METRIC)
        & stage_two.curves["value"].notna()
        & (stage_two.curves["status"] == OK)
    ].copy()
    data["time"] = data["step"] * pd.to_numeric(data["step_time_ms"], errors="coerce") / 1000
    conditions = list(dict.fromkeys(choice["condition_label"] for choice in document["choices"]))
    names = list(dict.fromkeys(choice["name"] for choice in document["choices"]))
    palette = palette_for(names)
    figure, axes = plt.subplots(2, len(conditions), figsize=(4.6 * len(conditions) + 2.0, 6.4), squeeze=False)
    drawn = []
    for column, condition in enumerate(conditions):
        here = data[data["condition"] == condition].assign(label=lambda frame: frame["optimizer"])
        band = bands(here, "step")
        times = here.groupby(["label", "step"])["time"].mean().rename("time").reset_index()
        band = band.merge(times, on=["label", "step"], how="left")
        band.insert(0, "condition", condition)
        drawn.append(band)
        values = band["high"].to_numpy(float)
        for row, position in enumerate(("step", "time")):
            axis = axes[row][column]
            for name, rows in band.groupby("label", sort=True):
                rows = rows.sort_values("step")
                axis.plot(rows[position], rows["center"], color=palette[name], label=name, lw=1.3)
                axis.fill_between(
                    rows[position], rows["low"], rows["high"], color=palette[name], alpha=0.25, lw=0
                )
            finite = band.loc[band["step"] > 0, "center"].dropna()
            if not finite.empty and np.isfinite(values).any():
                low, high = float(band["low"].min()), float(np.percentile(finite, 90))
                axis.set_ylim(low - 0.05 * (high - low), high + 0.1 * (high - low))
            axis.set_xlabel("step" if position == "step" else "training time (s)")
            axis.set_ylabel("test objective", fontsize=8)
            axis.grid(alpha=0.3)
        axes[0][column].set_title(
            condition if condition != "default" else document.get("task", ""), fontsize=8
        )
    legend_outside(figure, axes[0][-1])
    figure.suptitle(
        f"{study_name(document, document.get('root', ''))}: tuned settings, mean ± 95% t-interval over "
        f"{len(document['final_seeds'])} seeds",
        fontsize=9,
    )
    return save(figure, directory, stem, pd.concat(drawn, ignore_index=True) if drawn else None)


def legend_outside(figure: Any, axis: Any) -> None:
    """The legend to the right of the last panel of the first row, outside every panel (inside, it hid the
    curves it names); the panels narrowed to make room."""
    handles, labels = [], []
    for other in figure.axes:
        for handle, label in zip(*other.get_legend_handles_labels(), strict=True):
            if label not in labels and not label.startswith("_"):
                handles.append(handle)
                labels.append(label)
    axis.legend(
        handles,
        labels,
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.03, 1.0),
        borderaxespad=0.0,
        frameon=False,
    )
    width = figure.get_figwidth()
    figure.subplots_adjust(right=1.0 - 1.9 / width)


def figure_profile(table: pd.DataFrame, directory: Path, stem: str) -> str:
    import matplotlib.pyplot as plt

    from bench.report.figures import save
    from bench.report.palette import palette_for

    names = sorted(table["optimizer"].unique())
    palette = palette_for(names)
    finite = table.loc[np.isfinite(table["ratio"]), "ratio"]
    largest = max(4.0, float(finite.max()) * 1.1 if not finite.empty else 4.0)
    rhos = np.geomspace(1.0, largest, 200)
    figure, axis = plt.subplots(figsize=(7.4, 3.6))
    rows = []
    for name in names:
        ratios = table.loc[table["optimizer"] == name, "ratio"]
        fractions = [profile_fraction(ratios, rho) for rho in rhos]
        axis.step(
            rhos, fractions, where="post", color=palette[name], label=f"{name} ({len(ratios)} problems)"
        )
        rows += [
            {"optimizer": name, "rho": rho, "fraction": value}
            for rho, value in zip(rhos, fractions, strict=True)
        ]
    axis.set_xscale("log")
    axis.set_ylim(-0.03, 1.03)
    axis.set_xlabel("ρ (time to target / best optimizer's time)")
    axis.set_ylabel("fraction of problems within ρ")
    axis.grid(alpha=0.3)
    # Outside the frame, on the right: inside, the legend hid the curves it names.
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    figure.subplots_adjust(right=0.66)
    figure.suptitle("Performance profile of the tuned optimizers", fontsize=9)
    return save(figure, directory, stem, pd.DataFrame(rows))


# ---- Markdown --------------------------------------------------------------------------------------------


def tuning_section(directory: Path, summaries: pd.DataFrame, curves: pd.DataFrame) -> str:
    """The Markdown of the tuned studies in ``directory/tuning/`` (writing the figures there); "" when
    there is none."""
    documents = read_studies(directory)
    if not documents:
        return ""
    lines = [
        "## Tuned optimizer studies",
        "",
        "Every optimizer tuned by the same two-stage protocol (`python -m bench.tune`): stage 1 runs a grid "
        "with a few seeds and chooses by the rule below; stage 2 reruns the chosen setting with fresh seeds, "
        "which are the runs of every other table of this report. Intervals: 95% t-intervals over the fresh "
        "seeds. Each claim below carries its study's tuning budget.",
        "",
    ]
    problems: dict[str, dict[str, float]] = {}
    targets: list[str] = []
    for index, document in enumerate(documents):
        name = study_name(document, document.get("root", ""))
        lines += [f"### {name} ({document.get('task', '')})", ""]
        lines += study_lines(
            document, name, summaries, curves, directory, f"tuning_{index:02d}", problems, targets
        )
    lines += profile_lines(problems, targets, directory, "###")
    return "\n".join(lines) + "\n"


def study_lines(
    document: dict[str, Any],
    name: str,
    summaries: pd.DataFrame,
    curves: pd.DataFrame,
    directory: Path,
    stem: str,
    problems: dict[str, dict[str, float]],
    targets: list[str],
) -> list[str]:
    """One tuned study's part (its figures written into ``directory`` as ``<stem>_*``): the choices, the
    learning-rate sensitivity, the tuned settings over steps and time, the final table, the held-out check;
    adds its problems' times to target to ``problems`` and ``targets`` (for ``profile_lines``)."""
    budget = budget_text(document)
    lines = [
        f"Rule: {document['rule']}. Stage-1 seeds {document['seeds']}, stage-2 seeds "
        f"{document['final_seeds']}; {budget}.",
        "",
        markdown_table(choices_table(document)),
        "",
    ]
    edges = [choice for choice in document["choices"] if choice["at_edge"]]
    if edges:
        lines += [
            f"{len(edges)} choice(s) at the edge of the grid: the best setting may lie outside it "
            "(widen the grid before trusting those comparisons).",
            "",
        ]
    sensitivity = sensitivity_table(document)
    if not sensitivity.empty:
        figure = figure_sensitivity(sensitivity, document, directory, f"{stem}_sensitivity")
        lines += [
            f"![learning-rate sensitivity]({figure})",
            "",
            f"Final {metric_of(document)} of every stage-1 run against the learning rate (line: mean "
            f"over the {len(document['seeds'])} stage-1 seeds; dots: seeds; ★: the chosen setting; "
            "▲: above the frame; ×: diverged or failed; other tuned axes at their best for each "
            "learning rate); "
            f"{budget}.",
            "",
        ]
    stage_two = stage_two_runs(document, summaries, curves)
    if stage_two.runs.empty:
        return [*lines, "Stage 2 has not run yet: no runs below its folders.", ""]
    figure = figure_tuned_curves(stage_two, document, directory, f"{stem}_curves")
    lines += [
        f"![tuned settings over steps and time]({figure})",
        "",
        "The tuned settings' test objective over steps (top) and over training time (bottom: step × the "
        f"run's median step time), mean ± 95% t-interval over the {len(document['final_seeds'])} fresh "
        f"seeds; {budget}.",
        "",
        f"Test objective at the end (`final_loss`) per condition and tuned optimizer, and the difference "
        f"from `{document.get('baseline')}` paired over seeds ((lower)/(higher): the interval excludes "
        "0); "
        f"{budget}:",
        "",
        markdown_table(final_table(document, stage_two)),
        "",
    ]
    if document.get("heldout"):
        heldout = stage_two_runs(document, summaries, curves, heldout=True)
        table = heldout_table(document, stage_two, heldout) if not heldout.runs.empty else pd.DataFrame()
        if table.empty:
            lines += [f"Held-out variant ({heldout_text(document)}): not run yet.", ""]
        else:
            changed = int((table["ranking changed"] != "no").sum())
            lines += [
                f"**Held-out check.** The chosen settings rerun with the same {len(document['final_seeds'])} "
                f"fresh seeds on a variant they were not tuned on ({heldout_text(document)}): test "
                "objective (mean ± 95% t-interval) and rank interval (1 = lowest objective; an interval "
                "spans the ranks the 95% intervals allow) on each; the ranking changed where the rank "
                f"intervals do not overlap: {changed} of {len(table)} optimizer(s).",
                "",
                markdown_table(table),
                "",
            ]
    for condition, problem in stage_two.curves.groupby("condition", sort=False):
        key = f"{name} [{condition}]" if condition != "default" else name
        times, target, source = problem_times(
            problem, stage_two.runs[stage_two.runs["condition"] == condition]
        )
        if target is not None and times:
            problems[key] = times
            targets.append(f"{key}: {source}")
    return lines


def profile_lines(
    problems: dict[str, dict[str, float]], targets: list[str], directory: Path, heading: str
) -> list[str]:
    """The performance profile across ``problems`` (at least 3), with its tables; a sentence with fewer."""
    if len(problems) < 3:
        if not problems:
            return []
        return [
            f"No performance profile: it needs at least 3 problems (study × condition), this report has "
            f"{len(problems)}; report a folder holding several studies (e.g. results/tuned).",
            "",
        ]
    table = profile_table(problems)
    figure = figure_profile(table, directory, "tuning_profile")
    summary = []
    for optimizer, group in table.groupby("optimizer"):
        row = {"optimizer": optimizer, "problems": len(group)}
        for rho in PROFILE_RATIOS:
            row[f"within {rho:g}×"] = f"{profile_fraction(group['ratio'], rho):.2f}"
        row["target not reached"] = int((~np.isfinite(group["ratio"])).sum())
        summary.append(row)
    return [
        f"{heading} Performance profile across problems",
        "",
        f"![performance profile]({figure})",
        "",
        f"{len(problems)} problems (study × condition), each optimizer on the problems where it was "
        "tuned. Time to target: Kaplan–Meier median over the fresh seeds of the training time until the "
        "validation objective first reaches the problem's target (Moré & Wild's test with τ = 0.1: 90% "
        "of the way from the initial value to the best final mean of any tuned optimizer); ratio to the "
        "best optimizer's time on the problem; ∞ where half of the seeds never reach it. Every optimizer "
        "was tuned with its study's budget (above).",
        "",
        markdown_table(pd.DataFrame(summary)),
        "",
        "Per problem: " + "; ".join(targets) + ".",
        "",
        markdown_table(
            table.assign(
                time_s=table["time_s"].map(lambda value: "∞" if not math.isfinite(value) else f"{value:.3g}"),
                ratio=table["ratio"].map(lambda value: "∞" if not math.isfinite(value) else f"{value:.2f}"),
            ).rename(columns={"time_s": "median time to target (s)", "ratio": "ratio to best"})
        ),
        "",
    ]
