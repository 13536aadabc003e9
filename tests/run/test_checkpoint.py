"""Checkpoints (bench/run/checkpoint.py): the round trip into fresh objects is bit-identical, bad files are
refused with their reason, rotation keeps the newest two, and the settings are checked.

Everything runs in-process on tiny tasks; ``tests/run/test_resume.py`` interrupts real runs with signals.
"""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from bench.formats.errors import ConfigError
from bench.run import checkpoint, state
from bench.run.build import setup
from bench.run.checkpoint import CheckpointError, Checkpoints
from bench.run.loop import Recorder, train
from bench.run.runner import run
from bench.run.sweep import config_digest
from tests.helpers import make_config

# Tiny configurations whose state is more than parameters: an EMA baseline (estimator buffer), a temperature
# schedule (a plain attribute of the estimator), Lookahead's slow weights, the VAE's epoch sampler (extra
# state), the embedding task's rows seen and previous batch, the VQ-VAE's EMA codebook (buffers).
CASES = {
    "toy_ema_baseline": ("task=toy", "task.dim=3", "estimator=score_function", "estimator.baseline=ema"),
    "gaussian_lookahead": ("task=gaussian", "task.dim=2", "estimator=reparam", "optimizer=lookahead"),
    "vae_annealed": (
        "task=vae",
        "estimator=gumbel",
        "estimator.tau_min=0.5",
        "estimator.anneal_rate=0.2",
        "estimator.anneal_every=2",
        "task.hidden=8",
        "task.variables=2",
        "task.classes=4",
        "task.probe_size=8",
        "task.batch_size=500",  # an epoch of the 1078 training images lasts two steps: the sampler wraps
    ),
    "embedding": (
        "task=embedding",
        "task.vocabulary=500",
        "task.dim=4",
        "task.train_size=400",
        "task.test_size=50",
        "task.validation_size=50",
        "task.eval_size=50",
        "task.batch_size=16",
    ),
    "vqvae_ema": (
        "task=vqvae",
        "estimator=vq_st",
        "task.codebook_update=ema",
        "task.hidden=8",
        "task.codes=8",
        "task.latents=2",
        "task.dim=2",
        "task.batch_size=16",
        "task.usage_images=32",
    ),
}
# Today's optimizers from pytorch_optimizer and torch, each with a learning-rate schedule whose state the
# checkpoint carries (a warmup, then a decay; Schedule-Free takes a warmup alone), alone and as Lookahead's
# inner optimizer (k = 2: slow updates at steps 2 and 4); preconditioners recomputed every 2 steps, so that
# their state is more than its initial value when the checkpoint is written.
TINY_VAE = (
    "task=vae",
    "estimator=gumbel",
    "task.hidden=8",
    "task.variables=2",
    "task.classes=4",
    "task.probe_size=8",
    "task.batch_size=16",
)
MODERN = {
    "nadamw": ("schedule=cosine", "warmup_steps=2"),
    "schedule_free_adamw": ("warmup_steps=3",),
    "soap": ("schedule=linear", "warmup_steps=1", "precondition_frequency=2"),
    "muon": ("schedule=cosine", "warmup_steps=1"),
    "shampoo": (
        "schedule=linear",
        "block_size=32",  # the 64-pixel input dimension in two blocks
        "start_preconditioning_step=2",
        "preconditioning_compute_steps=2",
    ),
}
INNER_ONLY = ("precondition_frequency", "block_size", "start_preconditioning_step", "preconditioning_compute")
for name, settings in MODERN.items():
    CASES[f"vae_{name}"] = (*TINY_VAE, f"optimizer={name}", *(f"optimizer.{item}" for item in settings))
    CASES[f"vae_lookahead_{name}"] = (
        *TINY_VAE,
        "optimizer=lookahead",
        f"optimizer@optimizer.inner={name}",
        "optimizer.k=2",
        *(f"optimizer.{'inner.' if item.startswith(INNER_ONLY) else ''}{item}" for item in settings),
    )
SHORT = ("probe.draws=2", "probe.every=3", "log_every=2", "threads=1")


def built(config):
    """Task, estimator and optimizer built as ``bench.run.runner.run`` builds them."""
    torch.manual_seed(config.seed)
    return setup(config)


