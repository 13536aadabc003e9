"""Data shared by the tasks: image loaders (bundled digits, MNIST files), the seeded epoch sampler, MLPs.

Nothing is downloaded. ``digits`` is scikit-learn's bundled 8×8 digits (1797 images), pixels binarized at
half intensity (> 8 of 16), split once 60/20/20 into train, validation and test by a fixed permutation
(seed 0). ``mnist`` reads local files (IDX, optionally gzipped, or a Keras-style ``mnist.npz``) and binarizes
them statically at pixel > 127, with the standard split (50,000 train, 10,000 validation, 10,000 test); a
missing or malformed file is a ``ConfigError`` that says what to download and where to put it.

Training data order depends on the run's seed alone: a task draws its batches from the generator the runner
gives ``train_batch`` (``EpochSampler``: epochs of fresh permutations; ``with_replacement``: independent
indices), never from torch's global generator, which the estimators' sampling consumes.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from bench.errors import ConfigError

TEST_FRACTION = 0.2  # of the digits, held out once with a fixed permutation; as much again validates
SPLIT_SEED = 0
IMAGE_DATA = ("digits", "mnist")


MNIST_HELP = (
    "Download the MNIST image files train-images-idx3-ubyte.gz and t10k-images-idx3-ubyte.gz (e.g. from "
    "https://ossci-datasets.s3.amazonaws.com/mnist/) into one directory and pass it as task.path=DIR, or "
    "pass a Keras-style mnist.npz (arrays x_train and x_test; "
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz) as task.path=FILE."
)


class Images(NamedTuple):
    """Binarized images, (N, pixels) float tensors of 0 and 1, in three disjoint splits."""

    train: Tensor
    validation: Tensor
    test: Tensor


def load_digits_binarized() -> Images:
    """scikit-learn's 8×8 digits, pixels in {0, 1} (intensity > 8 of 16), split 60/20/20.

    One fixed permutation (seed 0): its first 20% are the test images, the next 20% the validation images,
    the rest the training images.
    """
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().data > 8).float()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(SPLIT_SEED))
    held_out = round(TEST_FRACTION * len(images))
    test, validation, train = order[:held_out], order[held_out : 2 * held_out], order[2 * held_out :]
    return Images(images[train], images[validation], images[test])


def read_idx_images(path: Path) -> np.ndarray:
    """Images from an IDX file (``idx3-ubyte``, optionally gzipped) as a uint8 array (N, rows·columns)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise ConfigError(f"task.data=mnist: cannot read {path}: {error}. {MNIST_HELP}") from None
    if len(raw) < 16 or int.from_bytes(raw[:4], "big") != 0x0803:
        raise ConfigError(
            f"task.data=mnist: {path} is not an IDX image file (it must start with the magic number "
            f"0x00000803 and three sizes). {MNIST_HELP}"
        )
    count, rows, columns = (int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(3))
    if len(raw) - 16 != count * rows * columns:
        raise ConfigError(
            f"task.data=mnist: {path} announces {count} images of {rows}x{columns} pixels but holds "
            f"{len(raw) - 16} bytes of pixels instead of {count * rows * columns}; the file is truncated or "
            f"corrupt. {MNIST_HELP}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows * columns)


def find_idx(directory: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            return directory / name
    raise ConfigError(f"task.data=mnist: neither {stem} nor {stem}.gz is in {directory}. {MNIST_HELP}")


def load_mnist_binarized(path: str | Path | None) -> Images:
    """MNIST from local files (a directory of IDX files or an .npz), binarized at pixel > 127.

    The standard split: the first 50,000 training images train, the last 10,000 validate, and the 10,000
    test images test (a smaller file keeps the same proportions: its last sixth validates).
    """
    if path is None:
        raise ConfigError(f"task.data=mnist needs task.path. {MNIST_HELP}")
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"task.data=mnist: {path} does not exist. {MNIST_HELP}")
    if path.is_dir():
        train = read_idx_images(find_idx(path, "train-images-idx3-ubyte"))
        test = read_idx_images(find_idx(path, "t10k-images-idx3-ubyte"))
    else:
        try:
            with np.load(path, allow_pickle=False) as archive:
                train, test = archive["x_train"], archive["x_test"]
        except KeyError:
            raise ConfigError(
                f"task.data=mnist: {path} lacks the arrays x_train and x_test. {MNIST_HELP}"
            ) from None
        except (OSError, ValueError, EOFError) as error:  # EOFError: an empty file
            raise ConfigError(
                f"task.data=mnist: {path} is not a readable .npz file ({error}). {MNIST_HELP}"
            ) from None
        train, test = train.reshape(len(train), -1), test.reshape(len(test), -1)
    if len(train) == 0 or len(test) == 0 or train.shape[1] != test.shape[1]:
        raise ConfigError(
            f"task.data=mnist: expected non-empty train and test images of the same size, got "
            f"{train.shape} and {test.shape} from {path}. {MNIST_HELP}"
        )
    kept = len(train) - len(train) // 6  # 50,000 of MNIST's 60,000 training images train, the rest validate
    binary = binarize(train)
    return Images(binary[:kept], binary[kept:], binarize(test))


def binarize(images: np.ndarray) -> Tensor:
    return torch.from_numpy(images > 127).float()


def load_images(data: str, path: str | None) -> Images:
    """Binarized (train, validation, test) images, (N, pixels), from ``task.data`` and ``task.path``."""
    if data == "digits":
        return load_digits_binarized()
    if data == "mnist":
        return load_mnist_binarized(path)
    raise ConfigError(
        f"task.data must be one of {', '.join(IMAGE_DATA)} (digits: bundled; mnist: local files at "
        f"task.path), got task.data={data!r}."
    )


class EpochSampler(nn.Module):
    """Indices of training batches in epochs: a fresh permutation of the N examples, drawn from the
    generator it is given, is cut into batches; a new epoch starts when fewer than a batch are left.

    Its position (the permutation and how far into it) is the module's extra state, so it is saved with
    the task's ``state_dict`` and a run resumed from a checkpoint continues the same data order.
    """

    def __init__(self, size: int, batch_size: int) -> None:
        super().__init__()
        self.size, self.batch_size = int(size), int(batch_size)
        self.order = torch.empty(0, dtype=torch.long)
        self.position = 0

    def next_indices(self, generator: torch.Generator | None) -> Tensor:
        if self.position + self.batch_size > len(self.order):
            self.order = torch.randperm(self.size, generator=generator)
            self.position = 0
        index = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return index

    def get_extra_state(self) -> dict[str, Any]:
        return {"order": self.order.clone(), "position": self.position}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.order, self.position = state["order"].clone(), int(state["position"])


def with_replacement(size: int, batch_size: int, generator: torch.Generator | None) -> Tensor:
    """``batch_size`` independent uniform indices into ``size`` examples."""
    return torch.randint(size, (batch_size,), generator=generator)


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """inputs → hidden (ReLU) → outputs: the encoders and decoders of the image tasks."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs))
