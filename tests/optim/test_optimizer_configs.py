"""Every optimizer config builds as the runner builds it; Lookahead's inner optimizer is chosen by config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from pytorch_optimizer import SOAP, Muon, ScheduleFreeAdamW
from torch import nn

from bench.formats.errors import ConfigError
from bench.run.build import build
from optim.lazy import LazyAdam
from optim.lookahead import Lookahead
from optim.shampoo import BlockShampoo

CONF = Path(__file__).resolve().parents[2] / "conf"
CONFIGS = sorted(path.stem for path in (CONF / "optimizer").glob("*.yaml"))
EXPECTED = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "lookahead": Lookahead,
    "lazy_adam": LazyAdam,
    "sparse_adam": torch.optim.SparseAdam,
    "nadamw": torch.optim.NAdam,
    "schedule_free_adamw": ScheduleFreeAdamW,
    "soap": SOAP,
    "muon": Muon,
    "shampoo": BlockShampoo,
}


def test_the_issue_lists_every_config():
    assert set(EXPECTED) <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_each_config_builds_on_parameters(config_factory, name):
    config = config_factory(f"optimizer={name}")
    parameters = [nn.Parameter(torch.zeros(3, 2))]
    optimizer = build(config.optimizer, params=parameters)
    assert isinstance(optimizer, EXPECTED.get(name, torch.optim.Optimizer))
    assert optimizer.param_groups[0]["params"] == parameters


def test_lookahead_wraps_adam_by_default_and_the_inner_optimizer_is_chosen_on_the_command_line(
    config_factory,
):
    default = config_factory("optimizer=lookahead")
    assert default.optimizer.name == "lookahead_adam"
    optimizer = build(default.optimizer, params=[nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer.inner, torch.optim.Adam) and (optimizer.k, optimizer.alpha) == (5, 0.5)

    config = config_factory(
        "optimizer=lookahead",
        "optimizer@optimizer.inner=sgd",
        "optimizer.inner.lr=0.05",
        "optimizer.inner.momentum=0.9",
        "optimizer.k=10",
        "optimizer.inner_state=reset",
    )
    assert config.optimizer.name == "lookahead_sgd"
    optimizer = build(config.optimizer, params=[nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer.inner, torch.optim.SGD)
    assert optimizer.param_groups[0]["lr"] == 0.05 and optimizer.param_groups[0]["momentum"] == 0.9
    assert (optimizer.k, optimizer.inner_state) == (10, "reset")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer=lookahead", "optimizer.k=0"], "k .inner steps per slow update. must be an integer >= 1"),
        (["optimizer=lookahead", "optimizer.alpha=2"], r"alpha .slow step size. must be in \(0, 1\]"),
        (
            ["optimizer=lazy_adam", "optimizer.eps_placement=tf"],
            "eps_placement must be one of adam, sparse_adam",
        ),
    ],
)
def test_bad_optimizer_settings_are_config_errors(config_factory, overrides, message):
    config = config_factory(*overrides)
    with pytest.raises(ConfigError, match=message):
        build(config.optimizer, params=[nn.Parameter(torch.zeros(2))])


@pytest.mark.parametrize("optimizer", ["adam", "lazy_adam", "sparse_adam", "lookahead"])
def test_the_embedding_experiment_gives_each_optimizer_the_gradients_it_takes(config_factory, optimizer):
    config = config_factory("+experiment=optimizers_embedding", f"optimizer={optimizer}")
    assert config.task.name == "embedding" and config.estimator.name == "none"
    assert config.task.sparse == (optimizer in ("lazy_adam", "sparse_adam"))
    sweep = OmegaConf.load(CONF / "experiment" / "optimizers_embedding.yaml").hydra.sweeper.params
    assert (sweep.optimizer, sweep.seed) == ("adam,lazy_adam,sparse_adam,lookahead", "0,1,2")


def test_the_vae_experiment_compares_adam_and_lookahead(config_factory):
    config = config_factory("+experiment=optimizers_vae", "optimizer=lookahead")
    assert (config.task.name, config.estimator.name, config.optimizer.name) == (
        "vae",
        "gumbel",
        "lookahead_adam",
    )
    assert config.probe.every % config.optimizer.k == 0  # evaluations fall right after a slow update
