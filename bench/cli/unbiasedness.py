"""``python -m bench.check unbiasedness OVERRIDES``: is the estimator a ``python -m bench`` command line would
train unbiased on its task, at the initial parameters? (``bench.run.probe.reference.unbiasedness_check``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from bench.formats.configs import compose
from bench.formats.errors import ConfigError
from bench.run.build import setup
from bench.run.probe.reference import unbiasedness_check


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.check unbiasedness [--pairs N] [--checkpoints K] [OVERRIDES ...]``: the unbiasedness
    check of the estimator a ``python -m bench`` command line with these overrides would train, at its
    initial parameters. Exit 0: no evidence of bias (|z| ≤ 4 at the end); 1: evidence of bias; 2: bad
    input."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.check unbiasedness",
        description=(
            "Check that an estimator is unbiased on a task without a reference gradient: the running "
            "difference of its gradient draws against those of a second, unbiased estimator, with its "
            "z-score (about N(0, 1) when unbiased, growing like the square root of the pairs when biased)."
        ),
    )
    parser.add_argument("--pairs", type=int, default=2000, help="pairs of gradient draws (default 2000)")
    parser.add_argument("--checkpoints", type=int, default=10, help="rows of the running table (10)")
    parser.add_argument("overrides", nargs="*", help="python -m bench overrides, e.g. task=toy estimator=st")
    arguments = parser.parse_intermixed_args(argv)
    try:
        config = compose(["progress=false", *arguments.overrides])
        torch.manual_seed(config.seed)
        if config.get("threads"):
            torch.set_num_threads(int(config.threads))
        task, estimator, _ = setup(config)
        estimator.eval()
        check = unbiasedness_check(
            task,
            estimator,
            config.samples,
            arguments.pairs,
            arguments.checkpoints,
            wrt=config.probe.get("wrt", "parameters"),
            vectorize=str(config.probe.get("vectorize", "auto")).lower() != "false",
        )
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - Hydra's own refusals (an unknown key or group)
        if type(error).__module__.startswith(("hydra", "omegaconf")):
            print(f"error: {error}", file=sys.stderr)
            return 2
        raise
    print(
        f"{config.task.name} / {config.estimator.name} (S={config.samples}) against {check.against} "
        f"(S={check.against_samples}), unbiased:"
    )
    print(f"{'pairs':>7}  {'‖d̄‖':>10}  {'√(V̂/n)':>10}  {'‖d̄‖²−V̂/n':>11}  {'p':>9}  {'z':>7}")
    for point in check.points:
        print(
            f"{point.pairs:>7}  {point.difference:>10.4g}  {point.noise:>10.4g}  {point.bias_sq:>11.4g}  "
            f"{point.p_value:>9.3g}  {point.z:>7.2f}"
        )
    biased = check.points[-1].z > 4
    print("evidence of bias (z > 4)" if biased else "no evidence of bias (z <= 4)")
    return 1 if biased else 0
