"""A table's bias verdicts are its own (Holm over its probes, named under it); figures hide nothing: one
colour per estimator and optimizer everywhere, coinciding curves and points drawn apart and named, each
seed drawn (no band) below 3 seeds; the comparisons' interval and p-value adjusted alike."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from bench.formats.configs import CONF_DIR  # noqa: E402
from bench.formats.contract import PROBE_FIELDS  # noqa: E402
from bench.report.comparisons import rank  # noqa: E402
from bench.report.figures import draw_band  # noqa: E402
from bench.report.gradients import bias_verdicts, error_parts, probe_point  # noqa: E402
from bench.report.markdown import analyse, main_table, ranking_lines  # noqa: E402
from bench.report.palette import COLOURS, coinciding, name_of, palette_for, styles  # noqa: E402
from bench.report.statistics import bands  # noqa: E402
from bench.report.write import curves_of, numeric  # noqa: E402

TASK = "demo"


def runs(labels: dict[str, float], seeds: int, prefix: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Finished runs of ``labels`` (label → the p-value every probe of it gives) at steps 0 and 10."""
    summaries, metrics = [], []
    for label, p_value in labels.items():
        for seed in range(seeds):
            run = f"{prefix}{label}_{seed}"
            fields = {
                "grad_variance": 1.0 + seed,
                "grad_variance_rel": 1.0 + seed,
                "grad_bias_sq": 0.01,
                "grad_bias_rel": 0.01,
                "grad_mse": 1.01 + seed,
                "grad_cos": 0.9,
                "grad_bias_p": p_value,
            }
            for step in (0, 10):
                metrics += [(run, step, "objective", 1.0 + seed)]
                metrics += [(run, step, name, value) for name, value in fields.items()]
            summaries.append(
                {
                    "task": TASK,
                    "estimator": label,
                    "optimizer": "adam",
                    "label": label,
                    "seed": seed,
                    "status": "ok",
                    "reference": "analytic",
                    "run": run,
                    "root": "synthetic",
                    "task_report": "",
                    "steps": 10,
                    "final_loss": 1.0 + seed,
                    "step_time_ms": 1.0,
                    "estimate_time_ms": 1.0,
                    "f_evals": 2,
                    "probe_draws": 64,
                    **{name: fields.get(name, math.nan) for name in PROBE_FIELDS},
                }
            )
    summaries = numeric(pd.DataFrame(summaries))
    return summaries, curves_of(summaries, pd.DataFrame(metrics, columns=["run", "step", "metric", "value"]))


def test_a_tables_verdicts_are_over_its_own_probes_whatever_is_beside_it():
    # Table A: "st" with p = 0.004 at each of its 2 × 3 = 6 probes, "rloo" with p = 0.5: Holm over A's 12
    # probes rejects st (0.004 × 12 = 0.048 < 5%). Another study's 24 more probes of the same task beside it
    # (table B) would make the family 36 (0.004 × 36 > 5%): A's verdicts must not change.
    a_summaries, a_curves = runs({"st": 0.004, "rloo": 0.5}, seeds=3)
    b_summaries, b_curves = runs({"gumbel": 0.5, "reinmax": 0.5}, seeds=6, prefix="other_")
    both = pd.concat([a_curves, b_curves], ignore_index=True)
    alone = bias_verdicts(a_summaries, a_curves, set())
    beside = bias_verdicts(a_summaries, both, set())
    assert alone.text == beside.text and alone.probes == beside.probes == 12
    assert alone.text["st"].startswith("biased at 5% (6 of 6 probes")
    assert alone.family == "Holm over the 12 probes of this table"
    pooled = bias_verdicts(pd.concat([a_summaries, b_summaries]), both, set())  # negative control
    assert pooled.probes == 36 and pooled.text["st"].startswith("no detectable bias")
    text = "\n".join(main_table(analyse(TASK, a_summaries, a_curves)))
    assert "Bias test: **Holm over the 12 probes of this table**" in text


