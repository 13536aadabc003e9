"""Lazy Adam against torch's Adam and SparseAdam, and the laziness itself (optim/lazy.py)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from optim.lazy import LazyAdam, lazy_param_groups

ROWS, DIM = 50, 4
TOLERANCE = dict(rtol=0.0, atol=1e-6)  # the 1e-6; differences are float32 rounding of op order


def embedding(sparse: bool, seed: int = 0) -> nn.Embedding:
    torch.manual_seed(seed)
    return nn.Embedding(ROWS, DIM, sparse=sparse)


def batches(steps: int, size: int = 12, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Index batches that touch a few rows each (with repeats), and targets for a squared loss."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randint(0, ROWS, (size,), generator=generator), torch.randn(size, DIM, generator=generator))
        for _ in range(steps)
    ]


def train(module: nn.Embedding, optimizer: torch.optim.Optimizer, data) -> None:
    for index, target in data:
        optimizer.zero_grad()
        ((module(index) - target) ** 2).sum().backward()
        optimizer.step()


# eps = 1e-2 makes the eps convention matter: eps_placement="adam" then misses SparseAdam by ~1e-3.
@pytest.mark.parametrize(("betas", "eps"), [((0.9, 0.999), 1e-8), ((0.9, 0.999), 1e-2), ((0.5, 0.9), 1e-8)])
def test_sparse_gradients_match_torch_sparse_adam(betas, eps):
    data = batches(6)
    ours, theirs = embedding(sparse=True), embedding(sparse=True)
    train(ours, LazyAdam(ours.parameters(), lr=0.05, betas=betas, eps=eps, eps_placement="sparse_adam"), data)
    train(theirs, torch.optim.SparseAdam(list(theirs.parameters()), lr=0.05, betas=betas, eps=eps), data)
    touched = torch.cat([index for index, _ in data]).unique()
    assert 0 < touched.numel() < ROWS  # some rows untouched, so laziness is exercised
    torch.testing.assert_close(ours.weight, theirs.weight, **TOLERANCE)


def test_every_row_touched_matches_torch_adam():
    """Dense gradients with every row non-zero: lazy Adam is Adam, with Adam's eps convention."""
    torch.manual_seed(0)
    ours, theirs = nn.Linear(DIM, 6), nn.Linear(DIM, 6)
    theirs.load_state_dict(ours.state_dict())
    inputs, targets = torch.randn(8, DIM), torch.randn(8, 6)
    optimizers = [LazyAdam(ours.parameters(), lr=0.05), torch.optim.Adam(theirs.parameters(), lr=0.05)]
    for _ in range(6):
        for module, optimizer in zip([ours, theirs], optimizers, strict=True):
            optimizer.zero_grad()
            ((module(inputs) - targets) ** 2).sum().backward()
            assert module.weight.grad.ne(0).any(dim=1).all()  # every row touched
            optimizer.step()
    for mine, reference in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(mine, reference, **TOLERANCE)


def test_every_row_touched_sparse_matches_torch_adam():
    """Sparse gradients that cover every row: lazy Adam (eps as Adam) equals Adam on the dense gradient."""
    ours, theirs = embedding(sparse=True), embedding(sparse=False)
    data = [(torch.arange(ROWS).repeat(2), torch.randn(2 * ROWS, DIM)) for _ in range(5)]
    train(ours, LazyAdam(ours.parameters(), lr=0.05), data)
    train(theirs, torch.optim.Adam(theirs.parameters(), lr=0.05), data)
    torch.testing.assert_close(ours.weight, theirs.weight, **TOLERANCE)


def test_not_lazy_matches_torch_adam_even_with_untouched_rows():
    """lazy=none is plain Adam (a sparse gradient made dense): the control that isolates laziness."""
    data = batches(6)
    ours, theirs = embedding(sparse=True), embedding(sparse=False)
    train(ours, LazyAdam(ours.parameters(), lr=0.05, lazy="none"), data)
    train(theirs, torch.optim.Adam(theirs.parameters(), lr=0.05), data)
    torch.testing.assert_close(ours.weight, theirs.weight, **TOLERANCE)


def test_dense_and_sparse_gradients_give_the_same_lazy_update():
    data = batches(6)
    dense, sparse = embedding(sparse=False), embedding(sparse=True)
    train(dense, LazyAdam(dense.parameters(), lr=0.05), data)
    train(sparse, LazyAdam(sparse.parameters(), lr=0.05), data)
    torch.testing.assert_close(dense.weight, sparse.weight, **TOLERANCE)


