"""The per-draw gradients of linear layers written straight into the draws (bench.run.probe.linear).

Each encoder below gives the vectorized probe a case where that shortcut is exact, or one where it must
step aside (an in-place activation on a layer's output, a layer called twice, a weight read by another
operation too, a subclass of nn.Linear), with probed parameters that only autograd handles (a LayerNorm),
inputs with several rows per example, and a deterministic term that reads a probed parameter itself. With
the same pre-drawn noise the vectorized draws must equal the per-draw loop's, draw by draw, to float32
rounding (atol 1e-6 of the largest entry: a few eps), and the layers that took the shortcut are those
expected.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import bench.run.probe.linear as linear
from bench.run.probe.draws import draw_gradients, vectorized_draws
from bench.tasks.base import Task
from estimators.base import draw_noise
from estimators.gumbel import Gumbel

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class Scaled(nn.Linear):
    def forward(self, inputs: Tensor) -> Tensor:
        return 2 * super().forward(inputs)


class Encoder(nn.Module):
    """Inputs (B, 5) → logits (B, 2, 3), built by ``kind``; ``shortcut``: the layers that should take it."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.first = Scaled(5, 8) if kind == "subclass" else nn.Linear(5, 8)
        self.norm = nn.LayerNorm(8)
        self.middle = nn.Linear(8, 8)
        self.last = nn.Linear(8, 6)
        self.shortcut = {
            "plain": {"first", "last"},
            "inplace": {"last"},
            "twice": {"first", "last"},
            "shared": {"first"},
            "subclass": {"last"},
            "layernorm": {"first", "last"},
            "rows": {"first", "last"},
            "prior": {"first", "last"},
        }[kind]

    def forward(self, batch: Tensor) -> Tensor:
        if self.kind == "rows":  # two rows per example: (B, 2, 5) → (B, 2, 3)
            hidden = torch.tanh(self.first(batch.unflatten(-1, (1, 5)).expand(-1, 2, -1)))
            return self.last(hidden)[..., :3]
        hidden = self.first(batch)
        if self.kind == "inplace":
            hidden = nn.functional.relu(hidden, inplace=True)
        else:
            hidden = torch.tanh(hidden)
        if self.kind == "twice":
            hidden = torch.tanh(self.middle(torch.tanh(self.middle(hidden))))
        if self.kind == "layernorm":
            hidden = self.norm(hidden)
        logits = self.last(hidden)
        if self.kind == "shared":  # the last weight read a second time
            logits = logits + 0.1 * hidden @ self.last.weight.T
        return logits.unflatten(-1, (2, 3))


class EncoderTask(Task):
    latent = "categorical"

    def __init__(self, kind: str) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.encoder = Encoder(kind)
        self.decoder = nn.Linear(6, 5)
        self.prior = nn.Parameter(torch.randn(2, 3, generator=generator))
        self.register_buffer("data", torch.randn(4, 5, generator=generator))

    def probe_batch(self) -> Tensor:
        return self.data

    def distribution(self, batch: Tensor) -> Tensor:
        return self.encoder(batch)

    def objective(self, batch: Tensor):
        return lambda z: ((self.decoder(z.flatten(-2)) - batch) ** 2).sum(-1)

    def deterministic(self, params: Tensor, batch: Tensor) -> Tensor:
        log_q = params.log_softmax(-1)
        log_prior = self.prior.log_softmax(-1) if self.encoder.kind == "prior" else 0.0
        return (log_q.exp() * (log_q - log_prior)).sum((-1, -2)).mean()

    def probed_parameters(self) -> dict[str, Tensor]:
        probed = {f"encoder.{name}": parameter for name, parameter in self.encoder.named_parameters()}
        return {**probed, "prior": self.prior} if self.encoder.kind == "prior" else probed


KINDS = ["plain", "inplace", "twice", "shared", "subclass", "layernorm", "rows", "prior"]


@pytest.mark.parametrize("kind", KINDS)
def test_linear_layers_write_the_loops_draws(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    task = EncoderTask(kind)
    batch = task.probe_batch()
    chosen: list[str] = []
    choose = linear.direct_calls

    def spy(*arguments):
        calls = choose(*arguments)
        names = {id(module): name for name, module in task.encoder.named_children()}
        chosen.extend(names[id(call.module)] for call in calls)
        return calls

    monkeypatch.setattr(linear, "direct_calls", spy)
    estimator, samples, draws = Gumbel(tau=0.7), 2, 6
    with torch.no_grad():
        params = task.distribution(batch)
    noise = draw_noise(params, samples, draws, torch.Generator().manual_seed(1))
    loop = draw_gradients(task, estimator, samples, batch, draws, noise=noise)
    vectorized = vectorized_draws(task, estimator, samples, batch, draws, noise=noise).gradients
    assert set(chosen) == task.encoder.shortcut
    assert torch.allclose(vectorized, loop, rtol=1e-5, atol=1e-6 * float(loop.abs().max()))
    assert float(loop.std(0).max()) > 1e-3  # draws that differ: not a comparison of constants