def test_every_configured_estimator_and_optimizer_has_its_own_colour_in_every_figure():
    from bench.run.build import estimators_for

    optimizers = sorted(path.stem for path in (CONF_DIR / "optimizer").glob("*.yaml"))
    estimators = sorted(path.stem for path in (CONF_DIR / "estimator").glob("*.yaml"))
    missing = sorted(set(optimizers + estimators) - set(COLOURS))
    assert not missing, f"give each a fixed colour in bench/report/palette.py COLOURS: {missing}"
    # Estimators that fit one latent kind can meet in a figure: each its own colour, as are optimizers.
    for kind in ("categorical", "gaussian", "codebook"):
        names = estimators_for(kind)
        assert len({COLOURS[name] for name in names}) == len(names), kind
    assert len({COLOURS[name] for name in optimizers}) == len(optimizers)
    # The same name keeps its colour whatever else a figure shows, and in a study's member labels.
    first = palette_for(["rloo", "st"])
    second = palette_for(["gumbel", "reinmax", "rloo", "score_function", "exact"])
    members = palette_for(["rloo (S=2)", "st (S=2)"])  # a same-point study's
    trajectories = palette_for(["rloo (study trajectory)", "gumbel"])  # its trajectory runs elsewhere
    assert first["rloo"] == second["rloo"] == members["rloo (S=2)"] == trajectories["rloo (study trajectory)"]
    assert first["rloo"] != first["st"]
    assert name_of("rloo (study trajectory)") == "rloo" and name_of("adam lr=0.01") == "adam"
    # Labels that share a name: shades of its colour, all different.
    variants = palette_for(["rloo S=2", "rloo S=4", "rloo S=8"])
    assert len(set(variants.values())) == 3
    # A name without a colour gets a spare one, the same wherever it appears, and never a taken one.
    custom = palette_for(["my_estimator", "rloo"])["my_estimator"]
    assert custom == palette_for(["my_estimator"])["my_estimator"] and custom != first["rloo"]


def test_coinciding_values_are_found_exactly_or_within_a_line_width_of_the_axis():
    series = {  # the axis spans 1 to 11: 1% of it is 0.1
        "rebar": np.array([1.0, 2.0, 3.0]),
        "relax": np.array([1.0, 2.0, 3.0]),
        "rloo": np.array([5.0, 6.0, 11.0]),
        "unordered_set": np.array([5.05, 6.0, 10.95]),  # 0.05 apart: drawn on top of each other
        "st": np.array([5.0, 6.3, 11.0]),  # 0.3 apart at one step: distinguishable
    }
    groups = coinciding(series)
    assert [(group.labels, group.exact, group.text) for group in groups] == [
        (("rebar", "relax"), True, "rebar = relax"),
        (("rloo", "unordered_set"), False, "rloo ≈ unordered_set"),
    ]
    drawn = styles(series, groups)
    assert drawn["relax"].legend == "relax (= rebar)" and drawn["st"].legend == "st"
    assert drawn["rebar"].line != drawn["relax"].line and drawn["rebar"].marker != drawn["relax"].marker
    # On a log axis closeness is a ratio: 1% of the decades spanned.
    spread = {"a": np.array([1e-3, 1.0]), "b": np.array([1.03e-3, 1.03]), "c": np.array([1.5e-3, 1.5])}
    assert [group.labels for group in coinciding(spread, log=True)] == [("a", "b")]


