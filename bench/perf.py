"""``python -m bench.perf``: how fast the harness is, as ratios measured in one process and one run.

Every measurement compares a *candidate* with a *baseline* doing the same work, repeats the pair (in
alternating order, rotating for the optimizer table, so that a change of machine load hits both alike),
and reports the median ratio and its spread (min–max over the repeats) next to the goal of issue 7:

1. ``probe_toy`` / ``probe_vae``: the M = 256 gradient draws of a probe, vectorized with ``torch.func``
   (``bench.probe.draw_gradients_vectorized``) vs the per-draw loop (``draw_gradients``); goal ≥ 10× faster.
   The ``*_whole`` rows time the whole ``probe()``, which adds the reference gradient and the statistics
   (the same work on both paths).
2. ``harness_step``: a training step of the harness (``bench.runner.train``: the median ``step_time_ms`` it
   records) vs a bare hand-written PyTorch loop doing the same math (VAE, ``gumbel``, Adam); goal ≤ 1.10×.
   ``harness_loop`` divides the wall time of the whole training loop (probes, evaluations and the metric
   file written at probes subtracted, so logging and per-step bookkeeping count) by the steps.
3. ``lazy_adam_vs_adam`` / ``lazy_adam_vs_sparse_adam``: one optimizer step on a 1,000,000 × 64 table with
   1% of the rows in the gradient: ``optim.LazyAdam`` given the sparse gradient vs ``torch.optim.Adam`` given
   the dense one (goal ≥ 20× faster), and vs ``torch.optim.SparseAdam`` given the same sparse gradient with
   the same eps placement (goal ≤ 1.5× its time). ``lazy_adam_dense_gradient`` (no goal) gives LazyAdam the
   dense gradient with zero rows.
4. ``lookahead_step`` / ``lookahead_optimizer``: Lookahead(Adam, k = 5) vs Adam on the VAE, per training step
   and per optimizer step, averaged over whole k-cycles so that the slow-weight update counts; goal ≤ 1.10×.
5. ``sweep_joblib``: an 8-run toy sweep (``python -m bench -m``) with Hydra's joblib launcher vs the default
   sequential launcher, wall time of the whole command; goal ≤ 0.65×.

A piece that has not landed in the tree (an import or a config that does not exist) is reported as "not
available yet", never estimated. The table states the machine and the load average before and after;
timings taken while other processes load the cores are slower and noisier. The results are written,
atomically, to ``results/perf.json``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench.results import ROOT, atomic_write_text, strict

NOT_AVAILABLE = "not available yet"
CONF_DIR = ROOT / "conf"
PROBE_DRAWS = 256


class NotAvailable(Exception):
    """A piece of the tree this measurement needs has not landed yet."""


@dataclass
class Result:
    """One comparison: candidate vs baseline, timed ``repeats`` times each (seconds)."""

    name: str
    what: str
    baseline: str
    candidate: str
    kind: str  # "speedup": baseline / candidate time; "ratio": candidate / baseline time
    goal: float | None = None  # speedup ≥ goal, or ratio ≤ goal; None: no goal, information only
    baseline_s: list[float] = field(default_factory=list)
    candidate_s: list[float] = field(default_factory=list)
    status: str = "ok"  # ok | not available yet | error
    note: str = ""

    @property
    def ratios(self) -> list[float]:
        pairs = zip(self.baseline_s, self.candidate_s, strict=True)
        if self.kind == "speedup":
            return [baseline / candidate for baseline, candidate in pairs]
        return [candidate / baseline for baseline, candidate in pairs]

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def goal_met(self) -> bool | None:
        if self.goal is None or self.ratio is None or self.status != "ok":
            return None
        return self.ratio >= self.goal if self.kind == "speedup" else self.ratio <= self.goal

    def record(self) -> dict[str, Any]:
        ratios = self.ratios
        return {
            **asdict(self),
            "goal": None
            if self.goal is None
            else ("≥ " if self.kind == "speedup" else "≤ ") + f"{self.goal:g}×",
            "goal_value": self.goal,
            "ratios": ratios,
            "ratio_median": self.ratio,
            "ratio_min": min(ratios) if ratios else None,
            "ratio_max": max(ratios) if ratios else None,
            "baseline_median_s": statistics.median(self.baseline_s) if self.baseline_s else None,
            "candidate_median_s": statistics.median(self.candidate_s) if self.candidate_s else None,
            "goal_met": self.goal_met,
        }


def timed(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def paired(
    result: Result, repeats: int, baseline: Callable[[], float], candidate: Callable[[], float]
) -> Result:
    """Alternate baseline and candidate ``repeats`` times; each callable returns the seconds it measured."""
    for repeat in range(repeats):
        if repeat % 2 == 0:
            result.baseline_s.append(baseline())
            result.candidate_s.append(candidate())
        else:
            result.candidate_s.append(candidate())
            result.baseline_s.append(baseline())
    return result


def compose(*overrides: str):
    """The config ``python -m bench`` builds from these overrides (NotAvailable if a config is missing)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import MissingConfigException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=["progress=false", *overrides])
    except MissingConfigException as error:
        raise NotAvailable(str(error).splitlines()[0]) from None