def as_written(rows):
    """Metric rows as metrics.csv writes them (NaN equals NaN there)."""
    return [(step, metric, repr(float(value))) for step, metric, value in rows]


def rates(optimizer):
    """The learning rate of every parameter group (a schedule moves them), as one tensor."""
    return torch.tensor([group["lr"] for group in optimizer.param_groups], dtype=torch.float64)


def tensors(state):
    """Every tensor of a nested state dict, by path, for exact comparison."""
    found = {}

    def walk(node, path):
        if isinstance(node, torch.Tensor):
            found[path] = node
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list | tuple):
            for index, value in enumerate(node):
                walk(value, f"{path}/{index}")

    walk(state, "")
    return found


@pytest.mark.parametrize("case", list(CASES))
def test_a_checkpoint_loaded_into_fresh_objects_gives_a_bit_identical_next_step(case, tmp_path, one_thread):
    # Uninterrupted: five steps, with a checkpoint after step 4. Resumed: fresh objects built from the same
    # config, the checkpoint loaded, the fifth step run. Every parameter, optimizer and generator state and
    # every metric must be equal bit for bit.
    config = make_config(*CASES[case], *SHORT, "steps=5", "checkpoint.steps=[4]")
    digest = config_digest(config)
    task, estimator, optimizer = built(config)
    recorder = Recorder(tmp_path / "whole")
    saver = Checkpoints(tmp_path / "whole", config, digest)
    whole = train(config, task, estimator, optimizer, recorder, saver)
    expected = {
        **tensors({"task": task.state_dict(), "optimizer": optimizer.state_dict()}),
        "/torch_random": torch.get_rng_state(),
        "/learning_rates": rates(optimizer),
    }

    resumed_config = make_config(*CASES[case], *SHORT, "steps=5", "checkpoint.steps=[4]")
    fresh_task, fresh_estimator, fresh_optimizer = built(resumed_config)
    assert checkpoint.params_digest(fresh_task) != checkpoint.params_digest(task)  # five steps apart
    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    source = checkpoint.checkpoint_path(tmp_path / "whole", 4)
    for path in (source, checkpoint.sidecar_path(source)):
        (tmp_path / "resumed" / "checkpoints" / path.name).write_bytes(path.read_bytes())
    loader = Checkpoints(tmp_path / "resumed", resumed_config, digest)
    assert loader.choose() is not None and loader.resumed["step"] == 4 and loader.resumes == 1
    resumed_recorder = Recorder(tmp_path / "resumed")
    again = train(resumed_config, fresh_task, fresh_estimator, fresh_optimizer, resumed_recorder, loader)

    actual = {
        **tensors({"task": fresh_task.state_dict(), "optimizer": fresh_optimizer.state_dict()}),
        "/torch_random": torch.get_rng_state(),
        "/learning_rates": rates(fresh_optimizer),
    }
    assert actual.keys() == expected.keys()
    for path, tensor in expected.items():
        assert torch.equal(actual[path], tensor), path
    assert checkpoint.params_digest(fresh_task) == checkpoint.params_digest(task)
    assert as_written(resumed_recorder.rows) == as_written(recorder.rows) and recorder.rows
    assert again["final"] == whole["final"] and again["probe"].keys() == whole["probe"].keys()
    assert state.plain_attributes(fresh_estimator) == state.plain_attributes(estimator)


