"""The results page: ``docs/results/README.md`` with every study's tables and figures (``studies.STUDIES``).

``write_page(root, out)`` reads each study's runs below ``root/publish/<name>/``, writes its tidy tables into
``out/<name>/`` (``summary.csv`` with labels and the tasks' report declarations, ``curves.csv``, and the
same-point studies' ``study.csv`` and ``paired.csv``), and renders the page from those tables as read back;
``render_page(out)`` renders it from the committed tables alone (``--from-summaries``), so the two give the
same page. Every number on it comes from the tables: the intervals over seeds (``bench.report``), the
budget (runs, seeds, steps, summed wall time), the machine, versions, dates and commits of the runs; the
sentence under each figure is computed from the numbers the figure draws.
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import matplotlib
import pandas as pd
import seaborn

from bench.formats.contract import (
    OK,
    PROBE_FIELDS,
    RECOMMENDATION_FILE,
    RECOMMENDATION_REPORT,
    SUMMARY_FILE,
    TUNING_STAGE_ONE_DIR,
)
from bench.formats.errors import ConfigError
from bench.formats.names import file_name, inside, is_safe
from bench.formats.tables import markdown_table
from bench.report.comparisons import rank
from bench.report.conclusions import conclusions
from bench.report.declarations import Panel, task_declaration
from bench.report.figures import WRITTEN, figure_bias_variance, figure_panels, figure_scale, output
from bench.report.gradients import error_parts
from bench.report.markdown import GENERIC_PANELS, analyse, main_table, section_lines, values_of
from bench.report.palette import palette_for
from bench.report.publish.studies import DEFAULT_BUDGET, STUDIES, PageStudy
from bench.report.read import CURVES_TABLE, SUMMARY_TABLE, load_runs, read_tables, write_tables
from bench.report.same_point.markdown import task_lines
from bench.report.same_point.statistics import (
    MINIMUM_SEEDS,
    aggregate,
    baseline_of,
    fixed_members,
    member_label,
    over_seeds,
    wide,
)
from bench.report.same_point.tables import STUDY_TABLES, collect_study_tables, read_study_tables
from bench.report.statistics import on_log_scale
from bench.report.tuning import (
    CURVE_METRIC,
    TARGET_METRIC,
    TUNING_DIR,
    collect_tuning,
    profile_lines,
    read_studies,
)
from bench.report.tuning import study_lines as tuned_study_lines
from bench.report.write import curves_of, numeric

PAGE = "README.md"
COMMITTED_TABLE = "table.md"  # what a script-made study (figures "committed") writes for the page
WRITTEN_LIST = "written.txt"
"""In each study's folder: the files its last rendering wrote, one name a line. Drawing the page again removes
exactly these (and nothing a user put beside them)."""
PUBLISH_DIR = "publish"
DPI = 100
TABLES = (SUMMARY_TABLE, CURVES_TABLE, *STUDY_TABLES)
PAGE_METRICS = ("objective", "validation_objective", *PROBE_FIELDS)
"""Metrics of curves.csv the page reads, besides those the tasks' report sections declare
(``drawn_metrics``); the rest (the training loss, logged every few steps) is left out of the tables."""


def drawn_metrics(summaries: pd.DataFrame) -> set[str]:
    """``PAGE_METRICS`` and every metric of the runs' tasks' declared sections (columns and panels)."""
    found = set(PAGE_METRICS)
    for task in summaries["task"].unique():
        declared = (
            summaries.loc[summaries["task"] == task, "task_report"] if "task_report" in summaries else []
        )
        for section in task_declaration(declared, str(task)).sections:
            found |= {column.metric for column in section.columns} | {
                panel.metric for panel in section.panels
            }
    return found


def study_directory(out: Path, study: PageStudy) -> Path:
    """``out/<study>``, the folder of the study's tables and figures; ConfigError if it is a symbolic link
    (or would lie outside ``out``): publishing writes and removes files there."""
    directory = Path(out) / study.name
    if directory.is_symlink():
        raise ConfigError(
            f"{directory} is a symbolic link (to {directory.resolve()}); the results page writes and removes "
            f"files in its study folders, so it refuses one that points elsewhere. Replace the link with a "
            f"folder."
        )
    return inside(out, study.name)


def study_folder(root: Path, study: PageStudy) -> Path:
    """Where ``python -m bench.publish`` runs ``study`` (its ``hydra.sweep.dir``)."""
    return Path(root) / PUBLISH_DIR / study.name


def finished_dates(root: Path, runs: pd.Series) -> list[str]:
    """Each run's end (its summary.json's modification time) as a UTC date."""
    return [
        datetime.fromtimestamp((root / run / SUMMARY_FILE).stat().st_mtime, tz=timezone.utc).strftime(
            "%Y-%m-%d"
        )
        for run in runs
    ]


def write_study_tables(root: Path, study: PageStudy, directory: Path) -> bool:
    """The tidy tables of ``study``'s runs in ``directory``, replacing what was there; False (and the tables
    there left as they are) when it has no runs."""
    folder = study_folder(root, study) / study.runs
    if "recommendation" in study.figures:  # the answer beside the runs it rests on
        answer = study_folder(root, study) / RECOMMENDATION_REPORT
        if not answer.is_file():
            return False
        directory.mkdir(parents=True, exist_ok=True)
        for name in (RECOMMENDATION_REPORT, RECOMMENDATION_FILE):
            shutil.copyfile(study_folder(root, study) / name, inside(directory, name))
    tuned = "tuned" in study.figures  # the whole tuned study: stage 2 and held-out runs, and tuning.json
    skip = (f"{TUNING_STAGE_ONE_DIR}/",) if tuned else ()
    runs = load_runs(folder, skip=skip) if folder.is_dir() else None
    if runs is None or runs.summaries.empty:
        return False
    directory.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        inside(directory, name).unlink(missing_ok=True)
    if tuned:
        collect_tuning(folder, directory)
    summaries = runs.summaries
    summaries["root"] = str(study_folder(Path(root.name), study) / study.runs)
    summaries["finished"] = finished_dates(folder, summaries["run"])
    # Short run names: the folder's name (its overrides) on every row of curves.csv was most of its size.
    short = {run: f"run{index:03d}" for index, run in enumerate(summaries["run"])}
    summaries.insert(summaries.columns.get_loc("run") + 1, "folder", summaries["run"])
    summaries["run"] = summaries["run"].map(short)
    metrics = runs.metrics.assign(run=runs.metrics["run"].map(short))
    # A tuned study's part draws the objective and the validation objective alone (bench.report.tuning).
    drawn = {CURVE_METRIC, TARGET_METRIC} if tuned else drawn_metrics(summaries)
    runs.metrics = metrics[metrics["metric"].isin(drawn)]
    write_tables(runs, directory)
    collect_study_tables(folder, directory)
    if (directory / STUDY_TABLES[0]).is_file():
        shrink_study_tables(directory)
    return True


DROPPED_COLUMNS = ["run", "params_digest"]
STUDY_METRICS = ("grad_mse", "grad_variance", "grad_bias_p", "f_evals", "reference_norm", "draws")
"""The rows of study.csv the study's Markdown and figures read (bench.report.same_point)."""
PAIRED_FOR_ALL = ("mse_difference_se", "mse_difference_se_unpaired", "squared_error_correlation")
PAIRED_FOR_BASELINE = ("mse_ratio", "mse_log_ratio_se", "mse_difference", *PAIRED_FOR_ALL)
PAIRED_FOR_VARIANTS = ("mse_ratio", "variance_ratio")