def build(*overrides: str):
    """Task, estimator, optimizer and config, built by the runner's own ``setup``."""
    from bench.build import setup

    config = compose(*overrides)
    try:
        task, estimator, optimizer = setup(config)
    except ImportError as error:
        raise NotAvailable(str(error)) from None
    return task, estimator, optimizer, config


# --- 1. probes ------------------------------------------------------------------------------------------


def measure_probe(task_name: str, repeats: int) -> list[Result]:
    from bench.probe import draw_gradients, draw_gradients_vectorized, probe

    task, estimator, _, config = build(f"task={task_name}", "estimator=gumbel")
    batch, samples = task.probe_batch(), config.samples
    # Warm-up: the first vectorized draw in a process imports torch._dynamo (torch.func needs it).
    imported = "torch._dynamo" in sys.modules
    first_call = timed(lambda: draw_gradients_vectorized(task, estimator, samples, batch, 2))
    draw_gradients(task, estimator, samples, batch, 2)
    note = (
        ""
        if imported
        else f"the first vectorized call in this process took {first_call:.2f} s: torch.func imports "
        f"torch._dynamo, once per process"
    )
    draws = paired(
        Result(
            f"probe_{task_name}",
            f"{PROBE_DRAWS} gradient draws of a probe on {task_name}/gumbel",
            "per-draw loop",
            "vectorized",
            "speedup",
            goal=10.0,
            note=note,
        ),
        repeats,
        lambda: timed(lambda: draw_gradients(task, estimator, samples, batch, PROBE_DRAWS)),
        lambda: timed(lambda: draw_gradients_vectorized(task, estimator, samples, batch, PROBE_DRAWS)),
    )
    whole = paired(
        Result(
            f"probe_{task_name}_whole",
            f"whole probe() on {task_name}/gumbel, M={PROBE_DRAWS}: draws + reference gradient + statistics",
            "per-draw loop",
            "vectorized",
            "speedup",
        ),
        repeats,
        lambda: timed(lambda: probe(task, estimator, samples, PROBE_DRAWS, False)),
        lambda: timed(lambda: probe(task, estimator, samples, PROBE_DRAWS, True)),
    )
    return [draws, whole]


# --- 2. the harness's training step vs a bare loop ------------------------------------------------------