def test_the_checkpoint_file_and_its_sidecar(tmp_path, one_thread):
    config = make_config("task=toy", "estimator=rloo", "samples=2", "steps=30", "probe.draws=2", "threads=1")
    config.checkpoint.steps, config.checkpoint.every = [0, 10, 30, 1000], 4
    summary = run(config, tmp_path)
    assert summary["status"] == "ok" and summary["resumes"] == 0 and summary["resumed_from"] is None
    names = [path.name for path in checkpoint.list_checkpoints(tmp_path)]
    # Study checkpoints are all kept (1000 is never reached); rotating ones: the newest two. At step 0 and at
    # steps of checkpoint.steps no rotating checkpoint is written.
    assert names == [
        "step_0000000.pt",
        "step_0000010.pt",
        "latest_0000024.pt",
        "latest_0000028.pt",
        "step_0000030.pt",
    ]
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == sorted(
        [*names, *(name.replace(".pt", ".json") for name in names)]
    )  # no temporary files left
    path = checkpoint.checkpoint_path(tmp_path, 30)
    sidecar = json.loads(checkpoint.sidecar_path(path).read_text())
    state = checkpoint.load(path, summary["config_digest"])
    assert sidecar["step"] == state["step"] == 30 and sidecar["kind"] == "step"
    assert sidecar["config_digest"] == summary["config_digest"] and sidecar["threads"] == 1
    assert sidecar["torch_version"] == torch.__version__ and len(sidecar["sha256"]) == 64
    # The params digest names the parameters of the run's end, as a task rebuilt from the checkpoint's own
    # config shows (what a same-point study does).
    task, _, _ = built(make_config("task=toy", "estimator=rloo", "samples=2"))
    task.load_state_dict(state["task"])
    assert checkpoint.params_digest(task) == sidecar["params_digest"] == state["params_digest"]
    assert "_target_: bench.tasks.toy.Toy" in state["config"]
    written = [tuple(line.split(",")) for line in (tmp_path / "metrics.csv").read_text().splitlines()[1:]]
    assert [(str(step), metric, value) for step, metric, value in as_written(state["rows"])] == written
    # The whole state loads with torch's safe loader, nothing but tensors and plain containers.
    assert torch.load(path, weights_only=True)["format"] == checkpoint.FORMAT


def test_params_digest_sees_every_bit_name_dtype_and_shape():
    from bench.tasks.toy import Toy

    first, second = Toy(dim=3), Toy(dim=3)
    assert checkpoint.params_digest(first) == checkpoint.params_digest(second)
    with torch.no_grad():
        second.logits.view(-1).view(torch.int32)[0] ^= 1  # one bit of one number
    assert checkpoint.params_digest(first) != checkpoint.params_digest(second)
    assert checkpoint.params_digest(Toy(dim=3)) != checkpoint.params_digest(Toy(dim=6))
    doubled = Toy(dim=3).double()
    assert checkpoint.params_digest(doubled) != checkpoint.params_digest(first)


def saved_checkpoint(tmp_path, one_thread=None):
    config = make_config("task=toy", "estimator=rloo", "samples=2", "steps=8", "probe.draws=2", "threads=1")
    config.checkpoint.steps = [5]
    summary = run(config, tmp_path)
    return checkpoint.checkpoint_path(tmp_path, 5), summary["config_digest"]


def test_a_truncated_a_corrupt_and_another_configs_checkpoint_are_refused(tmp_path, one_thread):
    path, digest = saved_checkpoint(tmp_path)
    good = path.read_bytes()
    assert checkpoint.load(path, digest)["step"] == 5

    with pytest.raises(CheckpointError, match="belongs to another configuration") as other:
        checkpoint.load(path, "0123456789abcdef")
    assert "this run's is 0123456789abcdef" in str(other.value) and digest in str(other.value)

    path.write_bytes(good[: len(good) // 2])  # truncated, as by a full disk or a copy cut short
    with pytest.raises(CheckpointError, match="is truncated or corrupt") as truncated:
        checkpoint.load(path, digest)
    assert f"({len(good) // 2} bytes on disk); it is not loaded" in str(truncated.value)

    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="is truncated or corrupt"):
        checkpoint.load(path, digest)

    # Bytes that match their sidecar but are not a checkpoint (a file written by something else).
    garbage = b"not a torch file"
    path.write_bytes(garbage)
    sidecar = json.loads(checkpoint.sidecar_path(path).read_text())
    sidecar["sha256"] = __import__("hashlib").sha256(garbage).hexdigest()
    checkpoint.sidecar_path(path).write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="does not unpickle"):
        checkpoint.load(path, digest)
    pickled = pickle.dumps({"format": 1, "code": print}, protocol=2)  # a pickle that would run code
    path.write_bytes(pickled)
    sidecar["sha256"] = __import__("hashlib").sha256(pickled).hexdigest()
    checkpoint.sidecar_path(path).write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="does not unpickle"):
        checkpoint.load(path, digest)

    checkpoint.sidecar_path(path).unlink()  # a .pt without its sidecar: incomplete, not listed
    assert checkpoint.list_checkpoints(tmp_path) == []
    with pytest.raises(CheckpointError, match="no readable sidecar"):
        checkpoint.load(path)


