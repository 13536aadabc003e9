"""Data shared by the tasks: image loaders and binarization, the seeded epoch sampler, MLPs.

Every loader gives grey levels in [0, 1], (N, pixels) float32, in three disjoint splits (train, validation,
test); ``binarization`` then turns them into the task's pixels. ``mnist``, ``fashion_mnist``, ``omniglot`` and
``binarized_mnist`` download their files on first use into a cache folder (``task.path``, else
``$GRADBENCH_DATA/<data>``, else ``~/.cache/gradbench/<data>``), verified against their published checksums
(``bench.tasks.download``; ``task.mirror=URL`` for a mirror); an existing file at ``task.path`` is read as it
is.

Data sets (``task.data``):

- ``digits``: scikit-learn's bundled 8×8 digits (1797 images, intensities 0–16, grey = intensity / 16), split
  once 60/20/20 into train, validation and test by a fixed permutation (seed 0): its first 20% test, the next
  20% validate.
- ``digits28``: the same images and split, upscaled to MNIST's geometry: bilinear interpolation of the 8×8
  grey levels to 20×20, padded with 4 blank pixels on every side to 28×28 (MNIST's digits sit in a 20×20
  box centred in 28×28). An offline stand-in with MNIST's input size, NOT MNIST: every result on it says
  ``digits28``.
- ``mnist`` and ``fashion_mnist``: local IDX files ``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte``
  (gzipped or not, ``.gz``; both data sets use these names) in the directory ``task.path``, or an ``.npz``
  with arrays ``x_train`` and ``x_test`` (Keras' ``mnist.npz``). Grey = byte / 255. The standard split:
  the first 50,000 training images train, the last 10,000 validate, the 10,000 test images test (a smaller
  file keeps the proportions: its last sixth validates).
- ``binarized_mnist``: Larochelle & Murray's (2011) fixed binarization of MNIST, the data set REBAR and RELAX
  report on: ``binarized_mnist_{train,valid,test}.amat`` (one image per line, 784 zeros and ones), split as
  given, 50,000 / 10,000 / 10,000. Already binary: every binarization leaves it as it is.
- ``omniglot``: the 28×28 Omniglot of Burda et al. (2016), ``chardata.mat`` (MATLAB; arrays ``data``,
  784 × 24,345, and ``testdata``, 784 × 8,070, grey levels in [0, 1], each image stored column by column as
  the IWAE and REBAR code read it), at ``task.path`` (the file or its directory), or an ``.npz`` with
  ``x_train`` and ``x_test`` (row by row; bytes or grey levels). The split of REBAR (Tucker et al. 2017) and
  DisARM (Dong et al. 2020): the last 1,345 training images validate, leaving 23,000 to train, and the
  8,070 test images test (a smaller file keeps the proportion 1,345 / 24,345).

A missing or malformed file is a ``ConfigError`` that says what to download and where to put it.

Binarization (``task.binarization``):

- ``threshold``: pixel = 1[grey > 1/2], fixed (> 8 of 16 for ``digits``, > 127 of 255 for MNIST bytes).
- ``static``: ONE fixed Bernoulli draw per pixel, pixel ~ Bernoulli(grey), drawn once per split from a
  generator with a fixed seed (``BINARIZATION_SEEDS``), the same in every run. This is what "statically
  binarized" means in the papers: Larochelle & Murray's (2011) binarized MNIST (REBAR, RELAX) is one such
  draw, and REBAR's Omniglot is binarized the same way; a threshold gives an easier, different data set
  whose likelihoods are not comparable. (Our draw is not the draw of their files.)
- ``dynamic``: every training batch is drawn afresh, pixel ~ Bernoulli(grey), from the run's data generator
  (``binarize_batch``), so the model never sees the same binary image twice (DisARM, RODEO, IWAE); the
  validation and test images are binarized once, as ``static`` does, and so are the training images a task
  evaluates or probes on.
- ``none``: the grey levels themselves are the Bernoulli targets (the cross-entropy −Σ x log σ(ℓ) + (1 − x)
  log(1 − σ(ℓ)) of ReinMax's and the Gumbel-Softmax reference code; not a likelihood of binary data).

Training data order depends on the run's seed alone: a task draws its batches from the generator the runner
gives ``train_batch`` (``EpochSampler``: epochs of fresh permutations; ``with_replacement``: independent
indices), never from torch's global generator, which the estimators' sampling consumes. The generator lives
on the run's device, and so do the indices and the binary draws made from it.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.formats.errors import ConfigError

TEST_FRACTION = 0.2  # of the digits, held out once with a fixed permutation; as much again validates
SPLIT_SEED = 0
IMAGE_DATA = ("digits", "digits28", "mnist", "fashion_mnist", "omniglot", "binarized_mnist")
BINARIZATIONS = ("threshold", "static", "dynamic", "none")
BINARIZATION_SEEDS = {"train": 1, "validation": 2, "test": 3}
OMNIGLOT_VALIDATION = 1345  # of the 24,345 training images of chardata.mat (REBAR, DisARM)
OMNIGLOT_TRAIN_FILE = 24345
ACTIVATIONS = ("relu", "leaky_relu", "tanh")

MNIST_HELP = (
    "Download the MNIST image files train-images-idx3-ubyte.gz and t10k-images-idx3-ubyte.gz (e.g. from "
    "https://ossci-datasets.s3.amazonaws.com/mnist/) into one directory, e.g. data/mnist, and pass it as "
    "task.path=DIR (task.path=data/mnist), or "
    "pass a Keras-style mnist.npz (arrays x_train and x_test; "
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz) as task.path=FILE."
)
FASHION_MNIST_HELP = (
    "Download the Fashion-MNIST image files train-images-idx3-ubyte.gz and t10k-images-idx3-ubyte.gz (from "
    "https://github.com/zalandoresearch/fashion-mnist, folder data/fashion; they have the same names as "
    "MNIST's, so keep them in a directory of their own, e.g. data/fashion_mnist) and pass that directory as "
    "task.path=DIR, or pass an .npz with arrays x_train and x_test as task.path=FILE."
)
OMNIGLOT_HELP = (
    "Download chardata.mat, the 28x28 Omniglot of the IWAE paper "
    "(https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat; arrays data and testdata, "
    "784 x N grey levels), e.g. into data/omniglot, and pass the file as task.path=FILE or its directory as "
    "task.path=DIR (task.path=data/omniglot); or pass an .npz with arrays x_train and x_test as "
    "task.path=FILE."
)
BINARIZED_MNIST_HELP = (
    "The files binarized_mnist_train.amat, binarized_mnist_valid.amat and binarized_mnist_test.amat "
    "(Larochelle & Murray 2011; one image per line, 784 zeros and ones) download by themselves into "
    "task.path (a folder)."
)
HELP = {
    "mnist": MNIST_HELP,
    "fashion_mnist": FASHION_MNIST_HELP,
    "omniglot": OMNIGLOT_HELP,
    "binarized_mnist": BINARIZED_MNIST_HELP,
}


class Images(NamedTuple):
    """Images as (N, pixels) float32 tensors in three disjoint splits: binary (0 and 1), or grey levels in
    [0, 1] where the binarization leaves them grey (``dynamic``: the training split; ``none``: all)."""

    train: Tensor
    validation: Tensor
    test: Tensor


# --- grey levels from each source ------------------------------------------------------------------------


def digits_grey(size: int = 8) -> Images:
    """scikit-learn's digits as grey levels (intensity / 16), 8×8 or upscaled to 28×28 (``size=28``), split
    60/20/20 by one fixed permutation (seed 0): its first 20% test, the next 20% validate, the rest train.
    Made once per process; each call gets its own copy."""
    return Images(*(images.clone() for images in cached_digits_grey(size)))


@functools.cache
def cached_digits_grey(size: int) -> Images:
    from sklearn.datasets import load_digits

    grey = torch.from_numpy(load_digits().data / 16).float()
    if size == 28:
        # 8×8 → 20×20 (bilinear, a convex combination: stays in [0, 1]) → 28×28 with a blank 4-pixel border.
        upscaled = F.interpolate(
            grey.reshape(-1, 1, 8, 8), size=(20, 20), mode="bilinear", align_corners=False
        )
        grey = F.pad(upscaled, (4, 4, 4, 4)).reshape(len(grey), 28 * 28)
    order = torch.randperm(len(grey), generator=torch.Generator().manual_seed(SPLIT_SEED))
    held_out = round(TEST_FRACTION * len(grey))
    test, validation, train = order[:held_out], order[held_out : 2 * held_out], order[2 * held_out :]
    return Images(grey[train], grey[validation], grey[test])


def read_idx_images(path: Path, data: str = "mnist") -> np.ndarray:
    """Images from an IDX file (``idx3-ubyte``, optionally gzipped) as a uint8 array (N, rows·columns)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise ConfigError(f"task.data={data}: cannot read {path}: {error}. {HELP[data]}") from None
    if len(raw) < 16 or int.from_bytes(raw[:4], "big") != 0x0803:
        raise ConfigError(
            f"task.data={data}: {path} is not an IDX image file (it must start with the magic number "
            f"0x00000803 and three sizes). {HELP[data]}"
        )
    count, rows, columns = (int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(3))
    if len(raw) - 16 != count * rows * columns:
        raise ConfigError(
            f"task.data={data}: {path} announces {count} images of {rows}x{columns} pixels but holds "
            f"{len(raw) - 16} bytes of pixels instead of {count * rows * columns}; the file is truncated or "
            f"corrupt. {HELP[data]}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows * columns)


def find_idx(directory: Path, stem: str, data: str = "mnist") -> Path:
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            return directory / name
    raise ConfigError(f"task.data={data}: neither {stem} nor {stem}.gz is in {directory}. {HELP[data]}")


def read_npz(path: Path, data: str) -> tuple[np.ndarray, np.ndarray]:
    """The arrays ``x_train`` and ``x_test`` of an .npz, each flattened to (N, pixels)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            train, test = archive["x_train"], archive["x_test"]
    except KeyError:
        raise ConfigError(
            f"task.data={data}: {path} lacks the arrays x_train and x_test. {HELP[data]}"
        ) from None
    except (OSError, ValueError, EOFError) as error:  # EOFError: an empty file
        raise ConfigError(
            f"task.data={data}: {path} is not a readable .npz file ({error}). {HELP[data]}"
        ) from None
    return train.reshape(len(train), -1), test.reshape(len(test), -1)


def grey_levels(images: np.ndarray, path: Path, data: str) -> Tensor:
    """Bytes (0–255) or numbers already in [0, 1] as float32 grey levels in [0, 1]."""
    if np.issubdtype(images.dtype, np.integer):
        return torch.from_numpy(images.astype(np.float32) / 255)
    grey = torch.from_numpy(np.asarray(images, dtype=np.float32))
    if grey.numel() and not (grey.min() >= 0 and grey.max() <= 1):
        raise ConfigError(
            f"task.data={data}: {path} holds numbers outside [0, 1] (from {float(grey.min())} to "
            f"{float(grey.max())}); grey levels must be bytes (0-255) or numbers in [0, 1]. {HELP[data]}"
        )
    return grey


def existing(path: str | Path | None, data: str) -> Path:
    if path is None:
        raise ConfigError(f"task.data={data} needs task.path. {HELP[data]}")
    resolved = Path(str(path)).expanduser()
    if not resolved.exists():
        raise ConfigError(f"task.data={data}: {resolved} does not exist. {HELP[data]}")
    return resolved


PIXELS = {"mnist": 28 * 28, "fashion_mnist": 28 * 28, "omniglot": 28 * 28}
"""Pixels of one image of each data set read from files: a file of another geometry is not that data set."""


def checked_pair(train: np.ndarray, test: np.ndarray, path: Path, data: str) -> None:
    if len(train) == 0 or len(test) == 0 or train.shape[1] != test.shape[1]:
        raise ConfigError(
            f"task.data={data}: expected non-empty train and test images of the same size, got "
            f"{train.shape} and {test.shape} from {path}. {HELP[data]}"
        )
    if data in PIXELS and train.shape[1] != PIXELS[data]:
        raise ConfigError(
            f"task.data={data}: {path} holds images of {train.shape[1]} pixels, but {data} has "
            f"{PIXELS[data]} (28x28); this file is not {data}, and its results would be labelled so. "
            f"{HELP[data]}"
        )


def mnist_grey(path: str | Path | None, data: str = "mnist") -> Images:
    """MNIST or Fashion-MNIST from a directory of IDX files or an .npz; split 50,000/10,000/10,000."""
    path = existing(path, data)
    if path.is_dir():
        train = read_idx_images(find_idx(path, "train-images-idx3-ubyte", data), data)
        test = read_idx_images(find_idx(path, "t10k-images-idx3-ubyte", data), data)
    else:
        train, test = read_npz(path, data)
    checked_pair(train, test, path, data)
    kept = len(train) - len(train) // 6  # 50,000 of the 60,000 training images train, the rest validate
    grey = grey_levels(train, path, data)
    return Images(grey[:kept], grey[kept:], grey_levels(test, path, data))


def omniglot_grey(path: str | Path | None) -> Images:
    """Omniglot from ``chardata.mat`` (or its directory) or an .npz; split 23,000/1,345/8,070."""
    path = existing(path, "omniglot")
    if path.is_dir():
        if not (path / "chardata.mat").is_file():
            raise ConfigError(f"task.data=omniglot: chardata.mat is not in {path}. {OMNIGLOT_HELP}")
        path = path / "chardata.mat"
    if path.suffix == ".npz":
        train, test = read_npz(path, "omniglot")
    else:
        from scipy.io import loadmat

        try:
            contents = loadmat(str(path))
        except Exception as error:  # noqa: BLE001 - scipy raises several kinds for a file it cannot read
            raise ConfigError(
                f"task.data=omniglot: {path} is not a readable MATLAB file ({type(error).__name__}: "
                f"{error}). {OMNIGLOT_HELP}"
            ) from None
        if "data" not in contents or "testdata" not in contents:
            raise ConfigError(
                f"task.data=omniglot: {path} lacks the arrays data and testdata. {OMNIGLOT_HELP}"
            )
        train, test = (column_major(contents[key], path) for key in ("data", "testdata"))
    checked_pair(train, test, path, "omniglot")
    held = max(1, round(len(train) * OMNIGLOT_VALIDATION / OMNIGLOT_TRAIN_FILE)) if len(train) > 1 else 0
    grey = grey_levels(train, path, "omniglot")
    kept = len(grey) - held
    return Images(grey[:kept], grey[kept:], grey_levels(test, path, "omniglot"))


def column_major(array: np.ndarray, path: Path) -> np.ndarray:
    """chardata.mat's (784, N) array as (N, 784) row-major images.

    Each column is one 28×28 image stored column by column (MATLAB's order): the IWAE and REBAR code read it
    as ``data.T.reshape((-1, 28, 28)).reshape((-1, 784), order="F")``, i.e. each image transposed.
    """
    if array.ndim != 2 or array.shape[0] != 28 * 28:
        raise ConfigError(
            f"task.data=omniglot: {path} holds an array of shape {array.shape}, not 784 x N (one 28x28 image "
            f"per column). {OMNIGLOT_HELP}"
        )
    return np.ascontiguousarray(array.T.reshape(-1, 28, 28).transpose(0, 2, 1).reshape(-1, 28 * 28))


FILE_SUFFIXES = (".npz", ".mat", ".gz", ".amat")  # task.path names a file, not the folder of the files


def located(data: str, path: str | Path | None, mirror: str | None) -> Path:
    """What to read ``data`` from: an existing file at ``task.path`` as it is, else the folder of its files,
    where the missing ones are downloaded first (``bench.tasks.download.fetch``)."""
    from bench.tasks.download import fetch

    if path is not None and Path(str(path)).expanduser().is_file():
        return Path(str(path)).expanduser()
    if path is not None and Path(str(path)).suffix in FILE_SUFFIXES:  # a file that is not there
        existing(path, data)  # ConfigError: it does not exist, and what to download
    return fetch(data, path, mirror)


def binarized_mnist_grey(path: Path) -> Images:
    """Larochelle & Murray's binarized MNIST from its three ``.amat`` files in ``path``: 0 and 1, split as
    given (50,000 / 10,000 / 10,000)."""
    splits = []
    for split in ("train", "valid", "test"):
        file = path / f"binarized_mnist_{split}.amat"
        try:
            digits = np.frombuffer(file.read_bytes().translate(None, b" \t\r\n"), dtype=np.uint8) - ord("0")
        except OSError as error:
            raise ConfigError(
                f"task.data=binarized_mnist: cannot read {file}: {error}. {BINARIZED_MNIST_HELP}"
            ) from None
        if digits.size % 784 or digits.size == 0 or digits.max() > 1:
            raise ConfigError(
                f"task.data=binarized_mnist: {file} is not lines of 784 zeros and ones. "
                + BINARIZED_MNIST_HELP
            )
        splits.append(torch.from_numpy(digits.reshape(-1, 784).astype(np.float32)))
    return Images(*splits)


def load_grey(data: str, path: str | Path | None, mirror: str | None = None) -> Images:
    """Grey levels in [0, 1], (train, validation, test), from ``task.data``, ``task.path`` and
    ``task.mirror``."""
    if data == "digits":
        return digits_grey(8)
    if data == "digits28":
        return digits_grey(28)
    if data in ("mnist", "fashion_mnist"):
        return mnist_grey(located(data, path, mirror), data)
    if data == "omniglot":
        return omniglot_grey(located(data, path, mirror))
    if data == "binarized_mnist":
        return binarized_mnist_grey(located(data, path, mirror))
    raise ConfigError(
        f"task.data must be one of {', '.join(IMAGE_DATA)} (digits, digits28: bundled; mnist, fashion_mnist, "
        f"omniglot, binarized_mnist: downloaded into task.path or a cache folder), got task.data={data!r}."
    )


# --- binarization ----------------------------------------------------------------------------------------


def fixed_binarization(grey: Tensor, split: str) -> Tensor:
    """One Bernoulli(grey) draw per pixel from a generator seeded with ``BINARIZATION_SEEDS[split]``.

    The draw is taken pixel after pixel, so the first k images of a split get the same pixels whether the
    split or only its first k images are binarized.
    """
    generator = torch.Generator(device=grey.device).manual_seed(BINARIZATION_SEEDS[split])
    return torch.bernoulli(grey, generator=generator)


def binarize_batch(grey: Tensor, generator: torch.Generator | None) -> Tensor:
    """Dynamic binarization of one training batch: pixel ~ Bernoulli(grey), drawn from ``generator``."""
    return torch.bernoulli(grey, generator=generator)


def binarized(grey: Tensor, binarization: str, split: str) -> Tensor:
    if binarization == "threshold":
        return (grey > 0.5).float()
    if binarization == "none":
        return grey
    if binarization == "dynamic" and split == "train":
        return grey  # drawn per batch by the task (binarize_batch)
    return fixed_binarization(grey, split)


def load_images(
    data: str, path: str | Path | None, binarization: str = "threshold", mirror: str | None = None
) -> Images:
    """(train, validation, test) images, (N, pixels), from ``task.data``, ``task.path`` and
    ``task.binarization`` (module docstring). With ``dynamic`` the training split stays grey: the task draws
    each batch's pixels with ``binarize_batch``."""
    if binarization not in BINARIZATIONS:
        raise ConfigError(
            f"task.binarization must be one of {', '.join(BINARIZATIONS)}, got task.binarization="
            f"{binarization!r}. threshold: pixel > 1/2; static: one fixed Bernoulli draw; dynamic: a fresh "
            "draw for every training batch; none: the grey levels are the targets."
        )
    grey = load_grey(data, path, mirror)
    splits = zip(grey, Images._fields, strict=True)
    return Images(*(binarized(images, binarization, split) for images, split in splits))


# --- data order ------------------------------------------------------------------------------------------


class EpochSampler(nn.Module):
    """Indices of training batches in epochs: a fresh permutation of the N examples, drawn from the
    generator it is given (on that generator's device), is cut into batches; a new epoch starts when fewer
    than a batch are left.

    Its position (the permutation and how far into it) is the module's extra state, so it is saved with
    the task's ``state_dict`` and a run resumed from a checkpoint continues the same data order.
    """

    def __init__(self, size: int, batch_size: int) -> None:
        super().__init__()
        self.size, self.batch_size = int(size), int(batch_size)
        self.order = torch.empty(0, dtype=torch.long)
        self.position = 0

    def next_indices(self, generator: torch.Generator | None) -> Tensor:
        device = generator.device if generator is not None else self.order.device
        if self.order.device != device:  # restored from a checkpoint, which is read onto the CPU
            self.order = self.order.to(device)
        if self.position + self.batch_size > len(self.order):
            self.order = torch.randperm(self.size, generator=generator, device=device)
            self.position = 0
        index = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return index

    def get_extra_state(self) -> dict[str, Any]:
        return {"order": self.order.clone(), "position": self.position}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.order, self.position = state["order"].clone(), int(state["position"])


def with_replacement(
    size: int, batch_size: int, generator: torch.Generator | None, device: torch.device | None = None
) -> Tensor:
    """``batch_size`` independent uniform indices into ``size`` examples, on the generator's device (or
    ``device`` when drawing from the global generator)."""
    if generator is not None:
        device = generator.device
    return torch.randint(size, (batch_size,), generator=generator, device=device)


# --- networks --------------------------------------------------------------------------------------------


def widths(hidden: int | Sequence[int]) -> list[int]:
    """Hidden-layer widths: an int is one hidden layer, a list is one width per layer ([] : none)."""
    return [int(hidden)] if isinstance(hidden, int) else [int(width) for width in hidden]


def activation_layer(activation: str, negative_slope: float = 0.01) -> nn.Module:
    if activation == "relu":
        return nn.ReLU()
    if activation == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    if activation == "tanh":
        return nn.Tanh()
    raise ConfigError(
        f"task.activation must be one of {', '.join(ACTIVATIONS)}, got task.activation={activation!r}."
    )


def mlp(
    inputs: int,
    hidden: int | Sequence[int],
    outputs: int,
    activation: str = "relu",
    negative_slope: float = 0.01,
) -> nn.Sequential:
    """inputs → hidden widths (each followed by the activation) → outputs: the encoders and decoders of the
    image tasks. ``hidden`` is one width or a list of widths; an empty list is one linear map."""
    layers: list[nn.Module] = []
    size = inputs
    for width in widths(hidden):
        layers += [nn.Linear(size, width), activation_layer(activation, negative_slope)]
        size = width
    layers.append(nn.Linear(size, outputs))
    return nn.Sequential(*layers)
