"""Image data from local files in their standard formats, written here in miniature (nothing is downloaded):
MNIST and Fashion-MNIST IDX files (gzipped or not) and .npz, Omniglot's chardata.mat (784 x N, each image
stored column by column) and .npz; the digits28 stand-in; the four binarizations; the splits; and a missing
or malformed file, which stops with a message that says what to get and where to put it."""

from __future__ import annotations

import gzip
import json
import math
import socket

import numpy as np
import pytest
import torch
from scipy.io import savemat

from bench.formats.errors import ConfigError
from bench.run.runner import run
from bench.tasks.data import (
    BINARIZATION_SEEDS,
    binarize_batch,
    fixed_binarization,
    load_grey,
    load_images,
)
from bench.tasks.vae import VAE
from tests.helpers import make_config


def idx_bytes(images: np.ndarray) -> bytes:
    count, rows, columns = images.shape
    header = b"".join(value.to_bytes(4, "big") for value in (0x0803, count, rows, columns))
    return header + images.astype(np.uint8).tobytes()


def tiny_images(seed: int, train: int = 60, test: int = 12) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    return generator.integers(0, 256, (train, 28, 28)), generator.integers(0, 256, (test, 28, 28))


def write_idx(directory, train: np.ndarray, test: np.ndarray, gzipped: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for stem, images in (("train-images-idx3-ubyte", train), ("t10k-images-idx3-ubyte", test)):
        raw = idx_bytes(images)
        if gzipped:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / stem).write_bytes(raw)


def upright_strokes(count: int) -> np.ndarray:
    """Images whose top row is lit and whose left column is half lit: a transposed image reads otherwise."""
    images = np.zeros((count, 28, 28))
    images[:, 0, :] = 1.0
    images[:, :, 0] = 0.5
    images[:, 0, 0] = 1.0
    images[:, 10:12, 10:12] = np.linspace(0.1, 0.9, count)[:, None, None]
    return images


def chardata(images: np.ndarray) -> np.ndarray:
    """Images (N, 28, 28) in chardata.mat's layout: one column per image, each stored column by column."""
    return images.transpose(0, 2, 1).reshape(len(images), 784).T


