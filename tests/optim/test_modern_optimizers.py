"""Today's optimizers as configs (conf/optimizer: nadamw, schedule_free_adamw, soap, muon, shampoo), the
learning-rate schedules (optim/schedules.py) and the refusals before a run: a decaying schedule for
Schedule-Free, an unknown schedule, a dense-only optimizer on sparse gradients, preconditioners that would
not fit in memory. The checkpoint round trip of each is in tests/run/test_checkpoint.py, the evaluation
weights in tests/run/test_evaluation_weights.py."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from pytorch_optimizer import SOAP, Muon, ScheduleFreeAdamW
from torch import nn

import bench.run.build as build_module
from bench.formats.errors import ConfigError
from bench.run.build import build, check_settings, make_scheduler, optimizer_record, setup
from bench.run.preflight import preflight
from optim.lookahead import Lookahead
from optim.schedules import Multiplier
from optim.shampoo import BlockShampoo

MODERN = {
    "nadamw": torch.optim.NAdam,
    "schedule_free_adamw": ScheduleFreeAdamW,
    "soap": SOAP,
    "muon": Muon,
    "shampoo": BlockShampoo,
}
SMALL_VAE = ("task=vae", "task.hidden=8", "task.variables=2", "task.classes=4", "steps=10")


def model_parameters():
    torch.manual_seed(0)
    return list(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).parameters())  # 2 matrices, 2 biases


@pytest.mark.parametrize("name", list(MODERN))
def test_each_builds_alone_and_inside_lookahead(config_factory, name):
    alone = build(config_factory(f"optimizer={name}").optimizer, params=model_parameters(), _convert_="all")
    assert isinstance(alone, MODERN[name])
    config = config_factory("optimizer=lookahead", f"optimizer@optimizer.inner={name}")
    assert config.optimizer.name == f"lookahead_{name}"
    wrapped = build(config.optimizer, params=model_parameters(), _convert_="all")
    assert isinstance(wrapped, Lookahead) and isinstance(wrapped.inner, MODERN[name])
    assert "nadamw" != name or wrapped.inner.param_groups[0]["decoupled_weight_decay"] is True


def test_muon_takes_the_matrices_and_adamw_the_rest_at_the_same_rate(config_factory):
    config = config_factory("optimizer=muon", "optimizer.lr=0.05")
    optimizer = build(config.optimizer, params=model_parameters(), _convert_="all")
    groups = {group["use_muon"]: group for group in optimizer.param_groups}
    assert [p.ndim for p in groups[True]["params"]] == [2, 2]
    assert [p.ndim for p in groups[False]["params"]] == [1, 1]
    assert groups[True]["lr"] == groups[False]["lr"] == 0.05
    assert optimizer_record(config, optimizer)["optimizer_split"] == (
        "muon: 2 matrices (20 numbers); adamw (lr 0.05): 2 other tensors (6 numbers)"
    )


def test_the_schedules_multiplier():
    # Steps already taken e = 0..9 of 10, warmup W = 2: (e + 1)/W, then p = (e − 2)/8.
    cosine, linear = Multiplier("cosine", 10, 2), Multiplier("linear", 10, 2)
    assert [cosine(e) for e in (0, 1)] == [0.5, 1.0] == [linear(e) for e in (0, 1)]
    for e in range(2, 10):
        p = (e - 2) / 8
        assert cosine(e) == pytest.approx(0.5 * (1 + math.cos(math.pi * p)), abs=1e-15)
        assert linear(e) == pytest.approx(1 - p, abs=1e-15)
    assert Multiplier("constant", 10, 0)(7) == 1.0


def test_a_run_steps_its_schedule_and_records_it(config_factory):
    config = config_factory("optimizer=nadamw", "optimizer.schedule=cosine", "optimizer.warmup_steps=2")
    config.steps = 10
    optimizer = build(config.optimizer, params=model_parameters(), _convert_="all")
    scheduler = make_scheduler(config, optimizer)
    seen = []
    for _ in range(4):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    multiplier = Multiplier("cosine", 10, 2)
    assert seen == pytest.approx([0.003 * multiplier(e) for e in range(4)], rel=1e-12)
    assert optimizer_record(config, optimizer) == {"schedule": "cosine", "warmup_steps": 2}
    assert make_scheduler(config_factory("optimizer=adam"), optimizer) is None  # constant: no scheduler


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("optimizer.schedule=step",), "unknown learning-rate schedule.*constant, cosine, linear"),
        (("optimizer.warmup_steps=10", "optimizer.schedule=cosine"), "leaves no step of the cosine decay"),
        (
            ("optimizer=lookahead", "optimizer.inner.schedule=cosine"),
            "set the schedule on the outer optimizer",
        ),
    ],
)
def test_bad_schedules_are_refused(config_factory, overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_settings(config_factory(*SMALL_VAE, *overrides))


@pytest.mark.parametrize(
    "outer", [(), ("optimizer=lookahead", "optimizer@optimizer.inner=schedule_free_adamw")]
)
def test_schedule_free_refuses_a_decaying_schedule_and_takes_a_warmup(config_factory, outer):
    chosen = outer or ("optimizer=schedule_free_adamw",)
    with pytest.raises(ConfigError, match="Schedule-Free.*optimizer.schedule=linear is refused"):
        setup(config_factory(*SMALL_VAE, *chosen, "optimizer.schedule=linear"))
    setup(config_factory(*SMALL_VAE, *chosen, "optimizer.warmup_steps=3"))


def test_a_dense_only_optimizer_on_sparse_gradients_is_refused_at_preflight():
    # Every optimizer of the sweep is checked (lazy_adam fits, shampoo does not).
    with pytest.raises(ConfigError) as refused:
        preflight(["-m", "task=embedding", "task.sparse=true", "optimizer=lazy_adam,shampoo"])
    message = str(refused.value)
    assert "optimizer 'shampoo' takes dense gradients only" in message
    assert "Optimizers that take sparse gradients: lazy_adam, sgd, sparse_adam" in message
    preflight(["-m", "task=embedding", "task.sparse=true", "optimizer=lazy_adam,sgd", "steps=1"])  # fit


def test_preconditioners_that_would_not_fit_are_refused(config_factory, monkeypatch):
    # What the count says a 3,000 x 32 table needs (blocks of at most 128 rows) is what BlockShampoo holds
    # after its first step: its statistics and inverse roots, by their tensors' sizes.
    config = config_factory("task=embedding", "optimizer=shampoo", "optimizer.block_size=128")
    table = [nn.Parameter(torch.zeros(3000, 32))]
    expected = build_module.preconditioner_memory(config, table)
    optimizer = build(config.optimizer, params=table, _convert_="all")
    table[0].grad = torch.ones_like(table[0])
    optimizer.step()
    held = optimizer.state_dict()["state"][0]["pre_conditioner"]
    tensors = [t for item in held.values() for t in ([item] if isinstance(item, torch.Tensor) else item)]
    assert expected == sum(t.numel() * t.element_size() for t in tensors) > 3000 * 32 * 4
    monkeypatch.setattr(build_module, "available_bytes", lambda device: expected)  # less than twice
    with pytest.raises(ConfigError, match=r"would keep [0-9] MiB of preconditioner matrices.*block_size"):
        build_module.check_optimizer_memory(config, table, torch.device("cpu"))
    monkeypatch.setattr(build_module, "available_bytes", lambda device: 2 * expected)
    build_module.check_optimizer_memory(config, table, torch.device("cpu"))
    soap = OmegaConf.create(
        {"optimizer": {"_target_": "pytorch_optimizer.SOAP", "max_precondition_dim": 1000}}
    )
    assert build_module.preconditioner_memory(soap, table) == 2 * 32 * 32 * 4  # the 3,000 rows not rotated