def bare_vae_steps(task, tau: float, lr: float, steps: int, optimizer_factory=None) -> dict[str, Any]:
    """A hand-written VAE training loop with Gumbel-Softmax: the math of ``bench.tasks.vae`` with ``gumbel``.

    Returns the per-step wall times, the optimizer-step times and the loop's total wall time.
    """
    encoder, decoder = copy.deepcopy(task.encoder), copy.deepcopy(task.decoder)
    images, batch_size = task.train_images, task.batch_size
    variables, classes = task.variables, task.classes
    parameters = [*encoder.parameters(), *decoder.parameters()]
    optimizer = (optimizer_factory or (lambda params: torch.optim.Adam(params, lr=lr)))(parameters)
    generator = torch.Generator().manual_seed(0)
    order, position = torch.empty(0, dtype=torch.long), 0
    tiny = torch.finfo(images.dtype).tiny
    step_times, optimizer_times = [], []
    loop_started = time.perf_counter()
    for _ in range(steps):
        started = time.perf_counter()
        if position + batch_size > len(order):
            order, position = torch.randperm(len(images), generator=generator), 0
        x = images[order[position : position + batch_size]]
        position += batch_size
        logits = encoder(x).unflatten(-1, (variables, classes))
        uniform = torch.rand((1, *logits.shape)).clamp(tiny, 1.0 - 1e-7)
        relaxed = ((logits - torch.log(-torch.log(uniform))) / tau).softmax(-1)
        pixel_logits = decoder(relaxed.flatten(-2))
        reconstruction = F.binary_cross_entropy_with_logits(
            pixel_logits, x.expand_as(pixel_logits), reduction="none"
        ).sum(-1)
        log_q = logits.log_softmax(-1)
        kl = (log_q.exp() * log_q).sum((-1, -2)) + variables * math.log(classes)
        loss = reconstruction.mean() + kl.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer_started = time.perf_counter()
        optimizer.step()
        finished = time.perf_counter()
        step_times.append(finished - started)
        optimizer_times.append(finished - optimizer_started)
    return {
        "step_times": step_times,
        "optimizer_times": optimizer_times,
        "total": time.perf_counter() - loop_started,
    }


