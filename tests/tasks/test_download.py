"""Data that downloads (``bench.tasks.download``), against an HTTP server on 127.0.0.1 that the test starts,
serving small generated files with their checksums: a good download, a wrong checksum, an interrupted
transfer, and no server at all (a closed port: exit 2 naming the files, their URLs and the cache folder). No
test leaves a partial or unverified file in the cache, and none reaches the internet."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from bench.formats.errors import ConfigError
from bench.tasks import download
from bench.tasks.data import load_images
from bench.tasks.download import DATASETS, Dataset, Remote, data_folder, fetch, file_checksum

CONTENT = {"a.bin": bytes(range(256)) * 40, "b.bin": b"the second file\n" * 100}


class Handler(http.server.BaseHTTPRequestHandler):
    """``/good/NAME``: the file; ``/bad/NAME``: other bytes; ``/cut/NAME``: half the file, then the connection
    closes although the header announced all of it."""

    files: dict[str, bytes] = {}
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).requests.append(self.path)
        kind, _, name = self.path.strip("/").partition("/")
        body = type(self).files.get(name)
        if body is None:
            self.send_error(404)
            return
        sent = body[::-1] if kind == "bad" else body
        self.send_response(200)
        self.send_header("Content-Length", str(len(sent)))
        self.end_headers()
        self.wfile.write(sent[: len(sent) // 2] if kind == "cut" else sent)
        if kind == "cut":
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, *arguments) -> None:  # quiet
        pass


@pytest.fixture
def server():
    Handler.files, Handler.requests = dict(CONTENT), []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def generated(monkeypatch) -> Dataset:
    """A data set of two generated files, one checked by SHA-256, one by git's blob id."""
    gitblob = hashlib.sha1(f"blob {len(CONTENT['b.bin'])}\0".encode() + CONTENT["b.bin"]).hexdigest()
    dataset = Dataset(
        (
            Remote("a.bin", "sha256:" + hashlib.sha256(CONTENT["a.bin"]).hexdigest()),
            Remote("b.bin", "gitblob:" + gitblob),
        ),
        ("http://127.0.0.1:9/never-used/",),
    )
    monkeypatch.setitem(DATASETS, "generated", dataset)
    return dataset


def leftovers(folder: Path) -> list[str]:
    """Files in the cache folder other than the data set's own (temporary or unverified ones)."""
    return (
        sorted(path.name for path in folder.iterdir() if path.name not in CONTENT) if folder.exists() else []
    )


def test_a_good_download_is_verified_and_then_read_from_the_cache(server, generated, tmp_path):
    folder = fetch("generated", tmp_path / "cache", mirror=f"{server}/good")
    assert folder == tmp_path / "cache"
    assert {name: (folder / name).read_bytes() for name in CONTENT} == CONTENT
    assert leftovers(folder) == [] and len(Handler.requests) == 2
    fetch("generated", tmp_path / "cache", mirror=f"{server}/good")  # present and verified: no request
    assert len(Handler.requests) == 2
    assert file_checksum(folder / "b.bin", "gitblob") == generated.files[1].checksum.split(":")[1]


def test_a_wrong_checksum_is_refused_and_nothing_is_kept(server, generated, tmp_path):
    folder = tmp_path / "cache"
    with pytest.raises(ConfigError) as refused:
        fetch("generated", folder, mirror=f"{server}/bad")
    message = str(refused.value)
    assert (
        "could not download 2 file(s)" in message and str(folder) in message and "does not match" in message
    )
    assert f"{server}/bad/a.bin" in message and f"{server}/bad/b.bin" in message
    assert leftovers(folder) == [] and not (folder / "a.bin").exists() and not (folder / "b.bin").exists()
    assert len(Handler.requests) == 2 * download.ATTEMPTS  # each file tried ATTEMPTS times


