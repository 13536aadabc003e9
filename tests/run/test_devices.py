"""Devices: ``device=auto|cpu|cuda|cuda:N``. What a machine without a GPU can check: the same numbers with
``device=cpu`` as without the key, a clear refusal (exit 2) of a GPU that is not there, every tensor of a run
on the run's device (under a default device of ``meta``, a tensor made without naming its device cannot mix
with the run's), the summary's device and peak-memory fields, the spreading of a sweep's jobs over GPUs, the
submitit launcher's ``gpus_per_node`` from the command line, and ``scripts/gpu_check.sh`` failing clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from bench.formats.errors import ConfigError
from bench.run.build import setup
from bench.run.device import resolve_device
from bench.run.loop import Recorder, train
from bench.run.preflight import preflight
from bench.run.runner import run
from bench.run.sweep import config_digest, variant_digest
from tests.helpers import CONF, ROOT, make_config, run_cli

SHORT = ("task=vae", "task.variables=3", "steps=6", "probe.every=3", "probe.draws=4", "threads=1")
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")


def test_device_cpu_gives_the_same_metrics_as_no_device_key(tmp_path):
    config = make_config(*SHORT)
    assert config.device == "auto"  # the default: the CPU on this machine
    for name, device in (("default", None), ("cpu", "cpu")):
        configured = config.copy()
        if device is not None:
            configured.device = device
        summary = run(configured, tmp_path / name)
        assert summary["status"] == "ok" and summary["device"] == "cpu", summary["error"]
    default = (tmp_path / "default" / "metrics.csv").read_bytes()
    assert default == (tmp_path / "cpu" / "metrics.csv").read_bytes()
    # Resuming a sweep and pooling seeds treat the two spellings as one configuration; a GPU run is another.
    digests = {}
    for device in ("auto", "cpu", "cuda", "cuda:0"):
        config.device = device
        digests[device] = (config_digest(config), variant_digest(config))
    assert digests["auto"] == digests["cpu"] != digests["cuda"] == digests["cuda:0"]


def test_the_summary_records_the_device_and_this_runs_peak_memory(tmp_path):
    run(make_config(*SHORT), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["device"] == "cpu" and summary["device_name"]
    assert summary["data"] == "digits"
    if Path("/proc/self/clear_refs").exists():
        assert summary["peak_memory_mb"] > 10
    # The peak is reset at a run's start: a second measurement does not inherit an earlier, larger peak. In a
    # fresh process: in a long-lived one (a pytest-xdist worker) freed memory stays resident, the 64 MiB reuse
    # it, and the resident size, hence the peak, does not move.
    script = (
        "import torch\n"
        "from bench.run.device import PeakMemory\n"
        "first = PeakMemory(torch.device('cpu')).start()\n"
        "large = torch.ones(64 * 2**20 // 4)  # 64 MiB\n"
        "del large\n"
        "before = first.megabytes()\n"
        "second = PeakMemory(torch.device('cpu')).start()\n"
        "print(before, second.megabytes())\n"
    )
    measured = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    before, after = measured.stdout.split()
    if before != "None":
        assert float(after) < float(before) - 32, measured.stdout


@NO_GPU
def test_cuda_without_a_gpu_exits_2_with_a_clear_message(tmp_path):
    result = run_cli("bench", "device=cuda", "task=toy", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-2000:]
    message = " ".join(result.stderr.split())
    assert "device=cuda, but there is no GPU to run on" in message and "device=cpu" in message
    assert "Traceback" not in result.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["device"] == "cuda"


@NO_GPU
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cuda:1", "no GPU to run on"),
        ("gpu", "device must be auto (a GPU when torch sees one, else the CPU), cpu, cuda or cuda:N"),
        ("cuda:x", "device must be auto"),
    ],
)
def test_device_values_are_checked(value, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        resolve_device(value)
    assert resolve_device("auto") == resolve_device(None) == resolve_device("CPU") == torch.device("cpu")


def test_a_sweep_spreads_its_jobs_over_the_visible_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert [resolve_device("auto", job).index for job in range(5)] == [0, 1, 2, 0, 1]
    assert [resolve_device("cuda", job).index for job in range(4)] == [0, 1, 2, 0]
    assert resolve_device("cuda:2", 7) == torch.device("cuda", 2)  # a GPU named by its number stays
    assert resolve_device("cuda") == torch.device("cuda", 0)  # not in a parallel sweep: the current GPU
    with pytest.raises(ConfigError, match="torch sees 3 GPUs \\(cuda:0 to cuda:2"):
        resolve_device("cuda:3")


@pytest.mark.parametrize(
    "overrides",
    [
        ("task=vae",),
        ("task=vae", "task.latent=bernoulli", "task.prior=learned", "estimator=disarm", "samples=2"),
        (
            "task=bernoulli200_nonlinear",
            "task.variables=20",
            "task.reference=none",
            "task.eval_samples=2",
            "estimator=rloo",
            "samples=2",
        ),
        ("task=vae", "task.variables=5", "task.eval_samples=4", "task.reference=none", "estimator=reinmax"),
        ("task=vqvae", "estimator=vq_stochastic"),
    ],
    ids=["vae", "bernoulli-learned-prior", "dynamic-binarization", "sampled-evaluation", "vqvae"],
)
def test_every_tensor_of_a_run_lives_on_its_device(overrides, tmp_path):
    # Built on the CPU; then trained, probed and evaluated with "meta" as torch's default device: a tensor
    # made there without naming the run's device is a meta tensor, which no operation mixes with the run's.
    config = make_config(*overrides, "steps=3", "probe.every=2", "probe.draws=4", "threads=1")
    torch.manual_seed(0)
    task, estimator, optimizer = setup(config)
    with torch.device("meta"):
        measured = train(config, task, estimator, optimizer, Recorder(tmp_path))
    assert measured["steps"] == 3 and measured["final"]["objective"] == measured["final"]["objective"]


def test_submitit_gpus_per_node_from_the_command_line():
    overrides = ["hydra/launcher=submitit_slurm", "hydra.launcher.gpus_per_node=2", "device=cuda"]
    preflight(["-m", *overrides, "task=toy"])  # accepted as it is written on the command line
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        config = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    assert config.hydra.launcher.gpus_per_node == 2 and config.device == "cuda"


@NO_GPU
def test_gpu_check_script_fails_clearly_without_a_gpu(tmp_path):
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no CUDA GPU" in result.stderr and "Traceback" not in result.stderr


@NO_GPU
def test_perf_refuses_a_missing_gpu(capsys):
    from bench.cli.perf import main

    assert main(["--device", "cuda", "--only", "probe_toy"]) == 2
    assert "no GPU to run on" in capsys.readouterr().err
