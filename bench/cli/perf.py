"""The command line: ``python -m bench.perf [--only NAMES] [--repeats N] [--threads N] [--device D]
[--quick]``.

Runs the chosen measurements in one process, the probes, the harness and Lookahead on one device
(``--device``: ``cpu``, the default, ``cuda`` or ``cuda:N``; a device that is not there stops it with exit
code 2; lazy Adam and the sweep stay on the CPU), prints the machine and the device, the load average before
and after, and a table of median ratios with their spread and goals, and writes every repeat, atomically, to
``results/perf.json`` (or ``--output``). One measurement that fails is reported as an error row and does not
stop the others; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from bench.campaigns.perf.measurements import (
    measure_estimate_time,
    measure_harness,
    measure_lazy_adam,
    measure_lookahead,
    measure_probe,
    measure_sweep,
)
from bench.campaigns.perf.timing import Result, load_average, machine
from bench.campaigns.perf.verdicts import StoppingRule
from bench.formats.errors import ConfigError
from bench.formats.files import ROOT, atomic_write_text, strict
from bench.formats.tables import markdown_table
from bench.run.device import resolve_device

MEASUREMENTS = (
    "probe_toy",
    "probe_vae",
    "probe_vae_20x10",
    "harness",
    "estimate_time",
    "lazy_adam",
    "lookahead",
    "sweep",
)


def seconds(value: float | None) -> str:
    """A duration for the table: milliseconds below one second, else seconds; "—" for none."""
    if value is None:
        return "—"
    return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"


HEADER = (
    "measurement",
    "baseline → candidate",
    "baseline",
    "candidate",
    "ratio: median [95% interval]",
    "goal",
    "verdict",
)


def rows(results: list[Result]) -> list[tuple[str, ...]]:
    """One row per result: the cells of ``HEADER``."""
    table_rows = []
    for result in results:
        record = result.record()
        if result.status != "ok":
            ratio, verdict = result.status, ""
        else:
            unit = "× faster" if result.speedup else "×"
            interval = record["ratio_interval"]
            bounds = f" [{interval[0]:.3g}–{interval[1]:.3g}]" if interval else ""
            ratio = f"{record['ratio_median']:.3g}{unit}{bounds}"
            verdict = {"met": "met", "missed": "MISSED", None: ""}.get(result.verdict, "")
            if result.verdict == "undecided":
                verdict = f"undecided, interval [{interval[0]:.3g}, {interval[1]:.3g}]"
        table_rows.append(
            (
                result.name,
                f"{result.baseline} → {result.candidate}" if result.baseline else "",
                seconds(record["baseline_median_s"]),
                seconds(record["candidate_median_s"]),
                ratio,
                record["goal"] or "—",
                verdict,
            )
        )
    return table_rows


def arithmetic_line(result: Result) -> str | None:
    """The candidate's distance to the arithmetic limit, in words; None when its FLOPs were not counted."""
    measured = result.arithmetic
    if not measured or result.status != "ok":
        return None
    flops, achieved = measured["flops"], measured["achieved_gflops"]
    loop = f"; the baseline does {amount(measured['baseline_flops'])}" if "baseline_flops" in measured else ""
    if measured["matmul_fraction"] is None:
        return f"{result.name}: {amount(flops)} counted: no matrix products, elementwise work only{loop}"
    return (
        f"{result.name}: {result.candidate} {amount(flops)} at {achieved:.3g} GFLOP/s; its matrix "
        f"products alone run at {measured['matmul_gflops']:.3g} GFLOP/s ({seconds(measured['matmul_s'])}): "
        f"{measured['matmul_fraction']:.0%} of the matmul rate{loop}"
    )


def amount(flops: int) -> str:
    """FLOPs with a unit: 674 MFLOP, 31.8 GFLOP."""
    for unit, size in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if flops >= size:
            return f"{flops / size:.3g} {unit}"
    return f"{flops} FLOP"


