"""Which same-point gradient statistic predicts training? ``python scripts/predictive_validity.py``.

For each task (the toy task from p(b = 1) = 0.3, the 4×8 categorical VAE, the linear 200-Bernoulli VAE with
reduced steps) and each of 5 seeds:

- **outcome**: every candidate estimator at equal cost in evaluations of f (``bench.campaigns.recommend``'s
  candidates: RLOO's evaluations at S = 2) trained at its own learning rate (the best of a 3-point grid on
  seed 0, the tuning protocol's first stage), and its final objective (validation where the task has one);
- **same-point statistics**: every candidate probed at the same parameters (a same-point study,
  ``bench.campaigns.same_point``) at 4 checkpoints of a trajectory of that seed: the per-estimate MSE, the
  squared bias, the variance, the debiased cosine and the horizon MSE ‖b‖² + V/H (H = 10, Adam's
  1/(1 − β₁), and H fitted), each relative to ‖g*‖² and averaged over the checkpoints.

Per seed, the Spearman rank correlation between the candidates' outcomes and each statistic (the cosine with
its sign flipped: higher is better); the table gives its mean over seeds with a 95% t-interval over the 5
seeds (a percentile bootstrap over 5 seeds covers about 84% of the time, see the results page's calibration
study; the t-interval on per-seed values is the page's interval for such means). Writes
``docs/results/predictive_validity/`` (``table.csv``, ``table.md``, ``predictive_validity.png``); runs go to
``results/predictive_validity/`` and a re-run continues them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from scipy import stats
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.campaigns import same_point  # noqa: E402
from bench.campaigns.recommend import plan as planning  # noqa: E402
from bench.campaigns.recommend.protocol import Runner, build_task, screen  # noqa: E402
from bench.campaigns.recommend.settings import Settings  # noqa: E402
from bench.formats.configs import compose  # noqa: E402
from bench.formats.contract import STUDY_FILE  # noqa: E402
from bench.formats.files import atomic_write_text  # noqa: E402
from bench.formats.names import safe_name  # noqa: E402
from bench.formats.tables import markdown_table  # noqa: E402

TASKS = {  # name: (overrides, steps, trajectory estimator, study draws, candidates left out)
    "toy (p0 = 0.3)": (["task=toy", "task.p0=0.3"], 300, "exact", 512, ()),
    "categorical VAE 4x8": (["task=vae"], 300, "exact", 256, ()),
    # Reduced: 150 steps, M = 64, and the three slowest estimators on 200 variables left out (reinmax_cv,
    # reinmax_rao, rodeo: 0.5-1 s per training step here, most of the study's hour).
    "Bernoulli-200 linear VAE (reduced)": (
        ["task=bernoulli200_linear", "task.reference_draws=64"],
        150,
        "rloo",
        64,
        ("reinmax_cv", "reinmax_rao", "rodeo"),
    ),
}
SEEDS = [1, 2, 3, 4, 5]
GRID = [0.1, 1.0, 10.0]  # multipliers of the optimizer's learning rate (stage 1 on seed 0)
HORIZONS = [1.0, 3.0, 10.0, 30.0, 100.0, 1000.0]
STATISTICS = ("mse", "bias_sq", "variance", "cosine", "horizon_mse")


def candidates_of(overrides: list[str], excluded: tuple[str, ...]) -> tuple[list, dict]:
    """The equal-cost candidates of a task (``bench.campaigns.recommend.plan.candidates``), ``excluded``
    left out."""
    config = compose(["progress=false", *overrides])
    found, left_out, _, _ = planning.candidates(config, build_task(config), Settings())
    for item in found:
        if item.estimator in excluded:
            left_out[item.estimator] = "left out of this reduced study (slow on this task)"
    return [item for item in found if item.estimator not in excluded], left_out


def outcomes(
    overrides: list[str], steps: int, folder: Path, progress: tqdm, excluded: tuple[str, ...] = ()
) -> tuple[dict, dict, dict]:
    """Per candidate: its learning rate (best of the grid on seed 0) and its final objective per seed."""
    found, left_out = candidates_of(overrides, excluded)
    runner = Runner(overrides, folder, progress)
    ledger = folder / "outcomes.json"
    done = json.loads(ledger.read_text()) if ledger.exists() else {}
    rates, scores = {}, {}
    for candidate in found:

        def run(lr: float, seed: int, candidate=candidate) -> float:
            key = f"{candidate.key} lr={lr:g} seed={seed}"
            if key not in done:
                config = runner.config(candidate, lr=lr, steps=steps, seed=seed, **{"probe.every": 0})
                done[key] = screen(config)
                atomic_write_text(ledger, json.dumps(done, indent=1) + "\n")
            progress.update(1)
            value = done[key]["score"]
            return math.inf if value is None else float(value)

        base = runner.config(candidate, steps=steps, seed=0)
        centre = next(iter(planning_lrs(base).values()))
        tried = {centre * factor: run(centre * factor, 0) for factor in GRID}
        rates[candidate.key] = min(tried, key=tried.get)
        scores[candidate.key] = {seed: run(rates[candidate.key], seed) for seed in SEEDS}
    return rates, scores, {"left_out": left_out, "candidates": [item.key for item in found], "found": found}


def planning_lrs(config) -> dict[str, float]:
    from bench.run.build import learning_rates

    return {path: float(value) for path, value in learning_rates(config.optimizer, "optimizer")}


def same_point_statistics(
    overrides: list[str], steps: int, trajectory: str, draws: int, found: list, folder: Path
) -> pd.DataFrame:
    """Per seed and candidate, the statistics averaged over the checkpoints (relative to ‖g*‖²)."""
    rows = []
    names = sorted({item.estimator for item in found})
    for seed in SEEDS:
        config = compose(
            ["progress=false", *overrides, f"estimator={trajectory}", f"steps={steps}", f"seed={seed}"]
        )
        OmegaConf.set_struct(config, False)
        checkpoints = sorted({0, steps // 3, 2 * steps // 3, steps})
        config.threads = 1
        config.probe.every = 0
        config.probe.draws = 16
        config.study = {
            "steps": checkpoints,
            "estimators": names,
            "exclude": [],
            "samples": 2,
            "equal_cost": True,
            "draws": draws,
            "warmup": 50,
            "variance_steps": 50,
            "variance_lr": 0.001,
            "bootstrap": 100,
            "baseline": "rloo",
            "trajectory": None,
            "settings": {},
        }
        config.checkpoint = {"steps": checkpoints, "every": 0}
        run_folder = folder / f"study-seed={seed}"
        summary_path = run_folder / "summary.json"
        if not (summary_path.exists() and json.loads(summary_path.read_text()).get("status") == "ok"):
            summary = same_point.run(config, run_folder)
            if summary["status"] != "ok":
                raise RuntimeError(
                    f"the same-point study of seed {seed} {summary['status']}: {summary['error']}"
                )
        study = pd.read_csv(run_folder / STUDY_FILE)
        study = study[study["samples"].notna()]
        for item in found:
            part = study[(study.estimator == item.estimator) & (study.samples == item.samples)]
            if part.empty:
                continue
            wide = part.pivot_table(index="checkpoint", columns="metric", values="value")
            bias, variance = wide["grad_bias_rel"], wide["grad_variance_rel"]
            entry = {
                "seed": seed,
                "candidate": item.key,
                "mse": float((bias + variance).mean()),
                "bias_sq": float(bias.mean()),
                "variance": float(variance.mean()),
                "cosine": float(-wide["grad_cos"].mean()),  # higher cosine is better: rank its negative
            }
            for horizon in HORIZONS:
                entry[f"horizon_mse@{horizon:g}"] = float((bias + variance / horizon).mean())
            rows.append(entry)
    return pd.DataFrame(rows)


def correlations(scores: dict, statistics: pd.DataFrame) -> pd.DataFrame:
    """Per seed and statistic, Spearman's rho between the candidates' outcomes and the statistic."""
    rows = []
    columns = [column for column in statistics.columns if column not in ("seed", "candidate")]
    for seed in SEEDS:
        part = statistics[statistics.seed == seed].set_index("candidate")
        outcome = pd.Series({key: values[seed] for key, values in scores.items()}).reindex(part.index)
        finite = np.isfinite(outcome.to_numpy(dtype=float))
        for column in columns:
            values = part[column].to_numpy(dtype=float)
            keep = finite & np.isfinite(values)
            rho = (
                stats.spearmanr(outcome.to_numpy(dtype=float)[keep], values[keep]).statistic
                if keep.sum() >= 3
                else math.nan
            )
            rows.append({"seed": seed, "statistic": column, "rho": rho, "candidates": int(keep.sum())})
    return pd.DataFrame(rows)


def summarise(rhos: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (task, statistic), part in rhos.groupby(["task", "statistic"], sort=False):
        values = part["rho"].dropna().to_numpy()
        mean = float(values.mean()) if len(values) else math.nan
        half = (
            float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
            if len(values) > 1
            else math.nan
        )
        rows.append(
            {
                "task": task,
                "statistic": statistic,
                "rho": mean,
                "low": mean - half,
                "high": mean + half,
                "seeds": len(values),
                "candidates": int(part["candidates"].median()),
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "predictive_validity")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "predictive_validity")
    parser.add_argument("--only", action="append", default=[], help="a task name of TASKS (repeatable)")
    arguments = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    all_rhos, notes = [], []
    chosen = {name: spec for name, spec in TASKS.items() if not arguments.only or name in arguments.only}
    for name, (overrides, steps, trajectory, draws, excluded) in chosen.items():
        folder = arguments.results / safe_name(name, 60)
        folder.mkdir(parents=True, exist_ok=True)
        found = candidates_of(overrides, excluded)[0]
        total = len(found) * (len(GRID) + len(SEEDS))
        with tqdm(total=total, desc=f"{name}: outcomes", file=sys.stderr) as progress:
            rates, scores, info = outcomes(overrides, steps, folder, progress, excluded)
        print(f"[{name}] learning rates: {rates}", file=sys.stderr)
        statistics = same_point_statistics(overrides, steps, trajectory, draws, info["found"], folder)
        statistics.to_csv(folder / "statistics.csv", index=False)
        rhos = correlations(scores, statistics)
        rhos.insert(0, "task", name)
        all_rhos.append(rhos)
        notes.append(
            f"{name}: {len(info['candidates'])} candidates, {steps} steps, trajectory {trajectory}, "
            f"M = {draws}; left out: {', '.join(info['left_out']) or 'none'}"
        )
    rhos = pd.concat(all_rhos)
    table = summarise(rhos)
    # The fitted horizon: the H whose mean rho over tasks is highest (fitted: it is chosen on these data).
    horizon_rows = table[table.statistic.str.startswith("horizon_mse@")]
    best = horizon_rows.groupby("statistic")["rho"].mean().idxmax() if not horizon_rows.empty else None
    keep = [*STATISTICS[:-1], "horizon_mse@10"] + ([best] if best and best != "horizon_mse@10" else [])
    shown = table[table.statistic.isin(keep)].copy()
    arguments.out.mkdir(parents=True, exist_ok=True)
    rhos.to_csv(arguments.out / "correlations.csv", index=False)
    shown.to_csv(arguments.out / "table.csv", index=False)
    pretty = shown.assign(
        statistic=shown.statistic.str.replace("horizon_mse@", "horizon MSE, H = ", regex=False)
        + np.where(shown.statistic == best, " (fitted)", ""),
        rho=[
            f"{rho:+.2f} [{low:+.2f}, {high:+.2f}]"
            for rho, low, high in zip(shown.rho, shown.low, shown.high, strict=True)
        ],
    )[["task", "statistic", "rho", "seeds", "candidates"]]
    atomic_write_text(
        arguments.out / "table.md",
        markdown_table(pretty.rename(columns={"rho": "Spearman ρ (95% t-interval over seeds)"}))
        + "\n\n"
        + "\n".join(f"- {note}" for note in notes)
        + f"\n\nWall time of this invocation: {(time.perf_counter() - started) / 60:.1f} min (runs already "
        "done are read back from the results folder, not run again).\n",
    )
    atomic_write_text(
        arguments.out / "table.md",
        conclusion(shown, best) + "\n\n" + (arguments.out / "table.md").read_text(),
    )
    draw(shown, best, arguments.out / "predictive_validity.png")
    print((arguments.out / "table.md").read_text())
    return 0


def conclusion(table: pd.DataFrame, best: str | None) -> str:
    """The paragraph above the table: the statistic with the highest mean rho over the tasks (of those fixed
    in advance: the fitted horizon is chosen on these data), against the per-estimate MSE, task by task."""
    fixed = table[table.statistic != best] if best != "horizon_mse@10" else table
    means = fixed.groupby("statistic", sort=False)["rho"].mean()
    winner = str(means.idxmax())

    def per_task(statistic: str) -> str:
        part = table[table.statistic == statistic]
        return ", ".join(
            f"{row.task} {row.rho:+.2f} [{row.low:+.2f}, {row.high:+.2f}]" for row in part.itertuples()
        )

    name = winner.replace("horizon_mse@", "the horizon MSE ‖b‖² + V/H with H = ")
    weakest = table[table.statistic == winner].sort_values("rho").iloc[0]
    return (
        "**Conclusion.** The best predictor of the training outcome among the statistics fixed in advance is "
        f"{name} (ρ: {per_task(winner)}), ahead of the per-estimate MSE (ρ: {per_task('mse')}); the "
        f"squared bias alone and the variance alone predict less well. It is still weak on {weakest.task} "
        f"(ρ {weakest.rho:+.2f}): there, a same-point statistic ranks estimators only roughly as training "
        "does."
    )


def draw(table: pd.DataFrame, best: str | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(table.task))
    statistics = list(dict.fromkeys(table.statistic))
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), sharey=True, squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        part = table[table.task == task].set_index("statistic").reindex(statistics)
        positions = np.arange(len(statistics))
        axis.errorbar(
            part.rho,
            positions,
            xerr=[part.rho - part.low, part.high - part.rho],
            fmt="o",
            color="C0",
            capsize=3,
        )
        axis.axvline(0, color="0.6", linewidth=0.8)
        axis.set_xlim(-1.05, 1.05)
        axis.set_title(task, fontsize=10)
        axis.set_xlabel("Spearman ρ with the final objective")
        axis.set_yticks(positions)
        labels = [
            name.replace("horizon_mse@", "horizon MSE, H=") + (" (fitted)" if name == best else "")
            for name in statistics
        ]
        axis.set_yticklabels(labels)
    axes[0][0].invert_yaxis()
    figure.suptitle(
        "Which same-point statistic ranks estimators as training does? "
        "(+1: the same order; 95% t-intervals over 5 seeds)",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