def warm_median(times: list[float]) -> float:
    """Median after the warm-up steps, dropped as the runner drops them (``bench.runner.train``)."""
    warmup = min(5, len(times) // 10)
    return statistics.median(times[warmup:])


def measure_harness(repeats: int, steps: int) -> list[Result]:
    import bench.runner as runner

    overrides = ("task=vae", "estimator=gumbel", "optimizer=adam", f"steps={steps}", "probe.every=0")
    build(*overrides, "probe.draws=2")  # NotAvailable before anything is timed
    step = Result(
        "harness_step",
        f"median training step, VAE/gumbel/Adam ({steps} steps per repeat)",
        "bare PyTorch loop",
        "harness (step_time_ms)",
        "ratio",
        goal=1.10,
    )
    loop = Result(
        "harness_loop",
        "whole training loop per step (logging, bookkeeping; probes, evaluations, file writes subtracted)",
        "bare PyTorch loop",
        "harness train()",
        "ratio",
        goal=1.10,
    )

    def harness() -> tuple[float, float]:
        task, estimator, optimizer, config = build(*overrides, "probe.draws=2")
        excluded = [0.0]

        def excluding(function: Callable) -> Callable:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    excluded[0] += time.perf_counter() - started

            return wrapper

        original_probe = runner.probe
        runner.probe = excluding(original_probe)
        task.evaluate = excluding(task.evaluate)
        try:
            with tempfile.TemporaryDirectory() as directory:
                recorder = runner.Recorder(Path(directory))
                # Written (with fsync) at probes only: disk latency, not the training loop.
                recorder.flush = excluding(recorder.flush)
                started = time.perf_counter()
                measured = runner.train(config, task, estimator, optimizer, recorder)
                total = time.perf_counter() - started - excluded[0]
        finally:
            runner.probe = original_probe
        return measured["step_time_ms"] / 1000, total / steps

    def bare() -> tuple[float, float]:
        task, estimator, _, config = build(*overrides, "probe.draws=2")
        result = bare_vae_steps(task, estimator.tau, config.optimizer.lr, steps)
        return warm_median(result["step_times"]), result["total"] / steps

    for repeat in range(repeats):
        order = (bare, harness) if repeat % 2 == 0 else (harness, bare)
        measured = {function: function() for function in order}
        step.baseline_s.append(measured[bare][0])
        step.candidate_s.append(measured[harness][0])
        loop.baseline_s.append(measured[bare][1])
        loop.candidate_s.append(measured[harness][1])
    return [step, loop]


# --- 3. lazy Adam on a large, sparsely touched table ----------------------------------------------------


def measure_lazy_adam(repeats: int, rows: int, dim: int, touched_fraction: float, steps: int) -> list[Result]:
    try:
        from optim.lazy import LazyAdam
    except ImportError as error:
        raise NotAvailable(str(error)) from None
    touched = max(1, int(rows * touched_fraction))
    generator = torch.Generator().manual_seed(0)

    def sparse_gradient() -> torch.Tensor:
        index = torch.randperm(rows, generator=generator)[:touched].sort().values
        values = torch.randn(touched, dim, generator=generator)
        # Sorted, unique row indices: the tensor is coalesced as built, as nn.Embedding's would be after
        # .coalesce(); checking the invariants would only cost time.
        return torch.sparse_coo_tensor(
            index.unsqueeze(0), values, (rows, dim), is_coalesced=True, check_invariants=False
        )

    gradients = [sparse_gradient() for _ in range(steps)]
    start = torch.randn(rows, dim, generator=generator)
    dense_gradient = torch.zeros(rows, dim)

    def table() -> torch.Tensor:
        return torch.nn.Parameter(start.clone())

    dense_table, lazy_table, sparse_table, lazy_dense_table = table(), table(), table(), table()
    optimizers = {
        "adam": torch.optim.Adam([dense_table], lr=0.01),
        "lazy": LazyAdam([lazy_table], lr=0.01),
        "sparse_adam": torch.optim.SparseAdam([sparse_table], lr=0.01),
        # SparseAdam places eps on the uncorrected √v: compare like with like (optim/lazy.py docstring).
        "lazy_sparse_eps": LazyAdam([table()], lr=0.01, eps_placement="sparse_adam"),
        "lazy_dense": LazyAdam([lazy_dense_table], lr=0.01),
    }
    tables = {name: optimizer.param_groups[0]["params"][0] for name, optimizer in optimizers.items()}
    previous_rows: list[torch.Tensor] = []

    def set_dense(gradient: torch.Tensor) -> None:
        # A dense gradient with only the touched rows non-zero, as an ordinary nn.Embedding gives.
        if previous_rows:
            dense_gradient.index_fill_(0, previous_rows.pop(), 0.0)
        rows_now = gradient.indices()[0]
        dense_gradient.index_copy_(0, rows_now, gradient.values())
        previous_rows.append(rows_now)

    def step_time(name: str, dense: bool) -> float:
        optimizer, parameter, total = optimizers[name], tables[name], 0.0
        for gradient in gradients:
            if dense:
                set_dense(gradient)
            parameter.grad = dense_gradient if dense else gradient
            total += timed(optimizer.step)
        parameter.grad = None
        return total / len(gradients)

    dense = {"adam", "lazy_dense"}
    for name in optimizers:  # warm-up: allocate every optimizer's state
        step_time(name, dense=name in dense)
    # Every repeat times all five, in an order rotated from one repeat to the next; dense Adam's times serve
    # as the baseline of two rows (it is the slow one: timing it once per repeat keeps the run short).
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    names = list(optimizers)
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            times[name].append(step_time(name, dense=name in dense))
    shape = f"{rows:,} × {dim} table, {touched:,} rows ({touched_fraction:.0%}) touched"
    versus_adam = Result(
        "lazy_adam_vs_adam",
        f"optimizer step, {shape}",
        "torch Adam (dense gradient)",
        "lazy_adam (sparse gradient)",
        "speedup",
        goal=20.0,
        baseline_s=times["adam"],
        candidate_s=times["lazy"],
    )
    versus_sparse = Result(
        "lazy_adam_vs_sparse_adam",
        f"optimizer step, {shape}, same eps placement",
        "torch SparseAdam",
        "lazy_adam (eps_placement=sparse_adam)",
        "ratio",
        goal=1.5,
        baseline_s=times["sparse_adam"],
        candidate_s=times["lazy_sparse_eps"],
    )
    dense_rows = Result(
        "lazy_adam_dense_gradient",
        f"optimizer step, {shape}, both given the dense gradient (zero rows)",
        "torch Adam",
        "lazy_adam",
        "speedup",
        baseline_s=times["adam"],
        candidate_s=times["lazy_dense"],
    )
    return [versus_adam, versus_sparse, dense_rows]


# --- 4. Lookahead over Adam vs Adam -----------------------------------------------------------------------


def measure_lookahead(repeats: int, steps: int) -> list[Result]:
    try:
        from optim.lookahead import Lookahead
    except ImportError as error:
        raise NotAvailable(str(error)) from None
    task, estimator, _, config = build("task=vae", "estimator=gumbel", "optimizer=adam")
    k, lr = 5, config.optimizer.lr
    steps = max(k, steps - steps % k)  # whole k-cycles, so the slow-weight updates count fully

    def run(lookahead: bool) -> dict[str, Any]:
        inner = functools.partial(torch.optim.Adam, lr=lr)
        factory = (lambda params: Lookahead(inner, params, k=k, alpha=0.5)) if lookahead else None
        return bare_vae_steps(task, estimator.tau, lr, steps, factory)

    training = Result(
        "lookahead_step",
        f"mean VAE training step over {steps // k} k-cycles (k={k})",
        "Adam",
        "Lookahead(Adam)",
        "ratio",
        goal=1.10,
    )
    optimizer_only = Result(
        "lookahead_optimizer",
        f"mean optimizer.step() on the VAE's parameters over {steps // k} k-cycles",
        "Adam",
        "Lookahead(Adam)",
        "ratio",
        goal=1.10,
    )
    for lookahead in (False, True):  # warm-up
        run(lookahead)
    for repeat in range(repeats):
        order = (False, True) if repeat % 2 == 0 else (True, False)
        measured = {lookahead: run(lookahead) for lookahead in order}
        training.baseline_s.append(statistics.fmean(measured[False]["step_times"]))
        training.candidate_s.append(statistics.fmean(measured[True]["step_times"]))
        optimizer_only.baseline_s.append(statistics.fmean(measured[False]["optimizer_times"]))
        optimizer_only.candidate_s.append(statistics.fmean(measured[True]["optimizer_times"]))
    return [training, optimizer_only]


# --- 5. an 8-run sweep, joblib vs sequential --------------------------------------------------------------


def measure_sweep(repeats: int, runs: int, steps: int) -> list[Result]:
    try:
        import hydra_plugins.hydra_joblib_launcher  # noqa: F401
    except ImportError as error:
        raise NotAvailable(f"hydra-joblib-launcher: {error}") from None
    seeds = ",".join(str(seed) for seed in range(runs))
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1"}

    def sweep(joblib: bool) -> float:
        with tempfile.TemporaryDirectory() as directory:
            command = [
                sys.executable,
                "-m",
                "bench",
                "-m",
                "task=toy",
                "estimator=gumbel",
                f"seed={seeds}",
                f"steps={steps}",
                "probe.every=0",
                "progress=false",
                f"hydra.sweep.dir={directory}",
                *(["hydra/launcher=joblib"] if joblib else []),
            ]
            started = time.perf_counter()
            finished = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
            elapsed = time.perf_counter() - started
            summaries = [json.loads(path.read_text()) for path in Path(directory).rglob("summary.json")]
            ok = sum(summary.get("status") == "ok" for summary in summaries)
            if finished.returncode != 0 or ok != runs:
                tail = (finished.stderr or finished.stdout).strip().splitlines()[-3:]
                raise RuntimeError(
                    f"the {'joblib' if joblib else 'sequential'} sweep gave {ok} of {runs} ok runs "
                    f"(exit code {finished.returncode}): {' | '.join(tail)}"
                )
        return elapsed

    result = Result(
        "sweep_joblib",
        f"{runs}-run toy sweep ({steps} steps per run), wall time of `python -m bench -m`",
        "sequential (basic launcher)",
        "hydra/launcher=joblib",
        "ratio",
        goal=0.65,
    )
    return [paired(result, repeats, lambda: sweep(False), lambda: sweep(True))]


# --- the machine, the table, the file ------------------------------------------------------------------


def machine() -> dict[str, Any]:
    from bench.sweep import available_cores

    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu": model,
        "cores_available": available_cores(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": memory_gib,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
    }


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"


def table(results: list[Result]) -> str:
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
            ratio = result.status if result.status == NOT_AVAILABLE else "error"
            verdict = ""
        else:
            unit = "× faster" if result.kind == "speedup" else "×"
            ratio = (
                f"{record['ratio_median']:.3g}{unit} [{record['ratio_min']:.3g}–{record['ratio_max']:.3g}]"
            )
            verdict = {True: "met", False: "MISSED", None: ""}[result.goal_met]
        rows.append(
            (
                result.name,
                f"{result.baseline} → {result.candidate}",
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


MEASUREMENTS = ("probe_toy", "probe_vae", "harness", "lazy_adam", "lookahead", "sweep")


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.perf",
        description="Measure the harness's speed as ratios (issue 7) and write results/perf.json.",
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
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 repeats: checks that it runs")
    options = parser.parse_args(arguments)
    chosen = [name.strip() for name in options.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(MEASUREMENTS))
    if unknown or options.repeats < 1 or options.sweep_repeats < 1:
        parser.error(
            f"unknown measurement(s) {', '.join(unknown)}; choose from {', '.join(MEASUREMENTS)}"
            if unknown
            else "--repeats and --sweep-repeats must be >= 1"
        )
    if options.threads:
        torch.set_num_threads(options.threads)
    repeats = 2 if options.quick else options.repeats
    sweep_repeats = 1 if options.quick else options.sweep_repeats
    plans: dict[str, Callable[[], list[Result]]] = {
        "probe_toy": lambda: measure_probe("toy", repeats),
        "probe_vae": lambda: measure_probe("vae", repeats),
        "harness": lambda: measure_harness(repeats, steps=40 if options.quick else 200),
        "lazy_adam": lambda: measure_lazy_adam(
            repeats, rows=20_000 if options.quick else 1_000_000, dim=64, touched_fraction=0.01, steps=3
        ),
        "lookahead": lambda: measure_lookahead(repeats, steps=40 if options.quick else 200),
        "sweep": lambda: measure_sweep(sweep_repeats, runs=8, steps=200 if options.quick else 5000),
    }
    placeholders = {
        "probe_toy": ("probe_toy", "loop", "vectorized"),
        "probe_vae": ("probe_vae", "loop", "vectorized"),
        "harness": ("harness_step", "bare PyTorch loop", "harness"),
        "lazy_adam": ("lazy_adam_vs_adam", "Adam", "lazy_adam"),
        "lookahead": ("lookahead_step", "Adam", "Lookahead(Adam)"),
        "sweep": ("sweep_joblib", "sequential", "joblib"),
    }
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_before = load_average()
    started = time.perf_counter()
    results: list[Result] = []
    for name in chosen:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        measurement_started = time.perf_counter()
        label, baseline, candidate = placeholders[name]
        try:
            results += plans[name]()
        except NotAvailable as reason:
            results.append(
                Result(label, "", baseline, candidate, "ratio", status=NOT_AVAILABLE, note=str(reason))
            )
        except Exception as error:  # noqa: BLE001 - one broken measurement must not hide the others
            results.append(
                Result(
                    label,
                    "",
                    baseline,
                    candidate,
                    "ratio",
                    status="error",
                    note=f"{type(error).__name__}: {error}",
                )
            )
        print(f"  {name}: {time.perf_counter() - measurement_started:.1f} s", file=sys.stderr, flush=True)
    duration = time.perf_counter() - started
    load_after = load_average()
    about = machine()
    report = {
        "started": started_at,
        "duration_s": duration,
        "quick": options.quick,
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
        f"Python {about['python_version']}"
    )
    print(
        f"load average (1, 5, 15 min): {load_before} before, {load_after} after; {repeats} repeats "
        f"({sweep_repeats} for the sweep)"
        + ("; QUICK sizes: not the issue-7 measurement" if options.quick else "")
    )
    print(table(results))
    print(textwrap.fill(f"took {duration:.0f} s; written to {options.output}", width=110))
    return 1 if any(result.status == "error" for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