def table(results: list[Result]) -> str:
    """The results as an aligned text table, followed by why their repeats stopped, their distance to the
    arithmetic limit and their notes."""
    lines_of_cells = [HEADER, *rows(results)]
    widths = [max(len(row[column]) for row in lines_of_cells) for column in range(len(HEADER))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in lines_of_cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines + footnotes(results, indent="  "))


def footnotes(results: list[Result], indent: str) -> list[str]:
    """Why the repeats stopped, the arithmetic, and the notes, each under its heading."""
    stopped = [f"{indent}{result.name}: {result.stopped}" for result in results if result.stopped]
    limits = [f"{indent}{line}" for line in map(arithmetic_line, results) if line]
    notes = [f"{indent}{result.name}: {result.note}" for result in results if result.note]
    lines = []
    for heading, items in (
        ("repeats:", stopped),
        ("arithmetic (FLOPs as torch.utils.flop_counter counts them):", limits),
        ("notes:", notes),
    ):
        lines += [heading, *items] if items else []
    return lines


def markdown(results: list[Result], context: list[str]) -> str:
    """The table as Markdown, with the context lines (machine, load) above it and the footnotes below."""
    import pandas

    frame = pandas.DataFrame(rows(results), columns=list(HEADER))
    return "\n".join([*context, "", markdown_table(frame), "", *footnotes(results, indent="- ")]) + "\n"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.perf",
        description="Measure the harness's speed as ratios of a candidate to a baseline doing the same work, "
        "each repeated until its ratio's 95%% interval is narrow or a time cap is reached, and write "
        "results/perf.json.",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="exactly this many repeats of every in-process measurement (default: the stopping rule below)",
    )
    parser.add_argument("--min-repeats", type=int, default=6, help="repeats before the rule may stop (6)")
    parser.add_argument("--max-repeats", type=int, default=60, help="repeats at most (60)")
    parser.add_argument(
        "--time-cap", type=float, default=60.0, help="seconds of repeats per measurement at most (60)"
    )
    parser.add_argument(
        "--half-width",
        type=float,
        default=0.10,
        help="stop once every ratio's 95%% interval is within this fraction of the ratio (0.10: ±10%%)",
    )
    parser.add_argument("--sweep-repeats", type=int, default=2, help="least repeats of the sweep (2)")
    parser.add_argument(
        "--only", default=",".join(MEASUREMENTS), help=f"comma-separated subset of: {', '.join(MEASUREMENTS)}"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "results" / "perf.json",
        help="JSON file (default: results/perf.json)",
    )
    parser.add_argument(
        "--markdown", type=Path, default=None, help="also write the table to this Markdown file"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument(
        "--device",
        default="cpu",
        help="where to measure the probes, the harness and Lookahead: cpu (default), cuda or cuda:N (lazy "
        "Adam and the sweep are measured on the CPU)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 repeats: checks that it runs")
    return parser


def stopping_rules(options: argparse.Namespace) -> tuple[StoppingRule, StoppingRule]:
    """The rule of the in-process measurements and the sweep's (ConfigError for impossible settings)."""
    if options.quick:
        return StoppingRule.fixed(2), StoppingRule.fixed(1)
    try:
        if options.repeats is not None:
            return StoppingRule.fixed(options.repeats), StoppingRule.fixed(options.sweep_repeats)
        rule = StoppingRule(options.min_repeats, options.max_repeats, options.time_cap, options.half_width)
        sweep = StoppingRule(
            options.sweep_repeats, max(options.sweep_repeats, 6), options.time_cap, options.half_width
        )
    except ValueError as error:
        raise ConfigError(
            f"--repeats, --min-repeats, --max-repeats, --time-cap, --half-width, --sweep-repeats: {error}"
        ) from error
    return rule, sweep


def main(arguments: list[str] | None = None) -> int:
    """Run the measurements chosen on the command line; 0 if every one ran, 1 if one failed."""
    command_line = parser()
    options = command_line.parse_args(arguments)
    chosen = [name.strip() for name in options.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(MEASUREMENTS))
    if unknown:
        command_line.error(
            f"unknown measurement(s) {', '.join(unknown)}; choose from {', '.join(MEASUREMENTS)}"
        )
    try:
        rule, sweep_rule = stopping_rules(options)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(options.device)
    except ConfigError as error:
        print(f"error: --device: {error}", file=sys.stderr)
        return 2
    on = str(device)
    if options.threads:
        torch.set_num_threads(options.threads)
    quick = options.quick
    matmul_run_time = (
        0.01 if quick else 0.1
    )  # seconds per distinct matrix product (bench.campaigns.perf.arithmetic)
    plans: dict[str, Callable[[], list[Result]]] = {
        "probe_toy": lambda: measure_probe("toy", rule, on, matmul_run_time=matmul_run_time),
        "probe_vae": lambda: measure_probe(
            "vae", rule, on, whole_goal=8.0, statistics_goal=0.25, matmul_run_time=matmul_run_time
        ),
        "probe_vae_20x10": lambda: measure_probe(
            "categorical_vae_20x10",
            rule,
            on,
            name="probe_vae_20x10",
            whole_probe=False,
            goal=None,
            matmul_run_time=matmul_run_time,
        ),
        "harness": lambda: measure_harness(rule, steps=40 if quick else 200, device=on),
        # Each repeat starts two background runs: three repeats, for information.
        "estimate_time": lambda: measure_estimate_time(
            StoppingRule.fixed(min(rule.least, 3)), steps=40 if quick else 300, device=on
        ),
        "lazy_adam": lambda: measure_lazy_adam(
            rule, rows=20_000 if quick else 1_000_000, dim=64, touched_fraction=0.01, steps=3
        ),
        "lookahead": lambda: measure_lookahead(rule, steps=40 if quick else 200, device=on),
        "sweep": lambda: measure_sweep(sweep_rule, runs=8, steps=200 if quick else 5000),
    }
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_before = load_average()
    started = time.perf_counter()
    results: list[Result] = []
    for name in chosen:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        measurement_started = time.perf_counter()
        try:
            results += plans[name]()
        except Exception as error:  # noqa: BLE001 - one broken measurement must not hide the others
            results.append(
                Result(name, "", "", "", "ratio", status="error", note=f"{type(error).__name__}: {error}")
            )
        print(f"  {name}: {time.perf_counter() - measurement_started:.1f} s", file=sys.stderr, flush=True)
    duration = time.perf_counter() - started
    load_after = load_average()
    about = machine(device)
    report = {
        "started": started_at,
        "duration_s": duration,
        "quick": quick,
        "stopping_rule": asdict(rule),
        "sweep_stopping_rule": asdict(sweep_rule),
        "machine": about,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "measurements": [result.record() for result in results],
    }
    atomic_write_text(options.output, json.dumps(strict(report), indent=2, allow_nan=False) + "\n")
    context = [
        f"machine: {about['cpu']}, {about['cores_available']} cores available, {about['memory_gib']} GiB; "
        f"torch {about['torch_version']} with {about['torch_threads']} threads; "
        f"Python {about['python_version']}; measured on {about['device']} ({about['device_name']})",
        f"load average (1, 5, 15 min): {load_before} before, {load_after} after; started {started_at}; "
        + describe(rule)
        + ("; QUICK sizes: checks that it runs, not the measurement" if quick else ""),
    ]
    print("\n".join(context))
    print(table(results))
    written = [str(options.output)]
    if options.markdown is not None:
        atomic_write_text(options.markdown, markdown(results, context))
        written.append(str(options.markdown))
    print(textwrap.fill(f"took {duration:.0f} s; written to {' and '.join(written)}", width=110))
    return 1 if any(result.status != "ok" for result in results) else 0


def describe(rule: StoppingRule) -> str:
    if rule.least == rule.most:
        return f"{rule.least} repeats per measurement"
    return (
        f"repeats until every 95% interval is within ±{rule.half_width:.0%} of its ratio ({rule.least} to "
        f"{rule.most} repeats, at most {rule.time_cap_s:.0f} s per measurement)"
    )