def shrink_study_tables(directory: Path) -> None:
    """The study tables without what the page does not read (the checkpoints' parameter digests; the pairs'
    rows the study's Markdown and figures never look at), text kept as written."""
    options = {"dtype": str, "keep_default_na": False, "na_values": []}
    study = pd.read_csv(directory / STUDY_TABLES[0], **options)
    study = study[study["metric"].isin(STUDY_METRICS)]
    study.drop(columns=DROPPED_COLUMNS, errors="ignore").to_csv(directory / STUDY_TABLES[0], index=False)
    path = directory / STUDY_TABLES[1]
    if not path.is_file():
        return
    paired = pd.read_csv(path, **options)
    baseline = paired["study_baseline"]
    fixed = paired["variant"] == "fixed"
    metric = paired["metric"]
    keep = (
        (fixed & (paired["estimator"] < paired["baseline"]) & metric.isin(PAIRED_FOR_ALL))
        | (fixed & (paired["baseline"] == baseline) & metric.isin(PAIRED_FOR_BASELINE))
        | (~fixed & (paired["baseline"] == baseline) & metric.isin(PAIRED_FOR_VARIANTS))
        | ((paired["estimator"] == baseline) & (metric == "mse_ratio"))
    )
    paired[keep].drop(columns=DROPPED_COLUMNS, errors="ignore").to_csv(path, index=False)


