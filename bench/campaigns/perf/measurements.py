"""The measurements of ``python -m bench.perf``: each returns its comparisons as ``Result`` records, repeated
as a ``bench.campaigns.perf.verdicts.StoppingRule`` says.

- ``measure_probe``: the M = 256 gradient draws of a probe, vectorized with ``torch.func``
  (``bench.run.probe.draw_gradients_vectorized``) vs the per-draw loop (``draw_gradients``); goal ≥ 10×
  faster. The ``*_whole`` rows time the whole ``probe()``, which adds the reference gradient and the
  statistics (the same work on both paths; on the VAE, goal ≥ 8×); ``probe_vae_statistics`` times the
  statistics of the vectorized draws (``gradient_statistics``) against the draws (goal ≤ 0.25×).
  ``probe_vae_20x10`` draws the same M = 256 on the standard 20 × 10 categorical VAE of Jang et al. (2017),
  784-512-256 MLPs (``task=categorical_vae_20x10``, on the ``digits28`` stand-in, 32 probe images), for
  information. Every probe row carries its FLOPs and its fraction of the machine's matrix-product rate at
  its own sizes (``bench.campaigns.perf.arithmetic``).
- ``measure_harness``: a training step of the harness (``bench.run.loop.train``: the median
  ``step_time_ms`` it records) vs the bare loop (``bench.campaigns.perf.bare``), which computes the same
  losses from the same seed (VAE, ``gumbel``, Adam); goal ≤ 1.10×. ``harness_loop`` divides the wall time of
  the whole training loop (probes, evaluations, the run's one count of f_evals and FLOPs and the metric file
  written at probes subtracted, so that logging and per-step bookkeeping count) by the steps.
- ``measure_estimate_time``: the ``estimate_time_ms`` a VAE/gumbel run records, on quiet cores and while two
  other runs train beside it (for information: what a time taken in a busy sweep is worth).
- ``measure_lazy_adam``: one optimizer step on a large table with 1% of its rows in the gradient:
  ``optim.LazyAdam`` given the sparse gradient vs ``torch.optim.Adam`` given the dense one (goal ≥ 20×
  faster), and vs ``torch.optim.SparseAdam`` given the same sparse gradient with the same eps placement
  (goal ≤ 1.5× its time); ``lazy_adam_dense_gradient`` (no goal) gives LazyAdam the dense gradient.
- ``measure_lookahead``: Lookahead(Adam, k = 5) vs Adam on the VAE, per training step and per optimizer
  step, averaged over whole k-cycles so that the slow-weight update counts; goal ≤ 1.10×.
- ``measure_sweep``: an 8-run toy sweep (``python -m bench -m``) with Hydra's joblib launcher vs the default
  sequential launcher, wall time of the whole command; goal ≤ 0.65×.

The probes, the harness and Lookahead run on ``device`` (``--device``: ``cpu``, the default, ``cuda``,
``cuda:N``), and every time taken on a GPU waits for the GPU's work (``bench.run.device.synchronizer``;
``torch.utils.benchmark`` synchronizes by itself); ``measure_lazy_adam`` and ``measure_sweep`` take a device
too, and the command line measures them on the CPU.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.benchmark import Timer

from bench.campaigns.perf import arithmetic
from bench.campaigns.perf.bare import BareRun, OptimizerFactory, bare_vae_steps, seeded_setup
from bench.campaigns.perf.timing import Result, paired, repeat_group, timed
from bench.campaigns.perf.verdicts import StoppingRule
from bench.formats.configs import compose as compose_config
from bench.formats.contract import OK, SUMMARY_FILE, steady_median
from bench.formats.files import ROOT
from bench.run.device import synchronizer
from bench.tasks.base import Task
from estimators.base import Estimator

PROBE_DRAWS = 256
VAE_GUMBEL_ADAM = ("task=vae", "estimator=gumbel", "optimizer=adam")


def compose(*overrides: str) -> DictConfig:
    """The config ``python -m bench`` builds from these command-line overrides (progress bar off)."""
    return compose_config(["progress=false", *overrides])


def device_of(task: Task) -> torch.device:
    return next(task.parameters()).device


def build(*overrides: str) -> tuple[Task, Estimator, torch.optim.Optimizer, DictConfig]:
    """Task, estimator, optimizer and config of a run with these overrides, built and seeded as the runner
    builds them."""
    config = compose(*overrides)
    task, estimator, optimizer = seeded_setup(config)
    return task, estimator, optimizer, config


def bare_run(
    overrides: tuple[str, ...], steps: int, optimizer_factory: OptimizerFactory | None = None
) -> BareRun:
    """The bare loop on a VAE/gumbel task freshly built (and seeded) from ``overrides``."""
    task, estimator, _, config = build(*overrides)
    return bare_vae_steps(
        task,
        tau=estimator.tau,
        samples=config.samples,
        lr=config.optimizer.lr,
        steps=steps,
        seed=config.seed,
        optimizer_factory=optimizer_factory,
    )


# --- the gradient probes --------------------------------------------------------------------------------


def measure_probe(
    task_name: str,
    rule: StoppingRule,
    device: str = "cpu",
    name: str | None = None,
    whole_probe: bool = True,
    goal: float | None = 10.0,
    whole_goal: float | None = None,
    statistics_goal: float | None = None,
    matmul_run_time: float = 0.1,
) -> list[Result]:
    """Vectorized vs per-draw probe on ``task_name`` with ``gumbel``: the draws alone (the row ``name``,
    default ``probe_<task>``, goal ``goal``), and with ``whole_probe`` the whole probe (``whole_goal``) and
    the statistics computed from the vectorized draws against the draws themselves (the row
    ``probe_<task>_statistics``, when ``statistics_goal`` is given: the statistics' time as a fraction of the
    draws'). Each row's ``arithmetic`` gives the vectorized computation's FLOPs, its achieved rate and the
    rate its own matrix products reach alone at its sizes, each timed for ``matmul_run_time`` seconds
    (``bench.campaigns.perf.arithmetic``), and the loop's FLOPs."""
    from bench.run.probe import (
        deterministic_gradient,
        draw_gradients,
        draw_gradients_vectorized,
        gradient_statistics,
        probe,
        probe_targets,
        reference_gradient,
    )

    task, estimator, _, config = build(f"task={task_name}", "estimator=gumbel", f"device={device}")
    batch, samples = task.probe_batch(), config.samples
    name = name or f"probe_{task_name}"
    synchronize = synchronizer(device_of(task))
    # Warm-up: the first vectorized draw in a process imports torch._dynamo (torch.func needs it).
    imported = "torch._dynamo" in sys.modules
    first_call = timed(lambda: draw_gradients_vectorized(task, estimator, samples, batch, 2), synchronize)
    draw_gradients(task, estimator, samples, batch, 2)
    note = (
        ""
        if imported
        else f"the first vectorized call in this process took {first_call:.2f} s: torch.func imports "
        f"torch._dynamo, once per process"
    )

    def loop_draws() -> Any:
        return draw_gradients(task, estimator, samples, batch, PROBE_DRAWS)

    def vectorized_draws() -> Any:
        return draw_gradients_vectorized(task, estimator, samples, batch, PROBE_DRAWS)

    draws = paired(
        Result(
            name,
            f"{PROBE_DRAWS} gradient draws of a probe on {task_name}/gumbel"
            + (f" ({len(batch)} images)" if isinstance(batch, torch.Tensor) else ""),
            "per-draw loop",
            "vectorized",
            "speedup",
            goal=goal,
            note=note,
        ),
        rule,
        lambda: timed(loop_draws, synchronize),
        lambda: timed(vectorized_draws, synchronize),
    )
    add_arithmetic(draws, vectorized_draws, loop_draws, matmul_run_time)
    if not whole_probe:
        return [draws]

    def loop_probe() -> Any:
        return probe(task, estimator, samples, PROBE_DRAWS, False)

    def vectorized_probe() -> Any:
        return probe(task, estimator, samples, PROBE_DRAWS, True)

    whole = paired(
        Result(
            f"probe_{task_name}_whole",
            f"whole probe() on {task_name}/gumbel, M={PROBE_DRAWS}: draws + reference gradient + statistics",
            "per-draw loop",
            "vectorized",
            "speedup",
            goal=whole_goal,
        ),
        rule,
        lambda: timed(loop_probe, synchronize),
        lambda: timed(vectorized_probe, synchronize),
    )
    add_arithmetic(whole, vectorized_probe, loop_probe, matmul_run_time)
    if statistics_goal is None:
        return [draws, whole]

    # The statistics as probe() computes them after the draws, from the same reference and deterministic part.
    targets = probe_targets(task, batch)
    gradients = vectorized_draws()
    reference = reference_gradient(task, batch, targets)
    deterministic = deterministic_gradient(task, batch, targets)

    def statistics_of_draws() -> Any:
        return gradient_statistics(gradients, reference, deterministic)

    statistics_row = paired(
        Result(
            f"probe_{task_name}_statistics",
            f"the statistics of {PROBE_DRAWS} vectorized draws on {task_name}/gumbel (gradient_statistics) "
            "against the draws themselves",
            "vectorized draws",
            "statistics",
            "ratio",
            goal=statistics_goal,
        ),
        rule,
        lambda: timed(vectorized_draws, synchronize),
        lambda: timed(statistics_of_draws, synchronize),
    )
    statistics_row.arithmetic = arithmetic.limit_fields(
        arithmetic.count(statistics_of_draws), statistics.median(statistics_row.candidate_s), matmul_run_time
    )
    return [draws, whole, statistics_row]


def add_arithmetic(
    result: Result, candidate: Callable[[], Any], baseline: Callable[[], Any], matmul_run_time: float
) -> None:
    """The candidate's distance to the arithmetic limit at its median time, timed now, and the baseline's
    FLOPs, into ``result.arithmetic``."""
    seconds = statistics.median(result.candidate_s)
    result.arithmetic = {
        **arithmetic.limit_fields(arithmetic.count(candidate), seconds, matmul_run_time),
        "baseline_flops": arithmetic.count(baseline).flops,
    }


# --- the harness's training step vs the bare loop --------------------------------------------------------


def harness_run(overrides: tuple[str, ...], steps: int) -> tuple[float, float]:
    """One harness run (``bench.run.loop.train``) on a freshly built, seeded task: its median step time
    (``step_time_ms``) and its loop's wall time per step without probes, evaluations, the count of f_evals
    and FLOPs and metric-file writes (seconds)."""
    import bench.run.loop as loop

    task, estimator, optimizer, config = build(*overrides)
    excluded = 0.0

    def excluding(function: Callable) -> Callable:
        def wrapper(*arguments: Any, **keywords: Any) -> Any:
            nonlocal excluded
            started = time.perf_counter()
            try:
                return function(*arguments, **keywords)
            finally:
                excluded += time.perf_counter() - started

        return wrapper

    original_probe, original_costs = loop.probe, loop.deterministic_costs
    loop.probe = excluding(original_probe)
    # f_evals and estimate_flops: counted once per run on the probe batch (a measurement, like the probes).
    loop.deterministic_costs = excluding(original_costs)
    task.evaluate = excluding(task.evaluate)
    try:
        with tempfile.TemporaryDirectory() as directory:
            recorder = loop.Recorder(Path(directory))
            recorder.flush = excluding(recorder.flush)  # written (with fsync) at probes only: disk latency
            started = time.perf_counter()
            measured = loop.train(config, task, estimator, optimizer, recorder)
            total = time.perf_counter() - started - excluded
    finally:
        loop.probe, loop.deterministic_costs = original_probe, original_costs
    return measured["step_time_ms"] / 1000, total / steps


def measure_harness(rule: StoppingRule, steps: int, device: str = "cpu") -> list[Result]:
    """The harness vs the bare loop on VAE/gumbel/Adam: median step, and whole loop per step."""
    overrides = (*VAE_GUMBEL_ADAM, f"steps={steps}", "probe.every=0", "probe.draws=2", f"device={device}")
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
        "whole training loop per step (logging, bookkeeping; probes, evaluations, costs, file writes out)",
        "bare PyTorch loop",
        "harness train()",
        "ratio",
        goal=1.10,
    )

    def bare() -> tuple[float, float]:
        run = bare_run(overrides, steps)
        return steady_median(run.step_times), run.total / steps

    def harness() -> tuple[float, float]:
        return harness_run(overrides, steps)

    def one_repeat(repeat: int) -> None:
        order = (bare, harness) if repeat % 2 == 0 else (harness, bare)
        measured = {function: function() for function in order}
        step.baseline_s.append(measured[bare][0])
        step.candidate_s.append(measured[harness][0])
        loop.baseline_s.append(measured[bare][1])
        loop.candidate_s.append(measured[harness][1])

    repeat_group([step, loop], one_repeat, rule)
    return [step, loop]