def test_an_interrupted_transfer_leaves_no_partial_file(server, generated, tmp_path):
    folder = tmp_path / "cache"
    with pytest.raises(ConfigError, match="could not download 2 file.*IncompleteRead"):
        fetch("generated", folder, mirror=f"{server}/cut", attempts=1)
    assert leftovers(folder) == [] and not (folder / "a.bin").exists()
    # The same folder then takes a good download.
    fetch("generated", folder, mirror=f"{server}/good")
    assert (folder / "a.bin").read_bytes() == CONTENT["a.bin"]


def test_a_file_already_there_is_used_as_it_is(server, generated, tmp_path):
    # The user's own copy (another compression, a small test file) is read, not replaced or refused.
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"someone's own file")
    fetch("generated", folder, mirror=f"{server}/good")
    assert (folder / "a.bin").read_bytes() == b"someone's own file" and Handler.requests == ["/good/b.bin"]


def test_the_cache_folder_is_task_path_else_the_environment_else_the_users_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADBENCH_DATA", str(tmp_path / "shared"))
    assert data_folder("mnist", tmp_path / "mine") == tmp_path / "mine"
    assert data_folder("mnist", None) == tmp_path / "shared" / "mnist"
    monkeypatch.delenv("GRADBENCH_DATA")
    assert data_folder("mnist", None).parts[-2:] == ("gradbench", "mnist")


def idx_images(count: int, seed: int) -> bytes:
    """A gzipped IDX file of ``count`` random 28x28 images."""
    pixels = np.random.default_rng(seed).integers(0, 256, (count, 28 * 28), dtype=np.uint8)
    header = (0x0803).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (count, 28, 28))
    return gzip.compress(header + pixels.tobytes(), mtime=0)


def test_mnist_and_binarized_mnist_download_and_load_through_the_task_loader(server, tmp_path, monkeypatch):
    # The real data sets' file names and readers, with generated files and their checksums on the server.
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte.gz": idx_images(12, 1),
        "t10k-images-idx3-ubyte.gz": idx_images(6, 2),
        **{
            f"binarized_mnist_{split}.amat": "".join(
                " ".join(map(str, row)) + "\n" for row in rng.integers(0, 2, (rows, 784))
            ).encode()
            for split, rows in (("train", 5), ("valid", 3), ("test", 2))
        },
    }
    Handler.files = files
    for data in ("mnist", "binarized_mnist"):
        real = DATASETS[data]
        monkeypatch.setitem(
            DATASETS,
            data,
            Dataset(
                tuple(
                    Remote(
                        remote.name, "sha256:" + hashlib.sha256(files[remote.name]).hexdigest(), remote.also
                    )
                    for remote in real.files
                ),
                real.urls,
            ),
        )
    mnist = load_images("mnist", tmp_path / "mnist", "threshold", mirror=f"{server}/good")
    assert [len(split) for split in mnist] == [10, 2, 6] and mnist.train.shape[1] == 784
    binary = load_images("binarized_mnist", tmp_path / "binarized", "static", mirror=f"{server}/good")
    assert [len(split) for split in binary] == [5, 3, 2]
    expected = np.array([int(value) for value in files["binarized_mnist_valid.amat"].split()]).reshape(3, 784)
    assert np.array_equal(binary.validation.numpy(), expected)  # binary already: the binarization keeps it


def test_no_server_exits_2_naming_the_files_their_urls_and_the_cache_folder(tmp_path, capsys):
    from bench.cli.main import entry

    with socket.socket() as probe:  # a port that was free a moment ago, now closed: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mirror = f"http://127.0.0.1:{port}/mnist"
    arguments = [
        "task=vae",
        "task.data=mnist",
        f"task.path={tmp_path / 'cache'}",
        f"task.mirror={mirror}",
        "steps=1",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    saved = sys.argv
    sys.argv = ["bench", *arguments]
    try:
        with pytest.raises(SystemExit) as stop:
            entry(arguments)
    finally:
        sys.argv = saved
    assert stop.value.code == 2
    error = " ".join(capsys.readouterr().err.split())
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        assert f"{mirror}/{name}" in error
    assert f"into {tmp_path / 'cache'}" in error and "task.mirror=URL" in error
    assert not (tmp_path / "cache").exists() or leftovers(tmp_path / "cache") == []
