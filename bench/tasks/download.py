"""Data that downloads: the files of ``task.data=mnist|fashion_mnist|omniglot|binarized_mnist``, fetched on
first use with pooch, verified against their published checksums, written atomically.

Where the files go (``data_folder``): ``task.path`` when it is given (a folder; an existing file is used as it
is, as before), else ``$GRADBENCH_DATA/<data>``, else ``<the user's cache folder>/gradbench/<data>``
(``pooch.os_cache``: ``~/.cache/gradbench/<data>`` on Linux, ``~/Library/Caches/gradbench/<data>`` on macOS).
A file already there is used as it is (it was checked when it was downloaded, or it is the user's own copy,
which may differ: a small test file, another compression). A missing file is downloaded into a temporary
file beside it, checked, and only then renamed into place (pooch), so the cache never holds a partial or
unverified file; a file whose checksum does not match is removed and refused.

From where (``DATASETS``): each data set's ``urls`` (its home, then mirrors), or ``task.mirror=URL`` alone (a
folder served over HTTP(S) holding the same file names: for mirrors and clusters without internet access; the
files can also be copied into the cache folder by hand). With ``$GRADBENCH_OFFLINE`` set to ``1`` the data
sets' own URLs are never contacted (a missing file is a ConfigError at once: for machines, and the test
suite, that must not reach the network); ``task.mirror`` is still used. Each download is tried ``ATTEMPTS``
times per URL; when every try fails, ``ConfigError`` (exit 2) names the files, the URLs tried and the
cache folder.

Checksums (``Remote.checksum``, ``"<algorithm>:<hex>"``): SHA-256 as TensorFlow Datasets publishes them
(``url_checksums/mnist.txt``, ``fashion_mnist.txt``, ``binarized_mnist.txt``: the same files as the
Larochelle & Murray binarized MNIST of REBAR and RELAX); for Omniglot's ``chardata.mat``, whose only published
checksum is git's, the blob id in the IWAE repository's tree (``gitblob:``: sha1 of ``blob <size>\\0`` and
the content), checked by ``file_checksum`` after pooch has downloaded it to a temporary name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.formats.errors import ConfigError

ATTEMPTS = 2
OFFLINE = "GRADBENCH_OFFLINE"  # "1": never contact the data sets' own URLs (module docstring)
TIMEOUT_S = 60


@dataclass(frozen=True)
class Remote:
    """One file of a data set: its name, its checksum (``sha256:…``, ``md5:…`` or ``gitblob:…``) and the
    other names under which a local copy also serves (``train-images-idx3-ubyte`` for the ``.gz``)."""

    name: str
    checksum: str
    also: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dataset:
    files: tuple[Remote, ...]
    urls: tuple[str, ...]  # folders holding the files, tried in order


DATASETS: dict[str, Dataset] = {
    "mnist": Dataset(
        (
            Remote(
                "train-images-idx3-ubyte.gz",
                "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                ("train-images-idx3-ubyte",),
            ),
            Remote(
                "t10k-images-idx3-ubyte.gz",
                "sha256:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                ("t10k-images-idx3-ubyte",),
            ),
        ),
        (
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ),
    ),
    "fashion_mnist": Dataset(
        (
            Remote(
                "train-images-idx3-ubyte.gz",
                "sha256:3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                ("train-images-idx3-ubyte",),
            ),
            Remote(
                "t10k-images-idx3-ubyte.gz",
                "sha256:346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                ("t10k-images-idx3-ubyte",),
            ),
        ),
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
    "binarized_mnist": Dataset(
        (
            Remote(
                "binarized_mnist_train.amat",
                "sha256:ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
            ),
            Remote(
                "binarized_mnist_valid.amat",
                "sha256:1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
            ),
            Remote(
                "binarized_mnist_test.amat",
                "sha256:e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
            ),
        ),
        ("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",),
    ),
    "omniglot": Dataset(
        (Remote("chardata.mat", "gitblob:016a3536ffe5e1d38e42563a18d7a78bfaf643ec"),),
        ("https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/",),
    ),
}
ENVIRONMENT = "GRADBENCH_DATA"


def data_folder(data: str, path: str | Path | None) -> Path:
    """Where ``data``'s files are looked for and downloaded to (module docstring)."""
    if path is not None and str(path) != "":
        return Path(str(path)).expanduser()
    root = os.environ.get(ENVIRONMENT)
    if root:
        return Path(root).expanduser() / data
    import pooch

    return Path(pooch.os_cache("gradbench")) / data