# --- estimate_time_ms on quiet cores and beside two other runs --------------------------------------------


def measure_estimate_time(rule: StoppingRule, steps: int, device: str = "cpu") -> list[Result]:
    """The ``estimate_time_ms`` a VAE/gumbel/Adam run records (the median forward and backward of one
    estimate over its training steps), on quiet cores and again while two other runs (``python -m bench``,
    one thread each, killed afterwards) train on the same machine: what a number taken in a busy sweep is
    worth. The ratio is loaded / quiet; for information, no goal."""
    overrides = (*VAE_GUMBEL_ADAM, f"steps={steps}", "probe.every=0", "probe.draws=2", f"device={device}")
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1"}

    def estimate_time() -> float:
        import bench.run.loop as loop

        task, estimator, optimizer, config = build(*overrides)
        with tempfile.TemporaryDirectory() as directory:
            measured = loop.train(config, task, estimator, optimizer, loop.Recorder(Path(directory)))
        return measured["estimate_time_ms"] / 1000

    def loaded() -> float:
        with tempfile.TemporaryDirectory() as directory:
            others = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench",
                        *VAE_GUMBEL_ADAM,
                        "steps=10000000",
                        "probe.every=0",
                        "threads=1",
                        "progress=false",
                        f"seed={index}",
                        f"hydra.run.dir={directory}/{index}",
                    ],
                    cwd=ROOT,
                    env=environment,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for index in range(2)
            ]
            try:
                deadline = time.monotonic() + 120  # until both have started their runs (.hydra/ written)
                while time.monotonic() < deadline and not all(
                    (Path(directory) / str(index) / ".hydra").exists() for index in range(2)
                ):
                    if any(other.poll() is not None for other in others):
                        raise RuntimeError("a background run of the load ended before the measurement")
                    time.sleep(0.2)
                time.sleep(3.0)  # past their imports and set-up, into their training loops
                return estimate_time()
            finally:
                for other in others:
                    other.kill()
                    other.wait()

    result = Result(
        "estimate_time_load",
        f"estimate_time_ms of a VAE/gumbel run ({steps} steps): quiet cores vs two other runs beside it",
        "quiet",
        "beside 2 other runs",
        "ratio",
    )
    return [paired(result, rule, estimate_time, loaded)]