@pytest.mark.parametrize("sparse", [False, True])
def test_untouched_rows_and_moments_are_bit_identical(sparse):
    module = embedding(sparse=sparse)
    optimizer = LazyAdam(module.parameters(), lr=0.05)
    train(module, optimizer, batches(5))  # earlier steps give many rows non-zero moments
    state = optimizer.state[module.weight]
    before = [module.weight.detach().clone(), state["exp_avg"].clone(), state["exp_avg_sq"].clone()]
    assert before[1].ne(0).any(dim=1).sum() > 10
    index = torch.tensor([3, 7, 7, 21])
    train(module, optimizer, [(index, torch.randn(4, DIM))])
    after = [module.weight.detach(), state["exp_avg"], state["exp_avg_sq"]]
    untouched = torch.ones(ROWS, dtype=torch.bool)
    untouched[index] = False
    for old, new in zip(before, after, strict=True):
        assert torch.equal(old[untouched], new[untouched])  # bit-identical, not merely close
        assert not torch.equal(old[~untouched], new[~untouched])  # the touched rows did move
    # Adam, by contrast, keeps moving rows with non-zero momentum that are not in the batch.
    reference = embedding(sparse=False)
    adam = torch.optim.Adam(reference.parameters(), lr=0.05)
    train(reference, adam, batches(5))
    moved_before = reference.weight.detach().clone()
    train(reference, adam, [(index, torch.randn(4, DIM))])
    assert not torch.equal(moved_before[untouched], reference.weight.detach()[untouched])


def test_a_zero_gradient_row_is_left_alone_with_dense_gradients():
    parameter = nn.Parameter(torch.randn(5, 3))
    optimizer = LazyAdam([parameter], lr=0.1)
    parameter.grad = torch.ones(5, 3)
    optimizer.step()
    snapshot = parameter.detach().clone()
    parameter.grad = torch.zeros(5, 3)
    parameter.grad[1, 2] = 0.5  # one non-zero entry touches the whole row
    optimizer.step()
    assert torch.equal(parameter[[0, 2, 3, 4]], snapshot[[0, 2, 3, 4]])
    assert not torch.equal(parameter[1], snapshot[1])
    assert optimizer.state[parameter]["step"] == 2


def test_eps_conventions_differ_as_documented():
    """eps_placement=sparse_adam is Adam with eps / sqrt(1 - beta2^t) added to sqrt(v_hat)."""
    eps, lr, beta1, beta2 = 1e-3, 0.1, 0.9, 0.999
    gradients = [torch.full((2, 3), 1e-3), torch.full((2, 3), -2e-3)]
    results = {}
    for placement in ("adam", "sparse_adam"):
        parameter = nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
        optimizer = LazyAdam([parameter], lr=lr, betas=(beta1, beta2), eps=eps, eps_placement=placement)
        for gradient in gradients:
            parameter.grad = gradient.double()
            optimizer.step()
        results[placement] = parameter.detach().clone()
    # By hand, in float64.
    m = v = 0.0
    expected = {"adam": 0.0, "sparse_adam": 0.0}
    for t, gradient in enumerate(gradients, start=1):
        g = float(gradient[0, 0])
        m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
        expected["adam"] -= lr * m_hat / (v_hat**0.5 + eps)
        expected["sparse_adam"] -= lr * m_hat / (v_hat**0.5 + eps / (1 - beta2**t) ** 0.5)
    for placement, value in expected.items():
        torch.testing.assert_close(results[placement], torch.full((2, 3), value, dtype=torch.float64))
    # With eps comparable to |g| the two conventions give clearly different parameters.
    assert abs(expected["adam"] - expected["sparse_adam"]) > 0.1 * abs(expected["adam"])


def test_state_dict_round_trip_continues_identically():
    data = batches(8)
    first = embedding(sparse=True)
    optimizer = LazyAdam(first.parameters(), lr=0.05)
    train(first, optimizer, data[:4])
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    second = embedding(sparse=True, seed=99)
    second.load_state_dict(saved["model"])
    resumed = LazyAdam(second.parameters(), lr=0.05)
    resumed.load_state_dict(saved["optimizer"])
    train(first, optimizer, data[4:])
    train(second, resumed, data[4:])
    assert torch.equal(first.weight, second.weight)


def test_lazy_param_groups_picks_embedding_weights():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    groups = lazy_param_groups(model)
    assert [group["lazy"] for group in groups] == [True, False]
    assert groups[0]["params"] == [model[0].weight]
    assert len(groups[1]["params"]) == 2
    LazyAdam(groups)  # a valid argument


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"lr": 0.0}, "lr"),
        ({"eps": -1.0}, "eps"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"eps_placement": "tensorflow"}, "eps_placement"),
        ({"lazy": "sometimes"}, "lazy"),
    ],
)
def test_invalid_options_are_named(options, named):
    with pytest.raises(ValueError, match=f"LazyAdam: {named}"):
        LazyAdam([nn.Parameter(torch.zeros(2, 2))], **options)