def file_checksum(path: Path, algorithm: str) -> str:
    """The hex digest of a file: ``sha256``, ``md5``, or ``gitblob`` (git's blob id: sha1 of
    ``blob <size>\\0`` and the content)."""
    digest = hashlib.sha1() if algorithm == "gitblob" else hashlib.new(algorithm)
    if algorithm == "gitblob":
        digest.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def matches(path: Path, checksum: str) -> bool:
    algorithm, _, expected = checksum.partition(":")
    return file_checksum(path, algorithm) == expected.lower()


def download(url: str, remote: Remote, folder: Path) -> None:
    """One file from ``url`` into ``folder``, verified and renamed into place; raises on any failure (the
    temporary file is removed)."""
    import pooch

    algorithm = remote.checksum.partition(":")[0]
    downloader = pooch.HTTPDownloader(progressbar=sys.stderr.isatty(), timeout=TIMEOUT_S)
    if algorithm in ("sha256", "md5"):  # pooch checks the temporary file before renaming it
        pooch.retrieve(url, remote.checksum, fname=remote.name, path=folder, downloader=downloader)
        return
    staged = f".{remote.name}.unverified"
    pooch.retrieve(url, None, fname=staged, path=folder, downloader=downloader)
    try:
        if not matches(folder / staged, remote.checksum):
            raise ValueError(f"the checksum of the downloaded {remote.name} is not {remote.checksum}")
        os.replace(folder / staged, folder / remote.name)
    finally:
        (folder / staged).unlink(missing_ok=True)


def fetch(data: str, path: str | Path | None, mirror: str | None = None, attempts: int = ATTEMPTS) -> Path:
    """The folder holding ``data``'s files, downloading what is missing (module docstring); ConfigError
    naming the files, the URLs and the folder when a file cannot be had."""
    dataset = DATASETS[data]
    folder = data_folder(data, path)
    bases = (mirror,) if mirror else dataset.urls
    missing = []
    for remote in dataset.files:
        target = folder / remote.name
        if any((folder / name).is_file() for name in remote.also):
            continue  # the user's own uncompressed copy
        if not target.is_file():
            missing.append(remote)
    created = next((parent for parent in (folder, *folder.parents) if parent.parent.exists()), folder)
    created = None if folder.exists() else created  # the first folder this call makes, to remove on failure
    if missing and not mirror and os.environ.get(OFFLINE, "") not in ("", "0"):
        raise ConfigError(
            f"task.data={data}: {len(missing)} file(s) missing in {folder} "
            f"({', '.join(remote.name for remote in missing)}), and downloads from the data set's own URLs "
            f"are off (${OFFLINE}={os.environ[OFFLINE]}). Download them from {dataset.urls[0]} and copy them "
            f"into {folder} (task.path=FOLDER, or ${ENVIRONMENT}, chooses the folder), give a mirror that "
            f"holds the same files (task.mirror=URL), or unset ${OFFLINE}."
        )
    failures = []
    for remote in missing:
        urls = [f"{base.rstrip('/')}/{remote.name}" for base in bases]
        for url in urls:
            for attempt in range(attempts):
                print(
                    f"[data] downloading {remote.name} from {url} into {folder}", file=sys.stderr, flush=True
                )
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    download(url, remote, folder)
                    break
                except Exception as error:  # noqa: BLE001 - any failure of the transfer or the checksum
                    reason = f"{type(error).__name__}: {error}"
                    print(f"[data] attempt {attempt + 1} of {attempts} failed: {reason}", file=sys.stderr)
            if (folder / remote.name).is_file():
                break
        else:
            failures.append(f"{remote.name} (tried {', '.join(urls)}; last error: {reason})")
    if failures:
        if created is not None and not any(path.is_file() for path in created.rglob("*")):
            shutil.rmtree(created, ignore_errors=True)  # no empty folders left where nothing came
        raise ConfigError(
            f"task.data={data}: could not download {len(failures)} file(s) into {folder}: "
            + "; ".join(failures)
            + f". Check the network, give a mirror that holds the same files (task.mirror=URL), or copy "
            f"the files into {folder} by hand (task.path=FOLDER, or ${ENVIRONMENT}, chooses the folder)."
        )
    return folder