# --- lazy Adam on a large, sparsely touched table --------------------------------------------------------


def measure_lazy_adam(
    rule: StoppingRule, rows: int, dim: int, touched_fraction: float, steps: int, device: str = "cpu"
) -> list[Result]:
    """One optimizer step on a ``rows`` × ``dim`` table with ``touched_fraction`` of its rows in the gradient,
    timed with ``torch.utils.benchmark.Timer`` (mean over ``steps`` steps after its warm-up) on ``device``
    (the Timer synchronizes a GPU itself)."""
    from optim.lazy import LazyAdam

    touched = max(1, int(rows * touched_fraction))
    generator = torch.Generator().manual_seed(0)
    index = torch.randperm(rows, generator=generator)[:touched].sort().values.to(device)
    values = torch.randn(touched, dim, generator=generator).to(device)
    # Sorted, unique row indices: the tensor is coalesced as built, as nn.Embedding's would be after
    # .coalesce(); checking the invariants would only cost time.
    sparse_gradient = torch.sparse_coo_tensor(
        index.unsqueeze(0), values, (rows, dim), is_coalesced=True, check_invariants=False
    )
    # The same gradient with the untouched rows zero, as an ordinary nn.Embedding gives.
    dense_gradient = torch.zeros(rows, dim, device=device).index_copy_(0, index, values)
    start = torch.randn(rows, dim, generator=generator).to(device)

    def table() -> torch.nn.Parameter:
        return torch.nn.Parameter(start.clone())

    optimizers: dict[str, torch.optim.Optimizer] = {
        "adam": torch.optim.Adam([table()], lr=0.01),
        "lazy": LazyAdam([table()], lr=0.01),
        "sparse_adam": torch.optim.SparseAdam([table()], lr=0.01),
        # SparseAdam places eps on the uncorrected √v: compare like with like (optim/lazy.py docstring).
        "lazy_sparse_eps": LazyAdam([table()], lr=0.01, eps_placement="sparse_adam"),
        "lazy_dense": LazyAdam([table()], lr=0.01),
    }
    # A step's cost depends on how many rows the gradient touches, not on which ones or their values: every
    # step of an optimizer gets the same gradient.
    for name, optimizer in optimizers.items():
        optimizer.param_groups[0]["params"][0].grad = (
            dense_gradient if name in ("adam", "lazy_dense") else sparse_gradient
        )
    timers = {
        name: Timer("optimizer.step()", globals={"optimizer": optimizer}, num_threads=torch.get_num_threads())
        for name, optimizer in optimizers.items()
    }
    # Every repeat times all five, in an order rotated from one repeat to the next; dense Adam's times serve
    # as the baseline of two rows (it is the slow one: timing it once per repeat keeps the run short).
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    names = list(optimizers)

    def one_repeat(repeat: int) -> None:
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            times[name].append(timers[name].timeit(steps).mean)

    shape = f"{rows:,} × {dim} table, {touched:,} rows ({touched_fraction:.0%}) touched"
    # The rows hold the lists of ``times`` themselves: each repeat's times appear in them as it ends.
    results = [
        Result(
            "lazy_adam_vs_adam",
            f"optimizer step, {shape}",
            "torch Adam (dense gradient)",
            "lazy_adam (sparse gradient)",
            "speedup",
            goal=20.0,
            baseline_s=times["adam"],
            candidate_s=times["lazy"],
        ),
        Result(
            "lazy_adam_vs_sparse_adam",
            f"optimizer step, {shape}, same eps placement",
            "torch SparseAdam",
            "lazy_adam (eps_placement=sparse_adam)",
            "ratio",
            goal=1.5,
            baseline_s=times["sparse_adam"],
            candidate_s=times["lazy_sparse_eps"],
        ),
        Result(
            "lazy_adam_dense_gradient",
            f"optimizer step, {shape}, both given the dense gradient (zero rows)",
            "torch Adam",
            "lazy_adam",
            "speedup",
            baseline_s=times["adam"],
            candidate_s=times["lazy_dense"],
        ),
    ]
    repeat_group(results, one_repeat, rule)
    for optimizer in optimizers.values():
        optimizer.param_groups[0]["params"][0].grad = None
    return results