def band_of(values: dict[str, list[list[float]]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long data (label, seed, step, value) from per-label, per-seed curves, and its band."""
    rows = [
        (label, seed, step, value)
        for label, curves in values.items()
        for seed, curve in enumerate(curves)
        for step, value in enumerate(curve)
    ]
    data = pd.DataFrame(rows, columns=["label", "seed", "step", "value"])
    return data, bands(data, "step")


def test_coinciding_curves_are_drawn_apart_and_fewer_than_3_seeds_are_drawn_seed_by_seed():
    same = [[1.0, 2.0, 3.0], [1.5, 2.5, 3.5], [1.2, 2.2, 3.2]]
    data, band = band_of({"rebar": same, "relax": same, "st": [[4.0, 5.0, 6.0], [4.5, 5.5, 6.5]]})
    figure, axis = plt.subplots()
    groups = draw_band(axis, band, "step", palette_for(band["label"]), data)
    lines = {line.get_label(): line for line in axis.get_lines()}
    assert [group.text for group in groups] == ["rebar = relax"]
    assert lines["rebar (= relax)"].get_linestyle() != lines["relax (= rebar)"].get_linestyle()
    # rebar and relax (3 seeds) get a band each; st (2 seeds) none, and a line per seed instead.
    assert len([item for item in axis.collections if isinstance(item, PolyCollection)]) == 2
    assert len(axis.get_lines()) == 3 + 2
    plt.close(figure)


def test_the_bias_variance_figure_names_coinciding_points_and_its_family(tmp_path, monkeypatch):
    import bench.report.figures as figures

    drawn = {}

    def keep(figure, directory, stem):  # what the figure shows, instead of its files
        axis = figure.axes[0]
        drawn.update(title=axis.get_title(), legend=[text.get_text() for text in axis.get_legend().texts])
        drawn["annotations"] = [child.get_text() for child in axis.texts]
        plt.close(figure)
        return f"{stem}.png"

    monkeypatch.setattr(figures, "write_files", keep)
    summaries, curves = runs({"rebar": 0.5, "relax": 0.5, "st": 0.001}, seeds=3)
    summaries.loc[summaries["label"] == "st", "grad_variance_rel"] *= 3  # st apart from the other two
    curves.loc[(curves["run"].str.startswith("st")) & (curves["metric"] == "grad_variance_rel"), "value"] *= 3
    point = probe_point(summaries, curves)
    verdicts = bias_verdicts(summaries, curves, set())
    palette = palette_for(summaries["label"])
    figures.figure_bias_variance(
        TASK,
        error_parts(point, set()),
        64.0,
        "step 0",
        verdicts.at_point(True),
        palette,
        tmp_path,
        verdicts.family,
    )
    assert "rebar = relax" in drawn["annotations"] and "rebar = relax" in drawn["title"]
    assert "rebar (= relax): 0 of 3 probes biased" in drawn["legend"]
    assert "st: 3 of 3 probes biased" in drawn["legend"]
    assert "Holm over the 18 probes of this table" in drawn["title"]


def test_a_comparisons_table_prints_its_interval_beside_the_p_value_adjusted_the_same_way():
    generator = np.random.default_rng(0)
    values = pd.DataFrame(
        [
            (label, seed, seed + shift + 0.3 * generator.normal())
            for label, shift in (("a", 0.0), ("b", 0.2), ("c", 0.25))
            for seed in range(5)
        ],
        columns=["label", "seed", "value"],
    )
    ranking = rank(TASK, "final_loss", values, log=False)
    lines = ranking_lines(ranking, "final_loss", [], {})
    header = next(line for line in lines if line.startswith("| a | b |") or "p, unadjusted" in line)
    assert "| paired estimate [95% CI], unadjusted | p, unadjusted | p, Holm over 3 pairs |" in header
    pairs = ranking.pairs
    assert ((pairs["ci_low"] > 0) | (pairs["ci_high"] < 0)).tolist() == (pairs["p"] < 0.05).tolist()
    assert (pairs["p_holm"] >= pairs["p"]).all()


def test_a_study_figure_names_the_members_whose_mse_is_rounding_error_instead_of_drawing_them():
    from bench.report.same_point.figures import at_rounding_level

    rows = [
        (seed, step, estimator, 2.0, mse)
        for seed in (0, 1)
        for step in (0, 10)
        for estimator, mse in (
            ("rloo", 1e-3),
            ("st", 5e-2),
            ("leg", 1e-17),
            ("disarm", 1e-3 if step else 1e-12),
        )
    ]
    table = pd.DataFrame(rows, columns=["seed", "step", "estimator", "samples", "grad_mse"])
    # leg is exact at every checkpoint; disarm only at one: it is drawn.
    assert at_rounding_level(table) == ["leg (S=2)"]