def write_page(root: Path, out: Path, studies: tuple[PageStudy, ...] = STUDIES) -> Path:
    """Tables of every study's runs below ``root`` into ``out``, then the page from them; returns its path.
    FileNotFoundError when no study has runs."""
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not any((study_folder(root, study) / study.runs).is_dir() for study in studies):
        raise FileNotFoundError(
            f"no runs of any study below {root / PUBLISH_DIR} (run python -m bench.publish first)"
        )
    for study in studies:
        study_directory(out, study)  # before anything is written: no study folder is a symbolic link
    for study in studies:
        written = write_study_tables(root, study, study_directory(out, study))
        kept = (out / study.name / SUMMARY_TABLE).is_file()
        print(
            f"  {study.name}: "
            + ("tables written" if written else "no runs: tables kept" if kept else "no runs")
        )
    return render_page(out, studies)


# ---- From the tables to the page ------------------------------------------------------------------------


def clear_figures(directory: Path) -> None:
    """Remove what the previous rendering wrote into ``directory``: the files named in its ``WRITTEN_LIST``
    (safe names of files, never the tidy tables; a folder without the list, from before it existed, keeps
    its files and the new rendering overwrites those of the same names)."""
    listed = directory / WRITTEN_LIST
    if not listed.is_file() or listed.is_symlink():
        return
    for name in listed.read_text(errors="replace").splitlines():
        path = directory / name
        if is_safe(name) and name not in TABLES and (path.is_symlink() or path.is_file()):
            path.unlink()
    listed.unlink()


def record_written(directory: Path, written: list[Path]) -> None:
    """``WRITTEN_LIST`` in ``directory``: the names of the files among ``written`` that lie in it."""
    names = sorted({path.name for path in written if path.parent == directory})
    inside(directory, WRITTEN_LIST).write_text("".join(f"{name}\n" for name in names))


def render_page(out: Path, studies: tuple[PageStudy, ...] = STUDIES) -> Path:
    """The page from the tables in ``out/<study>/`` (writing the figures there); returns its path.
    FileNotFoundError when no study has tables."""
    out = Path(out)
    tables = {
        study.name: study_directory(out, study)
        for study in studies
        if (out / study.name / SUMMARY_TABLE).is_file()
    }
    committed = {
        study.name
        for study in studies
        if "committed" in study.figures and (out / study.name / COMMITTED_TABLE).is_file()
    }
    if not tables:
        raise FileNotFoundError(f"no study tables (<study>/{SUMMARY_TABLE}) in {out}")
    summaries = {name: read_tables(directory).summaries for name, directory in tables.items()}
    lines = header_lines(studies, summaries, committed)
    problems: dict[str, dict[str, float]] = {}  # the tuned studies' problems, for one profile across them
    targets: list[str] = []
    for study in studies:
        print(f"  rendering {study.name}", flush=True)
        if study.name in committed:
            lines += committed_lines(study, out / study.name)
        elif study.name in tables:
            lines += study_lines(study, out / study.name, problems, targets)
        else:
            lines += missing_lines(study)
        if study.name == last_tuned(studies, tables):
            lines += profile_part(study, out / study.name, problems, targets)
    inside(out, PAGE).write_text("\n".join(lines).rstrip("\n") + "\n")
    return out / PAGE


def last_tuned(studies: tuple[PageStudy, ...], tables: dict[str, Path]) -> str | None:
    """The last tuned study with tables: the performance profile across the tuned studies follows it."""
    names = [study.name for study in studies if "tuned" in study.figures and study.name in tables]
    return names[-1] if names else None


def profile_part(
    study: PageStudy, directory: Path, problems: dict[str, dict[str, float]], targets: list[str]
) -> list[str]:
    """The performance profile across the tuned studies' problems, its figure in ``study``'s folder."""
    first = len(WRITTEN)
    with output(DPI, pdf=False):
        lines = profile_lines(problems, targets, directory, "##")
    listed = directory / WRITTEN_LIST
    known = listed.read_text().splitlines() if listed.is_file() else []
    names = sorted({*known, *(path.name for path in WRITTEN[first:] if path.parent == directory)})
    inside(directory, WRITTEN_LIST).write_text("".join(f"{name}\n" for name in names))
    if lines and lines[0].startswith("## "):
        lines[0] = "## Tuned optimizers: performance profile across the problems above"
    return relink(lines, study.name)