# --- Lookahead over Adam vs Adam --------------------------------------------------------------------------


def measure_lookahead(rule: StoppingRule, steps: int, device: str = "cpu") -> list[Result]:
    """Lookahead(Adam, k = 5, α = 0.5) vs Adam in the bare VAE loop, over whole k-cycles."""
    from optim.lookahead import Lookahead

    k, lr = 5, compose(*VAE_GUMBEL_ADAM).optimizer.lr
    steps = max(k, steps - steps % k)  # whole k-cycles, so the slow-weight updates count fully
    inner = functools.partial(torch.optim.Adam, lr=lr)

    def run(lookahead: bool) -> BareRun:
        factory = (lambda parameters: Lookahead(inner, parameters, k=k, alpha=0.5)) if lookahead else None
        return bare_run((*VAE_GUMBEL_ADAM, f"device={device}"), steps, factory)

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

    def one_repeat(repeat: int) -> None:
        order = (False, True) if repeat % 2 == 0 else (True, False)
        measured = {lookahead: run(lookahead) for lookahead in order}
        training.baseline_s.append(statistics.fmean(measured[False].step_times))
        training.candidate_s.append(statistics.fmean(measured[True].step_times))
        optimizer_only.baseline_s.append(statistics.fmean(measured[False].optimizer_times))
        optimizer_only.candidate_s.append(statistics.fmean(measured[True].optimizer_times))

    repeat_group([training, optimizer_only], one_repeat, rule)
    return [training, optimizer_only]


# --- an 8-run sweep, joblib vs sequential ----------------------------------------------------------------


def measure_sweep(rule: StoppingRule, runs: int, steps: int, device: str = "cpu") -> list[Result]:
    """Wall time of a ``runs``-run toy sweep (a subprocess): Hydra's joblib launcher vs the sequential one."""
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
                f"device={device}",
                *(["hydra/launcher=joblib"] if joblib else []),
            ]
            started = time.perf_counter()
            finished = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
            elapsed = time.perf_counter() - started
            summaries = [json.loads(path.read_text()) for path in Path(directory).rglob(SUMMARY_FILE)]
            ok = sum(summary.get("status") == OK for summary in summaries)
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
    return [paired(result, rule, lambda: sweep(False), lambda: sweep(True))]
