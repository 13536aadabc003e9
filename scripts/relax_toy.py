"""The toy problem of RELAX (Grathwohl et al. 2018, "Backpropagation through the Void", §6.1, Figure 1):
minimise E_{b ~ Bernoulli(p)}[(b − t)²] with t = 0.499, whose gradient in p is 1 − 2t = 0.002 and whose
optimum is p(b = 1) = 0.

Two measurements, each of ``score_function`` without a baseline, ``rebar`` and ``relax`` (the network-only
control variate of the paper's toy, ``relaxed_objective=False``: c_φ = r_ρ(σ_λ(z)), S evaluations of f):

1. Training, over ``--seeds`` seeds: p(b = 1) along ``--steps`` steps from p = 0.5, one sample per step
   (S = 1), Adam with learning rate ``--lr`` on the task's logits and, for rebar and relax, a second Adam with
   the same learning rate on the estimator's own parameters, trained on the variance objective at every step
   (``estimators.base.variance_backward``), as the benchmark's runner does. The task (``bench.tasks.toy``,
   ``task.t=0.499``) holds two logits per variable (p = softmax(θ)₁), both trained; the paper's single logit θ
   is their difference.
2. Variance at p(b = 1) = 0.3: the task frozen there, each estimator's own parameters trained for
   ``--fit-steps`` steps on the variance objective, then the variance of one estimate (S = 1) over
   ``--draws`` draws (``bench.run.probe.probe``: ``grad_variance``, the trace of the covariance), per seed.

Writes ``<out>/relax_toy.png`` (p(b = 1) along training, median and quartiles over seeds; the variances) and
``<out>/relax_toy.json`` (the numbers it prints).

    python scripts/relax_toy.py --out results/relax_toy
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run.probe import probe  # noqa: E402
from bench.tasks.toy import Toy  # noqa: E402
from estimators.base import Estimator, recording, variance_backward  # noqa: E402
from estimators.rebar import REBAR  # noqa: E402
from estimators.relax import RELAX  # noqa: E402
from estimators.score_function import ScoreFunction  # noqa: E402

TARGET = 0.499


def make(name: str, lr: float) -> Estimator:
    def adam(parameters):
        return torch.optim.Adam(parameters, lr=lr)

    if name == "score_function":
        return ScoreFunction(baseline="none")
    if name == "rebar":
        return REBAR(optimizer=adam)
    return RELAX(relaxed_objective=False, optimizer=adam)


def step(task: Toy, estimator: Estimator, optimizer, own):
    """One training step as bench.run.runner takes it: the estimate, the variance objective, then the task's
    optimizer (None: the task frozen) and the estimator's own (built after the first estimate sized its
    network); returns the latter."""
    with recording(estimator) as calls:
        loss = task.loss(estimator, 1)
    if own is None and estimator.own_parameters():
        own = estimator.make_optimizer()
    for each in (optimizer, own):
        if each is not None:
            each.zero_grad(set_to_none=True)
    variance_backward(loss, calls, estimator)
    for each in (optimizer, own):
        if each is not None:
            each.step()
    return own


def train(name: str, seed: int, steps: int, lr: float, every: int) -> list[float]:
    """p(b = 1) every ``every`` steps (and at step 0) of one training run."""
    torch.manual_seed(seed)
    task, estimator = Toy(dim=1, t=TARGET), make(name, lr)
    optimizer, own = torch.optim.Adam(task.parameters(), lr=lr), None
    trace = [task.evaluate()["prob_one"]]
    for number in range(1, steps + 1):
        own = step(task, estimator, optimizer, own)
        if number % every == 0:
            trace.append(task.evaluate()["prob_one"])
    return trace


def variance_at(name: str, seed: int, fit_steps: int, draws: int, lr: float) -> float:
    """grad_variance of one estimate at p(b = 1) = 0.3 after ``fit_steps`` steps of the own parameters."""
    torch.manual_seed(seed)
    task, estimator = Toy(dim=1, t=TARGET, p0=0.3), make(name, lr)
    own = None
    for _ in range(fit_steps if estimator.own_parameters() else 0):
        own = step(task, estimator, None, own)  # the logits get gradients but are never stepped
    task.zero_grad(set_to_none=True)
    return float(probe(task, estimator, 1, draws)["grad_variance"])


def run(names: list[str], args: argparse.Namespace) -> tuple[dict, dict]:
    """The training traces and the variances at p(b = 1) = 0.3 of every estimator and seed."""
    traces = {
        name: [train(name, seed, args.steps, args.lr, args.every) for seed in range(args.seeds)]
        for name in names
    }
    variances = {
        name: [variance_at(name, seed, args.fit_steps, args.draws, args.lr) for seed in range(args.seeds)]
        for name in names
    }
    return traces, variances


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=50, help="record p(b = 1) every this many steps")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate (the paper's toy: 0.01)")
    parser.add_argument("--fit-steps", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "relax_toy")
    parser.add_argument("--estimators", default="score_function,rebar,relax")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="relax_toy.json files of runs of the same settings over different --estimators: "
        "run in parallel, plotted and printed together; plot and print them together instead of running",
    )
    args = parser.parse_args(argv)
    if args.seeds < 2 or args.steps < args.every or args.every < 1 or args.draws < 2 or args.fit_steps < 0:
        parser.error("need --seeds >= 2, --every >= 1, --steps >= --every, --draws >= 2, --fit-steps >= 0")
    torch.set_num_threads(1)
    names = args.estimators.split(",")
    started = time.perf_counter()
    if args.merge:
        loaded = [json.loads(path.read_text()) for path in args.merge]
        names = [name for each in loaded for name in each["traces"]]
        traces = {name: each["traces"][name] for each in loaded for name in each["traces"]}
        variances = {name: each["variance_at_p0.3"][name] for each in loaded for name in each["traces"]}
        first = loaded[0]
        args.seeds, args.steps, args.every, args.lr = (
            first["seeds"],
            first["steps"],
            first["every"],
            first["lr"],
        )
        args.fit_steps, args.draws = first["fit_steps"], first["draws"]
    else:
        traces, variances = run(names, args)
    steps = [0, *range(args.every, args.steps + 1, args.every)]
    result = {
        "target": TARGET,
        "seeds": args.seeds,
        "steps": args.steps,
        "every": args.every,
        "lr": args.lr,
        "fit_steps": args.fit_steps,
        "draws": args.draws,
        "final_p": {name: [trace[-1] for trace in traces[name]] for name in names},
        "median_final_p": {name: statistics.median(trace[-1] for trace in traces[name]) for name in names},
        "variance_at_p0.3": variances,
        "median_variance_at_p0.3": {name: statistics.median(variances[name]) for name in names},
        "traces": traces,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "relax_toy.json").write_text(json.dumps(result, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        bands = [quartiles([trace[index] for trace in traces[name]]) for index in range(len(steps))]
        line = left.plot(steps, [band[1] for band in bands], label=name)[0]
        left.fill_between(
            steps, [b[0] for b in bands], [b[2] for b in bands], alpha=0.2, color=line.get_color()
        )
    left.set(
        xlabel="step",
        ylabel="p(b = 1)",
        ylim=(0, 1),
        title=f"f(b) = (b − {TARGET})², median and quartiles over {args.seeds} seeds",
    )
    left.legend()
    for index, name in enumerate(names):
        right.scatter([index] * len(variances[name]), variances[name], alpha=0.6)
        right.hlines(statistics.median(variances[name]), index - 0.3, index + 0.3, color="black")
    right.set(
        yscale="log", xticks=range(len(names)), xticklabels=names, ylabel="variance of one estimate (S = 1)"
    )
    right.set_title(
        f"at p(b = 1) = 0.3, own parameters fitted {args.fit_steps} steps ({args.draws} draws)", fontsize=9
    )
    figure.tight_layout()
    figure.savefig(args.out / "relax_toy.png", dpi=100)

    for name in names:
        print(
            f"{name:>15}: median p(b=1) after {args.steps} steps {result['median_final_p'][name]:.4f} "
            f"(seeds: {', '.join(f'{p:.3f}' for p in result['final_p'][name])}); variance at p=0.3 "
            f"{result['median_variance_at_p0.3'][name]:.4g} (median of {args.seeds})"
        )
    print(f"wrote {args.out / 'relax_toy.png'} and relax_toy.json in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