def command_of(study: PageStudy) -> str:
    if study.command.endswith(".py"):
        return f"python {study.command} {' '.join(study.overrides)}".rstrip()
    multirun = "-m " if study.command == "bench" else ""
    return f"python -m {study.command} {multirun}{' '.join(study.overrides)}"


def committed_lines(study: PageStudy, directory: Path) -> list[str]:
    """A study whose script writes its own table (``table.md``) and figure into its folder: shown as
    committed, with the command that regenerates them."""
    lines = [f"## {study.title}", "", study.about, ""]
    lines += [(directory / COMMITTED_TABLE).read_text().rstrip("\n"), ""]
    figures = sorted(path.name for path in directory.glob("*.png") if is_safe(path.name))
    lines += [line for name in figures for line in (f"![{study.title}]({name})", "")]
    lines += [
        f"Regenerated by `{command_of(study)}` (it writes this folder; not run by `bench.publish`).",
        "",
    ]
    return relink(lines, study.name)


def recommendation_lines(directory: Path) -> list[str]:
    """A recommendation's Markdown (``python -m bench.recommend``) under the study's heading: its own title
    left out, its sections one level down."""
    text = (directory / RECOMMENDATION_REPORT).read_text()
    lines = [line for line in text.splitlines() if not line.startswith("# ")]
    return [("#" + line) if line.startswith("## ") else line for line in lines] + [""]


def missing_lines(study: PageStudy) -> list[str]:
    return [
        f"## {study.title}",
        "",
        f"Not run yet: `python -m bench.publish --only {study.name}` runs it (`{command_of(study)}`).",
        "",
    ]


def unique_text(values: pd.Series, limit: int = 4) -> str:
    found = sorted({str(value) for value in values.dropna()})
    return ", ".join(found[:limit]) + (f" and {len(found) - limit} more" if len(found) > limit else "")


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def commits_text(summaries: pd.DataFrame) -> str:
    counts = summaries["git_commit"].fillna("unknown").astype(str).str[:7].value_counts()
    return ", ".join(
        f"`{commit}` ({count} run{'s' if count > 1 else ''})" for commit, count in sorted(counts.items())
    )