@pytest.mark.parametrize("data", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gzipped", [True, False])
def test_idx_files_load_as_grey_levels_with_the_standard_split(tmp_path, data, gzipped):
    train, test = tiny_images(0)
    write_idx(tmp_path / data, train, test, gzipped)
    grey = load_grey(data, tmp_path / data)
    # MNIST's 60,000 training images: the first 50,000 train, the last 10,000 validate (here 50 and 10).
    assert (
        grey.train.shape == (50, 784) and grey.validation.shape == (10, 784) and grey.test.shape == (12, 784)
    )
    assert torch.equal(
        torch.cat([grey.train, grey.validation]), torch.from_numpy(train.reshape(60, 784) / 255).float()
    )
    threshold = load_images(data, tmp_path / data, "threshold")
    assert torch.equal(threshold.test, torch.from_numpy(test.reshape(12, 784) > 127).float())


def test_npz_files_hold_bytes_or_grey_levels(tmp_path):
    train, test = tiny_images(1)
    np.savez(tmp_path / "fashion.npz", x_train=train.astype(np.uint8), x_test=test.astype(np.uint8))
    grey = load_grey("fashion_mnist", tmp_path / "fashion.npz")
    assert torch.allclose(grey.test, torch.from_numpy(test.reshape(12, 784) / 255).float())
    np.savez(tmp_path / "omniglot.npz", x_train=train / 255, x_test=test / 255)  # floats in [0, 1]
    omniglot = load_grey("omniglot", tmp_path / "omniglot.npz")
    assert torch.allclose(omniglot.test, torch.from_numpy(test.reshape(12, 784) / 255).float())
    np.savez(tmp_path / "bad.npz", x_train=train * 2.0, x_test=test * 2.0)
    with pytest.raises(ConfigError, match="outside \\[0, 1\\]"):
        load_grey("omniglot", tmp_path / "bad.npz")


def test_omniglot_chardata_mat_is_read_upright_with_the_rebar_split(tmp_path):
    images = upright_strokes(200)
    savemat(tmp_path / "chardata.mat", {"data": chardata(images), "testdata": chardata(images[:30])})
    for path in (tmp_path / "chardata.mat", tmp_path):  # the file, or the directory holding it
        grey = load_grey("omniglot", path)
        # The last 1,345 of 24,345 training images validate: the same proportion of 200 is 11.
        assert grey.train.shape == (189, 784) and grey.validation.shape == (11, 784)
        assert grey.test.shape == (30, 784)
        first = grey.train[0].reshape(28, 28)
        assert torch.all(first[0] == 1) and torch.all(first[1:, 0] == 0.5)  # top row lit: not transposed
        assert torch.allclose(grey.validation, torch.from_numpy(images[189:].reshape(11, 784)).float())


def test_binarizations(tmp_path):
    images = upright_strokes(200)
    savemat(tmp_path / "chardata.mat", {"data": chardata(images), "testdata": chardata(images[:30])})
    grey = load_grey("omniglot", tmp_path)
    threshold = load_images("omniglot", tmp_path, "threshold")
    assert torch.equal(threshold.train, (grey.train > 0.5).float())
    static = load_images("omniglot", tmp_path, "static")
    # One fixed Bernoulli(grey) draw per split, the same in every load: pixels of grey 1/2 are half on.
    assert torch.equal(static.test, load_images("omniglot", tmp_path, "static").test)
    assert set(static.train.unique().tolist()) == {0.0, 1.0}
    half = static.train.reshape(-1, 28, 28)[:, 1:, 0]
    assert 0.45 < half.mean() < 0.55 and torch.all(static.train.reshape(-1, 28, 28)[:, 0] == 1)
    generator = torch.Generator().manual_seed(BINARIZATION_SEEDS["test"])
    assert torch.equal(static.test, torch.bernoulli(grey.test, generator=generator))
    # Dynamic: the training split stays grey (drawn per batch); validation and test are the static draw.
    dynamic = load_images("omniglot", tmp_path, "dynamic")
    assert torch.equal(dynamic.train, grey.train) and torch.equal(dynamic.test, static.test)
    assert torch.equal(load_images("omniglot", tmp_path, "none").train, grey.train)
    with pytest.raises(
        ConfigError, match="task.binarization must be one of threshold, static, dynamic, none"
    ):
        load_images("omniglot", tmp_path, "otsu")


def test_dynamic_binarization_draws_each_batch_from_the_run_generator(tmp_path):
    train, test = tiny_images(2)
    write_idx(tmp_path, train, test, gzipped=True)
    task = VAE(
        data="mnist", path=str(tmp_path), binarization="dynamic", hidden=8, batch_size=16, probe_size=8
    )

    def batches(seed: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return [task.train_batch(step, generator) for step in range(1, 5)]

    task.sampler.position = len(task.sampler.order)  # a fresh epoch for each sequence
    first = batches(0)
    task.sampler.position = len(task.sampler.order)
    again = batches(0)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # the seed decides everything
    assert all(set(batch.unique().tolist()) <= {0.0, 1.0} for batch in first)
    # The same images drawn twice get different pixels: the data are binarized afresh at every batch.
    grey = task.train_images[:16]
    draws = torch.stack([binarize_batch(grey, torch.Generator().manual_seed(seed)) for seed in range(200)])
    assert not torch.equal(draws[0], draws[1])
    assert torch.allclose(draws.mean(0), grey, atol=0.15)
    # What a probe or an evaluation reads is fixed: the static draw of the first training images.
    assert torch.equal(task.probe_batch(), fixed_binarization(task.train_images[:8], "train"))
    assert torch.equal(task.probe_batch(), load_images("mnist", tmp_path, "static").train[:8])
    assert math.isfinite(task.evaluate()["objective"])


def test_digits28_is_the_digits_upscaled_to_mnist_geometry():
    small, large = load_grey("digits", None), load_grey("digits28", None)
    assert large.train.shape == (len(small.train), 784) and large.test.shape == (len(small.test), 784)
    images = large.train.reshape(-1, 28, 28)
    assert torch.all(images[:, :4] == 0) and torch.all(images[:, :, -4:] == 0)  # a blank 4-pixel border
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    # The same digits in the same split: mean intensity per image agrees with the 8x8 original.
    means = images[:, 4:24, 4:24].mean((1, 2))
    assert torch.corrcoef(torch.stack([means, small.train.mean(1)]))[0, 1] > 0.95
    assert set(load_images("digits28", None, "static").train.unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("mnist", "train-images-idx3-ubyte.gz"),
        ("fashion_mnist", "t10k-images-idx3-ubyte.gz"),
        ("omniglot", "chardata.mat"),
    ],
)
def test_a_missing_file_says_what_to_download_and_where_to_put_it(tmp_path, data, expected, monkeypatch):
    # Missing files are downloaded (bench.tasks.download, tested against a local server in test_download.py);
    # here the mirror is a closed port, so the message must name the files, the URL tried and the folder.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr("bench.tasks.download.ATTEMPTS", 1)
    monkeypatch.setenv("GRADBENCH_DATA", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match=f"task.data={data}: could not download") as raised:
        load_grey(data, None, mirror=closed)
    assert f"{closed}/{expected}" in str(raised.value) and str(tmp_path / "cache" / data) in str(raised.value)
    with pytest.raises(ConfigError, match="could not download") as raised:
        load_grey(data, tmp_path / "empty", mirror=closed)  # a folder without the files
    assert str(tmp_path / "empty") in str(raised.value) and "task.mirror=URL" in str(raised.value)
    with pytest.raises(ConfigError, match="does not exist") as raised:
        load_grey(data, tmp_path / "nowhere.npz")  # a file that is not there: nothing to download
    assert "task.path=" in str(raised.value)


def test_malformed_files_are_named(tmp_path):
    (tmp_path / "chardata.mat").write_bytes(b"not a MATLAB file")
    with pytest.raises(ConfigError, match="not a readable MATLAB file"):
        load_grey("omniglot", tmp_path)
    savemat(tmp_path / "chardata.mat", {"images": np.zeros((784, 3))})
    with pytest.raises(ConfigError, match="lacks the arrays data and testdata"):
        load_grey("omniglot", tmp_path)
    savemat(tmp_path / "chardata.mat", {"data": np.zeros((100, 3)), "testdata": np.zeros((100, 3))})
    with pytest.raises(ConfigError, match="not 784 x N"):
        load_grey("omniglot", tmp_path)
    with pytest.raises(ConfigError, match="task.data must be one of digits, digits28, mnist, fashion_mnist"):
        load_grey("cifar", None)


def test_a_missing_file_stops_the_run_through_the_config_error_path(tmp_path):
    # The path python -m bench reports as one paragraph with exit code 2 (tests/tasks/test_vae.py runs the
    # command).
    config = make_config(
        "task=bernoulli200_linear", "task.data=omniglot", f"task.path={tmp_path / 'chardata.mat'}"
    )
    with pytest.raises(ConfigError, match="does not exist. Download chardata.mat"):
        run(config, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "task.path=FILE" in summary["error"]