def test_a_run_refuses_a_bad_checkpoint_says_why_and_starts_over_or_stops_under_strict(
    tmp_path, one_thread, capsys
):
    path, digest = saved_checkpoint(tmp_path)
    reference = (tmp_path / "metrics.csv").read_bytes()
    (tmp_path / "summary.json").unlink()  # as if the run had been killed after its checkpoint at step 5
    good = path.read_bytes()
    path.write_bytes(good[:100])

    config = make_config("task=toy", "estimator=rloo", "samples=2", "steps=8", "probe.draws=2", "threads=1")
    config.checkpoint.steps, config.resume = [5], "strict"
    with pytest.raises(ConfigError, match="resume=strict: checkpoint .* is truncated or corrupt"):
        run(config, tmp_path)
    assert path.exists()  # strict keeps the file for a look
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"

    config.resume = "auto"
    summary = run(config, tmp_path)
    assert summary["status"] == "ok" and summary["resumed_from"] is None and summary["resumes"] == 0
    assert "is truncated or corrupt" in summary["resume_refused"]
    assert "[resume] checkpoint" in capsys.readouterr().err
    assert (tmp_path / "metrics.csv").read_bytes() == reference  # started over, same numbers
    assert checkpoint.load(path, digest)["step"] == 5  # and wrote a good checkpoint again

    # A folder used by another configuration: left untouched (bench.run.folders), its checkpoints never
    # loaded; force=true replaces that run.
    (tmp_path / "summary.json").unlink()
    other = make_config("task=toy", "estimator=rloo", "samples=2", "steps=9", "probe.draws=2", "threads=1")
    with pytest.raises(ConfigError, match="holds checkpoints of another configuration"):
        run(other, tmp_path)
    assert checkpoint.load(path, digest)["step"] == 5 and not (tmp_path / "summary.json").exists()
    other.force = True
    summary = run(other, tmp_path)
    assert summary["status"] == "ok" and summary["resumed_from"] is None
    assert checkpoint.list_checkpoints(tmp_path) == []  # the other run's checkpoints are gone

    # force=true and resume=never start over without looking.
    config.force = True
    run(config, tmp_path)  # replaces the other configuration's run
    assert run(config, tmp_path)["resumed_from"] is None
    config.force, config.resume = False, "never"
    (tmp_path / "summary.json").unlink()
    assert run(config, tmp_path)["resumed_from"] is None


def test_a_study_checkpoint_that_went_bad_is_written_again(tmp_path, one_thread):
    # Resuming from the newest checkpoint would skip past a corrupt study checkpoint; the run resumes from a
    # checkpoint before it instead, so that every step of checkpoint.steps ends up with a good file.
    config = make_config("task=toy", "estimator=rloo", "samples=2", "steps=12", "probe.draws=2", "threads=1")
    config.checkpoint.steps, config.checkpoint.every = [2, 6], 5
    first = run(config, tmp_path)
    reference = (tmp_path / "metrics.csv").read_bytes()
    (tmp_path / "summary.json").unlink()
    damaged = checkpoint.checkpoint_path(tmp_path, 6)
    damaged.write_bytes(damaged.read_bytes()[:-10])
    summary = run(config, tmp_path)
    assert summary["resumed_from"] == 5 and summary["resumes"] == 1, summary  # latest_5, before step 6
    assert (tmp_path / "metrics.csv").read_bytes() == reference
    for path in checkpoint.list_checkpoints(tmp_path):
        checkpoint.load(path, first["config_digest"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("checkpoint.steps=[10,-1]", "checkpoint.steps must be a list of whole numbers >= 0"),
        ("checkpoint.steps=10", "checkpoint.steps must be a list"),
        ("checkpoint.every=-5", "checkpoint.every must be a whole number >= 0"),
        ("checkpoint.every=1.5", "checkpoint.every must be a whole number >= 0"),
        ("resume=sometimes", "resume must be one of auto, strict, never"),
    ],
)
def test_bad_checkpoint_settings_are_refused_with_the_key(override, message, tmp_path):
    config = make_config("task=toy", "estimator=rloo", "samples=2", "steps=2", "probe.draws=2", override)
    with pytest.raises(ConfigError, match=message):
        run(config, tmp_path)
