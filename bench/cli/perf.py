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
from bench.formats.errors import ConfigError
from bench.formats.files import ROOT, atomic_write_text, strict
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


def table(results: list[Result]) -> str:
    """The results as an aligned text table, followed by their notes."""
    header = (
        "measurement",
        "baseline → candidate",
        "baseline",
        "candidate",
        "ratio: median [min–max]",
        "goal",
        "",
    )
    rows = [header]
    for result in results:
        record = result.record()
        if result.status != "ok":
            ratio, verdict = result.status, ""
        else:
            unit = "× faster" if result.kind == "speedup" else "×"
            ratio = (
                f"{record['ratio_median']:.3g}{unit} [{record['ratio_min']:.3g}–{record['ratio_max']:.3g}]"
            )
            verdict = {True: "met", False: "MISSED", None: ""}[result.goal_met]
        rows.append(
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
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = [f"  {result.name}: {result.note}" for result in results if result.note]
    return "\n".join(lines + (["notes:", *notes] if notes else []))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.perf",
        description="Measure the harness's speed as ratios of a candidate to a baseline doing the same work, "
        "and write results/perf.json.",
    )
    parser.add_argument("--repeats", type=int, default=7, help="repeats of every in-process measurement")
    parser.add_argument("--sweep-repeats", type=int, default=2, help="repeats of the sweep measurement")
    parser.add_argument(
        "--only", default=",".join(MEASUREMENTS), help=f"comma-separated subset of: {', '.join(MEASUREMENTS)}"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "results" / "perf.json",
        help="JSON file (default: results/perf.json)",
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
    if options.repeats < 1 or options.sweep_repeats < 1:
        command_line.error("--repeats and --sweep-repeats must be >= 1")
    try:
        device = resolve_device(options.device)
    except ConfigError as error:
        print(f"error: --device: {error}", file=sys.stderr)
        return 2
    on = str(device)
    if options.threads:
        torch.set_num_threads(options.threads)
    quick = options.quick
    repeats = 2 if quick else options.repeats
    sweep_repeats = 1 if quick else options.sweep_repeats
    plans: dict[str, Callable[[], list[Result]]] = {
        "probe_toy": lambda: measure_probe("toy", repeats, on),
        "probe_vae": lambda: measure_probe("vae", repeats, on),
        "probe_vae_20x10": lambda: measure_probe(
            "categorical_vae_20x10", repeats, on, name="probe_vae_20x10", whole_probe=False, goal=None
        ),
        "harness": lambda: measure_harness(repeats, steps=40 if quick else 200, device=on),
        "estimate_time": lambda: measure_estimate_time(
            min(repeats, 3), steps=40 if quick else 300, device=on
        ),
        "lazy_adam": lambda: measure_lazy_adam(
            repeats, rows=20_000 if quick else 1_000_000, dim=64, touched_fraction=0.01, steps=3
        ),
        "lookahead": lambda: measure_lookahead(repeats, steps=40 if quick else 200, device=on),
        "sweep": lambda: measure_sweep(sweep_repeats, runs=8, steps=200 if quick else 5000),
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
        "repeats": repeats,
        "sweep_repeats": sweep_repeats,
        "machine": about,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "measurements": [result.record() for result in results],
    }
    atomic_write_text(options.output, json.dumps(strict(report), indent=2, allow_nan=False) + "\n")
    print(
        f"machine: {about['cpu']}, {about['cores_available']} cores available, {about['memory_gib']} GiB; "
        f"torch {about['torch_version']} with {about['torch_threads']} threads; "
        f"Python {about['python_version']}; measured on {about['device']} ({about['device_name']})"
    )
    print(
        f"load average (1, 5, 15 min): {load_before} before, {load_after} after; {repeats} repeats "
        f"({sweep_repeats} for the sweep)"
        + ("; QUICK sizes: checks that it runs, not the measurement" if quick else "")
    )
    print(table(results))
    print(textwrap.fill(f"took {duration:.0f} s; written to {options.output}", width=110))
    return 1 if any(result.status != "ok" for result in results) else 0