def header_lines(
    studies: tuple[PageStudy, ...], summaries: dict[str, pd.DataFrame], committed: set[str] = frozenset()
) -> list[str]:
    """Title, how to regenerate, the budget, the machine, versions, dates and commits, and the studies."""
    every = pd.concat(summaries.values(), ignore_index=True)
    wall = pd.to_numeric(every["wall_time_s"], errors="coerce")
    dates = sorted(every["finished"].dropna().astype(str)) if "finished" in every else []
    rows = []
    for study in studies:
        found = summaries.get(study.name)
        if found is None:
            shown = "by its script" if study.name in committed else "not run"
            row = {"study": f"[{study.title}](#{anchor(study.title)})", "runs ok/total": shown}
            if study.name in committed:
                row["command"] = f"`{command_of(study)}`"
            rows.append(row)
            continue
        ok = int((found["status"] == OK).sum())
        rows.append(
            {
                "study": f"[{study.title}](#{anchor(study.title)})",
                "runs ok/total": f"{ok}/{len(found)}",
                "seeds": str(found["seed"].nunique()),
                "steps": unique_text(pd.to_numeric(found["steps"], errors="coerce").astype("Int64")),
                "run wall time, min": minutes(pd.to_numeric(found["wall_time_s"], errors="coerce").sum()),
                "command": f"`{command_of(study)}`",
            }
        )
    table = pd.DataFrame(rows).fillna("")
    versions = ", ".join(
        f"{name} {unique_text(every[column])}"
        for name, column in (
            ("Python", "python_version"),
            ("torch", "torch_version"),
            ("NumPy", "numpy_version"),
            ("Hydra", "hydra_version"),
        )
        if column in every
    )
    plotting = f"matplotlib {minor(matplotlib.__version__)}, seaborn {minor(seaborn.__version__)}"
    return [
        "# Results",
        "",
        "Every table and figure of this page is regenerated by one command, `python -m bench.publish`: it "
        "runs (or resumes) every study below into `results/publish/<study>/`, then rewrites this folder from "
        "the run files (`python -m bench.report --publish docs/results results/`). "
        "`python -m bench.report --from-summaries docs/results` redraws the page from the tables committed "
        "beside it (`<study>/summary.csv`, `<study>/curves.csv`, and `study.csv` / `paired.csv` for the "
        "same-point studies: labels and the tasks' report declarations included) without running anything.",
        "",
        f"**Budget.** The default sizes (seeds, steps) are meant for {DEFAULT_BUDGET}. These runs took "
        f"{minutes(wall.sum())} minutes of run wall time summed over {len(every)} runs "
        f"({int((every['status'] == 'ok').sum())} ok; two at a time, that is about half as long in elapsed "
        "time; run wall times grow when the cores are shared with other work). To scale a study up on a "
        "GPU or a cluster, override its seeds or steps: `python -m bench.publish --results results_large "
        "--set vq_estimators:seed=0,1,2,3,4 --set vq_estimators:steps=1500` (any `NAME:KEY=VALUE` replaces "
        "that study's override; `--jobs N` runs N at a time; `python -m bench.publish --dry-run` prints "
        "every command).",
        "",
        f"**Machine and versions** (from the runs' `summary.json`): {unique_text(every['device_name'])} "
        f"({unique_text(every['device'])}), {unique_text(every['threads'])} thread(s) per run; {versions}; "
        f"figures drawn with {plotting}. Runs finished "
        + (f"{dates[0]} to {dates[-1]}" if dates else "on unknown dates")
        + f" (UTC), at commit(s) {commits_text(every)}.",
        "",
        "**Intervals.** Every interval is the 95% interval over seeds (runs of one seed averaged first; "
        "a t-interval, geometric for scale quantities such as variances and times; the same-point studies' "
        "too, of each seed's log ratio, with its measured coverage under each table), as in "
        "`python -m bench.report`; `seeds` is the number of seeds behind "
        "each row. Where two intervals overlap, the page does not claim a difference (paired tests over "
        "seeds are in `python -m bench.report`'s full report of a study's folder).",
        "",
        markdown_table(table),
        "",
    ]


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def anchor(title: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", title.lower())
    return text.replace(" ", "-")


def relink(lines: list[str], folder: str) -> list[str]:
    """Image links of a study's Markdown made relative to the page (the figures are in ``folder``)."""
    return [re.sub(r"!\[([^\]]*)\]\(([^)/]+)\)", rf"![\1]({folder}/\2)", line) for line in lines]


def study_lines(
    study: PageStudy,
    directory: Path,
    problems: dict[str, dict[str, float]] | None = None,
    targets: list[str] | None = None,
) -> list[str]:
    """A study's part of the page, rendered from its tables in ``directory`` (figures written there); a
    tuned study adds its problems' times to target to ``problems`` and ``targets``."""
    clear_figures(directory)
    first = len(WRITTEN)
    tables = read_tables(directory)
    summaries = numeric(tables.summaries)
    curves = curves_of(summaries, tables.metrics)
    palette = palette_for(summaries["label"].astype(str).unique().tolist())
    lines = [f"## {study.title}", "", study.about, "", *facts(study, summaries)]
    with output(DPI, pdf=False):
        if "recommendation" in study.figures:
            lines += recommendation_lines(directory)
        elif "study" in study.figures:
            lines += same_point_lines(directory)
        elif "tuned" in study.figures:
            lines += tuned_lines(study, directory, summaries, curves, problems, targets)
        else:
            for task in sorted(summaries["task"].unique()):
                lines += task_part(study, task, summaries, curves[curves["task"] == task], palette, directory)
    record_written(directory, WRITTEN[first:])
    return relink(lines, study.name)


def tuned_lines(
    study: PageStudy,
    directory: Path,
    summaries: pd.DataFrame,
    curves: pd.DataFrame,
    problems: dict[str, dict[str, float]] | None,
    targets: list[str] | None,
) -> list[str]:
    """A tuned study (``python -m bench.tune``) from its tables and its ``tuning.json`` (copied into
    ``directory/tuning/``): the choices, the learning-rate sensitivity, the tuned settings over steps and
    time, the final table with the differences from the baseline, and the held-out check
    (``bench.report.tuning``), every table headed by the optimizer."""
    documents = read_studies(directory)
    if not documents:
        return [f"No `{TUNING_DIR}/` copy of the study's tuning.json beside its tables.", ""]
    # The tuning part finds runs by their folders (final/..., heldout/...): the tables' short run names
    # mapped back.
    folders = dict(zip(summaries["run"], summaries["folder"], strict=True))
    summaries = summaries.assign(run=summaries["folder"])
    curves = curves.assign(run=curves["run"].map(folders))
    return tuned_study_lines(
        documents[0],
        study.title,
        summaries,
        curves,
        directory,
        file_name(study.name),
        {} if problems is None else problems,
        [] if targets is None else targets,
    )


def facts(study: PageStudy, summaries: pd.DataFrame) -> list[str]:
    """The study's budget: runs, seeds, steps, S and M, its summed wall time, and the command."""
    ok = summaries[summaries["status"] == OK]
    parts = [
        f"{len(ok)}/{len(summaries)} runs ok",
        f"seeds {unique_text(summaries['seed'].astype('Int64'), 10)}",
        f"{unique_text(summaries['steps'].astype('Int64'))} steps",
    ]
    if "study" not in study.figures:  # a study states its own S and M; the trajectories' are not those
        for column, text in (("samples", "S = {}"), ("probe_draws", "M = {} probe draws")):
            if column in summaries and summaries[column].notna().any():
                parts.append(text.format(unique_text(summaries[column].astype("Int64"))))
    parts.append(f"{minutes(summaries['wall_time_s'].sum())} min of run wall time summed")
    return [f"Budget: {'; '.join(parts)}. Command: `{command_of(study)}`.", ""]


def task_part(
    study: PageStudy, task: str, summaries: pd.DataFrame, curves: pd.DataFrame, palette: dict, directory: Path
) -> list[str]:
    """One task of an own-trajectory study: the main table and the study's figures, each with its sentence."""
    analysis = analyse(task, summaries, curves)
    final = rank(task, "final_loss", values_of(analysis.ok, "final_loss"), log=False)
    paragraph = conclusions(analysis, [final] if final is not None else [])
    lines = [f"### Task `{task}`", "", *paragraph, *main_table(analysis)]
    for kind in study.figures:
        if kind.startswith(("section:", "table:")):
            which, _, name = kind.partition(":")
            sections = [section for section in analysis.declaration.sections if section.name == name]
            for section in sections:
                section = section if which == "section" else replace(section, panels=())
                found = section_lines(task, section, analysis.runs, curves, palette, directory)
                figure = file_name(f"{task}_{section.name}")
                if (directory / f"{figure}.csv").is_file():  # the sentence right below the figure
                    at = next(i for i, line in enumerate(found) if line.startswith(f"![{figure}"))
                    sentence = curve_sentence(directory / f"{figure}.csv", section.panels)
                    found[at + 2 : at + 2] = [sentence, ""]
                lines += found
        elif kind in ("objective", "validation_objective"):
            panel = GENERIC_PANELS[kind]
            name = figure_panels(task, f"{task}_{kind}", "", (panel,), curves, palette, directory)
            if name:
                lines += [
                    f"![{task} {kind}]({name})",
                    "",
                    curve_sentence(directory / drawn_numbers(name), (panel,)),
                    "",
                ]
        elif kind == "bias_variance":
            lines += bias_variance_lines(task, analysis, palette, directory)
        elif kind == "variance":
            values = analysis.point.values
            if "grad_variance" in values:
                name = figure_scale(task, values, "grad_variance", analysis.point.title, palette, directory)
                if name:
                    lines += [
                        f"![{task} variance]({name})",
                        "",
                        scale_sentence(directory / drawn_numbers(name)),
                        "",
                    ]
    return lines


def drawn_numbers(figure: str) -> str:
    """The file of the numbers that the figure ``figure`` (its PNG's name) draws: ``<stem>.csv``."""
    return figure.removesuffix(".png") + ".csv"


def curve_sentence(path: Path, panels: tuple[Panel, ...]) -> str:
    """What a figure over training steps shows, from the numbers it draws (``<figure>.csv``): in its first
    drawn panel, the lowest and highest configuration at the last step that every configuration reached,
    and whether their intervals overlap."""
    data = pd.read_csv(path, keep_default_na=False, na_values=[""])
    drawn = [panel for panel in panels if panel.metric in set(data["panel"])]
    panel = drawn[0]
    data = data[data["panel"] == panel.metric]
    last = data.groupby("label")["step"].max().min()
    at = data[data["step"] == last].dropna(subset=["center"]).sort_values(["center", "label"])
    title = panel.title[:1].upper() + panel.title[1:]
    which = f"{len(drawn)} panels; the first: " if len(drawn) > 1 else ""
    interval = (
        "geometric mean ×/÷ 95% interval" if on_log_scale(panel.metric, panel.log) else "mean ± 95% interval"
    )
    intro = f"{which}{title} over training steps, per configuration ({interval} over seeds)"
    intro = intro[:1].upper() + intro[1:]
    if len(at) < 2:
        return intro + "."
    low, high = at.iloc[0], at.iloc[-1]
    overlap = not (float(low["high"]) < float(high["low"]))
    return (
        f"{intro}; at step {int(last)} the lowest is {low['label']} ({low['center']:.4g}) and the highest "
        f"{high['label']} ({high['center']:.4g})"
        + ("; their intervals overlap." if overlap else "; their intervals do not overlap.")
    )


def scale_sentence(path: Path) -> str:
    data = pd.read_csv(path, keep_default_na=False, na_values=[""]).sort_values(["center", "label"])
    data = data[data["center"] > 0]
    low, high = data.iloc[0], data.iloc[-1]
    return (
        f"Gradient variance per configuration (geometric mean over seeds ×/÷ its 95% interval): smallest for "
        f"{low['label']} ({low['center']:.3g}), largest for {high['label']} ({high['center']:.3g})."
    )


def bias_variance_lines(task: str, analysis, palette: dict, directory: Path) -> list[str]:
    """The squared bias against variance figure with its sentence (a task with a reference gradient)."""
    values = analysis.point.values
    if analysis.reference == "none" or values.empty:
        return []
    parts = error_parts(analysis.point, analysis.deterministic)
    draws = (
        pd.to_numeric(values["probe_draws"], errors="coerce").median()
        if "probe_draws" in values
        else math.nan
    )
    verdicts = analysis.verdicts.at_point(analysis.point.same_parameters) if analysis.verdicts else {}
    family = analysis.verdicts.family if analysis.verdicts else ""
    name = figure_bias_variance(
        task, parts, float(draws), analysis.point.title, verdicts, palette, directory, family
    )
    if not name:
        return []
    data = pd.read_csv(directory / drawn_numbers(name), keep_default_na=False, na_values=[""])
    data = data.sort_values(["variance", "label"])
    biased = sorted(label for label in data["label"] if verdicts.get(label, (0, 0))[0] > 0)
    tested = sorted(label for label in data["label"] if verdicts.get(label, (0, 0))[1] > 0)
    not_biased = [label for label in tested if label not in biased]
    aside = sorted(analysis.deterministic)
    rejects = (
        f"the bias test rejects zero bias there for {', '.join(biased)}"
        + (f" and not for {', '.join(not_biased)}" if not_biased else "")
        if biased
        else f"the bias test rejects zero bias there for none of {', '.join(not_biased)}"
    )
    sentence = (
        f"Squared bias against variance of one estimate at {analysis.point.title} (relative to ‖g*‖² where "
        f"every run has it): the smallest variance is {data.iloc[0]['label']}'s "
        f"({data.iloc[0]['variance']:.3g}), the largest {data.iloc[-1]['label']}'s "
        f"({data.iloc[-1]['variance']:.3g}); {rejects}"
        + (f"; not drawn (draws do not vary): {', '.join(aside)}." if aside else ".")
    )
    return [f"![{task} bias and variance]({name})", "", sentence, ""]


# ---- Same-point gradient studies ------------------------------------------------------------------------


def same_point_lines(directory: Path) -> list[str]:
    """Per task and trajectory, the study's tables and figures (``bench.report.same_point``), each figure with
    its sentence."""
    tables = read_study_tables(directory)
    if tables is None:
        return ["No study tables (study.csv) for this study.", ""]
    study, paired = tables
    lines = []
    for task in sorted(study["task"].unique()):
        found = task_lines(task, study[study["task"] == task], paired[paired["task"] == task], directory)
        sentences = study_sentences(study[study["task"] == task], paired[paired["task"] == task])
        for line in found:
            lines.append(line)
            match = re.match(r"!\[(study_[^\]]*)\]", line)
            if match and match.group(1) in sentences:
                lines += ["", sentences[match.group(1)]]
    return lines


def study_sentences(study: pd.DataFrame, paired: pd.DataFrame) -> dict[str, str]:
    """Figure stem → a sentence computed from the study's tables, for the progress and paired figures."""
    members = wide(study)
    fixed = fixed_members(paired, members)
    keep = [(e, float(s)) in fixed for e, s in zip(members["estimator"], members["samples"], strict=True)]
    members = members[keep]
    baseline = baseline_of(study, members)
    found = {}
    task = str(study["task"].iloc[0])
    for trajectory in sorted(members["trajectory"].unique()):
        stem = f"study_{task}_{trajectory}"
        summary = aggregate(members[members["trajectory"] == trajectory], baseline)
        mse = sorted(
            (value[0], member_label(e, s), cost)
            for e, s, value, cost in zip(
                summary["estimator"], summary["samples"], summary["mse"], summary["f_evals"], strict=True
            )
            if not math.isnan(value[0])
        )
        if mse:
            costs = {label: cost for _, label, cost in mse}
            base = next((cost for _, label, cost in mse if label.startswith(f"{baseline} (")), math.nan)
            unequal = len({cost for cost in costs.values() if not math.isnan(cost)}) > 1
            best = (
                f", at {mse[0][2]:g} evaluations of f per estimate against {baseline}'s {base:g}"
                if unequal and mse[0][2] != base
                else ""
            )
            found[f"{stem}_progress"] = (
                f"MSE, variance and the true gradient's norm at every checkpoint (line: geometric mean over "
                f"seeds; band: min–max over seeds, or each seed's points below {MINIMUM_SEEDS} seeds); over "
                f"checkpoints and seeds the MSE relative to "
                f"{baseline}'s is lowest for {mse[0][1]} ({mse[0][0]:.3g}{best}) and highest for "
                f"{mse[-1][1]} ({mse[-1][0]:.3g})."
            )
        chosen = paired[
            (paired["trajectory"] == trajectory)
            & (paired["variant"] == "fixed")
            & (paired["baseline"] == baseline)
            & (paired["metric"] == "mse_ratio")
        ]
        if not chosen.empty:
            below, above, neither = [], [], []
            for (estimator, samples), group in chosen.groupby(["estimator", "samples"]):
                means = [over_seeds(values, log=True)[0] for _, values in group.groupby("step")["value"]]
                if all(value < 1 for value in means):
                    below.append(member_label(estimator, samples))
                elif all(value > 1 for value in means):
                    above.append(member_label(estimator, samples))
                else:
                    neither.append(member_label(estimator, samples))
            found[f"{stem}_paired"] = (
                f"Each estimator's MSE over {baseline}'s at each checkpoint, paired on the same draws' noise "
                f"(geometric mean over seeds); below 1 at every checkpoint: {', '.join(below) or 'none'}; "
                f"above 1 at every checkpoint: {', '.join(above) or 'none'}; neither: "
                f"{', '.join(neither) or 'none'}."
            )
    return found


def copy_tables(source: Path, target: Path, studies: tuple[PageStudy, ...] = STUDIES) -> None:
    """The committed tables of ``source`` (a page folder) copied into ``target``, study by study (with a tuned
    study's copy of its tuning.json)."""
    for study in studies:
        for name in TABLES:
            if (source / study.name / name).is_file():
                (target / study.name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / study.name / name, target / study.name / name)
        # A recommendation's own report and record; a script-made study's table, data and figures (the page
        # shows them as committed: nothing redraws them).
        kept = [RECOMMENDATION_REPORT, RECOMMENDATION_FILE] if "recommendation" in study.figures else []
        if "committed" in study.figures and (source / study.name).is_dir():
            kept += sorted(
                path.name
                for path in (source / study.name).iterdir()
                if path.is_file() and path.suffix in (".md", ".csv", ".png") and is_safe(path.name)
            )
        for name in kept:
            if (source / study.name / name).is_file():
                (target / study.name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / study.name / name, target / study.name / name)
        documents = source / study.name / TUNING_DIR  # a tuned study's tuning.json, beside its tables
        if documents.is_dir():
            (target / study.name / TUNING_DIR).mkdir(parents=True, exist_ok=True)
            for document in sorted(documents.glob("*.json")):
                shutil.copyfile(document, target / study.name / TUNING_DIR / document.name)
