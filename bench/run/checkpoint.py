"""Checkpoints of a training run: the file format, saving and loading, resuming, and stopping on a signal.

**Files.** A run keeps its checkpoints in ``<run>/checkpoints/``:

- ``step_<step:07d>.pt`` at every step of ``checkpoint.steps``; step 0 is the state after the step-0 probe,
  before the first training step. These are kept (a same-point gradient study loads them).
- ``latest_<step:07d>.pt`` every ``checkpoint.every`` steps and when a stop signal arrives: the newest two are
  kept, an older one is removed only after the new one is complete.

Each ``.pt`` is written atomically (``torch.save`` into a temporary file in the same folder, flushed,
fsync'ed, renamed over the target with ``os.replace``), then a JSON sidecar beside it, ``<stem>.json``, also
atomically: ``format``, ``kind`` (``step`` or ``latest``), ``step``, ``params_digest`` (``params_digest``
below), ``config_digest`` (the run's, ``bench.run.sweep.config_digest``), ``threads``, ``torch_version``,
``code_version`` (``bench.formats.version.code_version``: package version, commit, modified flag, source
hash) and ``sha256`` (of the ``.pt`` file's bytes). A checkpoint is complete when its sidecar exists; a
reader trusts it only when the ``.pt`` file's sha256 matches the sidecar's (``load`` checks).

**Contents.** The ``.pt`` file holds one dict, readable with ``torch.load(path, weights_only=True)``:
``format``, ``step``, ``config_digest``, ``config`` (the run's resolved config as YAML:
``bench.run.build.setup`` rebuilds the objects from it), ``threads``, ``params_digest``, ``resumes``,
``code_version``, and
the training state as ``bench.run.state.TrainingState.capture`` writes it: one entry per field of the state
(``task``, ``estimator`` and their plain ``attributes``, ``optimizer``, ``estimator_optimizer``, ``data``,
``step``, ``rows``, the step times, the running loss, ``last_probe``) and ``random`` (torch's global and
the CUDA generators). Loading it into freshly built objects (``TrainingState.restore``) makes the next
training step bit-identical on CPU to the uninterrupted run's. Format 2 (this layout); a checkpoint of
another format is refused and the run starts over, saying why.

**Code version.** A checkpoint written by other code (another ``source_hash``: any change to the package's
``.py`` files or configs, committed or not; or a checkpoint that recorded none) is not resumed from: under
``resume=auto`` the run starts over, saying why (``resume_refused`` in its summary), so that every step of a
run, and its summary's ``provenance``, come from one version of the code; ``resume=strict`` refuses (exit
code 2). Resuming across versions would mix them silently: a run stopped at step 61 and resumed after f
was rescaled ends ``ok`` with steps 0–61 from the old code.

**A folder of another run.** A folder holding checkpoints (or an ``ok`` run) of another configuration is left
untouched unless ``force=true`` (``bench.run.folders``).

**Public API** (what other code may rely on): ``save``, ``load``, ``list_checkpoints``, ``params_digest``,
``CheckpointError``, and the naming helpers ``checkpoint_path`` and ``sidecar_path``. The rest of this
module is the runner's: the schedule and rotation (``Checkpoints``). The training state is
``bench.run.state``'s, stop signals ``bench.run.signals``'s.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bench.formats.contract import METRICS_FILE, SUMMARY_FILE
from bench.formats.errors import ConfigError
from bench.formats.files import atomic_write_bytes, atomic_write_text
from bench.formats.version import code_version, describe_version
from bench.run.signals import StopSignals

FORMAT = 2
FOLDER = "checkpoints"
KINDS = ("step", "latest")  # at checkpoint.steps (kept) and rotating (newest two kept)
NAME = re.compile(r"^(step|latest)_(\d{7,})\.pt$")
RESUME_MODES = ("auto", "strict", "never")
KEPT_LATEST = 2


class CheckpointError(Exception):
    """A checkpoint that must not be loaded: truncated or corrupt, unreadable, or of another configuration."""


# --- the file format ----------------------------------------------------------------------------------


def checkpoint_path(run: Path, step: int, kind: str = "step") -> Path:
    """The checkpoint file of ``kind`` (``step`` or ``latest``) at ``step`` of the run in folder ``run``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return Path(run) / FOLDER / f"{kind}_{int(step):07d}.pt"


def sidecar_path(path: Path) -> Path:
    """The JSON sidecar of a checkpoint file: the same name with ``.json`` instead of ``.pt``."""
    return Path(path).with_suffix(".json")


def params_digest(task: torch.nn.Module) -> str:
    """sha256 of a task's parameters: each one's name, dtype, shape and bytes, in the order of their names.

    Two tasks give the same digest exactly when they hold the same parameters bit for bit, wherever they
    live (the bytes are read on the CPU).
    """
    digest = hashlib.sha256()
    for name, parameter in sorted(task.named_parameters(), key=lambda item: item[0]):
        tensor = parameter.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(parameter.shape)}\0".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to the checkpoint file ``path`` atomically, then its sidecar (also atomically).

    ``state`` must hold ``step``, ``config_digest``, ``threads`` and ``params_digest`` (they go to the
    sidecar too). A crash or SIGKILL at any moment leaves the previous file or the new one, never half of
    one; a ``.pt`` without its sidecar is incomplete and ``list_checkpoints`` does not list it.
    """
    path = Path(path)
    match = NAME.match(path.name)
    if match is None:
        raise ValueError(f"a checkpoint file is named step_<step>.pt or latest_<step>.pt, got {path.name}")
    missing = {"step", "config_digest", "threads", "params_digest"} - set(state)
    if missing:
        raise ValueError(f"a checkpoint's state needs {', '.join(sorted(missing))}")
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    data = buffer.getvalue()
    sidecar_path(path).unlink(missing_ok=True)  # the pair is incomplete until the new sidecar is written
    atomic_write_bytes(path, data, sync_folder=True)
    sidecar = {
        "format": FORMAT,
        "kind": match.group(1),
        "step": int(state["step"]),
        "params_digest": state["params_digest"],
        "config_digest": state["config_digest"],
        "threads": int(state["threads"]),
        "torch_version": torch.__version__,
        "sha256": hashlib.sha256(data).hexdigest(),
        "file": path.name,
        "code_version": state.get("code_version"),
    }
    atomic_write_text(sidecar_path(path), json.dumps(sidecar, indent=2) + "\n")


def read_sidecar(path: Path) -> dict[str, Any]:
    """The sidecar of checkpoint ``path``; CheckpointError if it is missing or unreadable."""
    try:
        sidecar = json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {path} has no readable sidecar {sidecar_path(path).name} ({error}): it is "
            f"incomplete (the run was stopped while writing it) and is not loaded."
        ) from None
    if not isinstance(sidecar, dict) or not isinstance(sidecar.get("sha256"), str):
        raise CheckpointError(f"checkpoint {path}: its sidecar is not a checkpoint sidecar; not loaded.")
    return sidecar


def verify(path: Path) -> dict[str, Any]:
    """The sidecar of checkpoint ``path``, once the file's sha256 matches it (CheckpointError if not)."""
    path = Path(path)
    sidecar = read_sidecar(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"checkpoint {path} cannot be read ({error}); not loaded.") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sidecar["sha256"]:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt: its sha256 is {actual[:16]}…, its sidecar says "
            f"{sidecar['sha256'][:16]}… ({len(data)} bytes on disk); it is not loaded."
        )
    return sidecar


def load(path: Path, config_digest: str | None = None) -> dict[str, Any]:
    """The state saved in checkpoint ``path``, after checking it.

    Refused with a CheckpointError: a file without its sidecar (incomplete), whose bytes do not match the
    sidecar's sha256 (truncated or corrupt), that does not unpickle, or, when ``config_digest`` is given,
    that a run of another configuration wrote. Tensors are loaded onto the CPU.
    """
    path = Path(path)
    sidecar = verify(path)
    if config_digest is not None:
        check_config(path, sidecar, config_digest)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"checkpoint {path} does not unpickle ({error}); it is not loaded.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} is not a checkpoint of format {FORMAT} (found "
            f"{state.get('format') if isinstance(state, dict) else type(state).__name__}); not loaded."
        )
    return state


def check_config(path: Path, sidecar: dict[str, Any], config_digest: str) -> None:
    """CheckpointError unless the sidecar of checkpoint ``path`` names the configuration ``config_digest``."""
    if sidecar.get("config_digest") != config_digest:
        raise CheckpointError(
            f"checkpoint {path} belongs to another configuration (config_digest "
            f"{sidecar.get('config_digest')}, this run's is {config_digest}): the folder was used by a run "
            f"with other settings; it is not loaded."
        )


def list_checkpoints(run: Path, kind: str | None = None) -> list[Path]:
    """The complete checkpoints (those with a sidecar) of the run in folder ``run``, oldest step first.

    ``kind``: ``step``, ``latest`` or None (both; at one step a ``step`` checkpoint comes before a
    ``latest`` one). Completeness is not integrity: ``load`` checks the bytes.
    """
    folder = Path(run) / FOLDER
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = NAME.match(path.name)
        if match and (kind is None or match.group(1) == kind) and sidecar_path(path).is_file():
            found.append((int(match.group(2)), KINDS.index(match.group(1)), path))
    return [path for _, _, path in sorted(found)]


def step_of(path: Path) -> int:
    match = NAME.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not a checkpoint file")
    return int(match.group(2))


# --- settings, schedule, rotation and resuming ----------------------------------------------------------


def settings(config: DictConfig) -> tuple[list[int], int, str]:
    """``checkpoint.steps``, ``checkpoint.every`` and ``resume``, checked (ConfigError names the key)."""
    steps = OmegaConf.select(config, "checkpoint.steps", default=None)
    every = OmegaConf.select(config, "checkpoint.every", default=0)
    mode = OmegaConf.select(config, "resume", default="auto")
    listed = OmegaConf.to_container(steps) if OmegaConf.is_list(steps) else steps
    if listed is None:
        listed = []
    if not isinstance(listed, list) or not all(
        isinstance(step, int) and not isinstance(step, bool) and step >= 0 for step in listed
    ):
        raise ConfigError(
            f"checkpoint.steps must be a list of whole numbers >= 0 (the steps to save a checkpoint at; 0 "
            f"is before the first training step), e.g. 'checkpoint.steps=[0,10,100]', got "
            f"checkpoint.steps={steps}."
        )
    if not isinstance(every, int) or isinstance(every, bool) or every < 0:
        raise ConfigError(
            f"checkpoint.every must be a whole number >= 0 (save a rotating checkpoint every this many "
            f"steps; 0: never), got checkpoint.every={every!r}."
        )
    if mode not in RESUME_MODES:
        raise ConfigError(
            f"resume must be one of {', '.join(RESUME_MODES)} (auto: continue from the newest good "
            f"checkpoint, else start over; strict: stop with exit code 2 rather than discard a bad "
            f"checkpoint; never: always start over), got resume={mode!r}."
        )
    return sorted(set(listed)), every, mode


class Checkpoints:
    """The checkpoints of one run: which state to resume from, and when to save, rotate and stop.

    ``choose()`` picks the state to resume from (or None: start over) and says on stderr why it refused any
    checkpoint; ``after_step(step, state)`` is called by the training loop at the end of every step (and
    after the step-0 probe) with a function returning the current state; it saves what is due and, when a
    stop signal has arrived (``signals``), saves a rotating checkpoint and raises ``Interrupted``.
    """

    def __init__(
        self,
        directory: Path,
        config: DictConfig,
        config_digest: str,
        force: bool = False,
        signals: StopSignals | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        steps, self.every, self.mode = settings(config)
        self.steps = set(steps)
        self.run, self.folder = Path(directory), Path(directory) / FOLDER
        self.config, self.config_digest, self.force = config, config_digest, force
        self.signals = signals
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self.resumed: dict[str, Any] | None = None  # the state resumed from
        self.resumed_path: Path | None = None
        self.refused: list[str] = []  # why checkpoints were not loaded
        self.resumes = 0  # how many times this run has continued from a checkpoint, this time included
        self.saved_step: int | None = None  # the step of the newest checkpoint this process saved
        self.saved_path: Path | None = None

    # Resuming ---------------------------------------------------------------------------------------------
    def choose(self) -> dict[str, Any] | None:
        """The state to resume from: the newest checkpoint that loads, of this configuration, taken before
        any study checkpoint (``checkpoint.steps``) that is missing or corrupt, so that every study
        checkpoint gets written. None: start over (nothing to resume, ``force=true``, ``resume=never``, or
        no usable checkpoint); the old checkpoint files are then removed.

        ``resume=strict`` raises ConfigError (exit code 2) instead of discarding a checkpoint it refused.
        """
        self.remove_leftovers()
        if self.force or self.mode == "never":
            reason = "force=true" if self.force else "resume=never"
            self.start_over(f"{reason}: starting over")
            return None
        good: list[tuple[Path, dict[str, Any]]] = []
        for path in list_checkpoints(self.run):
            try:
                sidecar = verify(path)
                check_config(path, sidecar, self.config_digest)
            except CheckpointError as error:
                self.refuse(path, str(error))
                continue
            good.append((path, sidecar))
        changed = [path for path, sidecar in good if not same_code(sidecar.get("code_version"))]
        if changed:
            return self.code_changed(changed[-1], read_sidecar(changed[-1]).get("code_version"))
        written = {step_of(path) for path, _ in good if path.name.startswith("step_")}
        missing = [step for step in sorted(self.steps) if step not in written]
        before = missing[0] if missing else None  # resume from a checkpoint before this step
        for path, _ in reversed(good):
            if before is not None and step_of(path) >= before:
                continue
            try:
                state = load(path, self.config_digest)
            except CheckpointError as error:
                self.refuse(path, str(error))
                continue
            self.resumed, self.resumed_path = state, path
            self.resumes = max(int(state.get("resumes", 0)), self.previous_resumes()) + 1
            self.remove_after(step_of(path))
            return state
        self.start_over("no usable checkpoint: starting over" if self.refused or good else None)
        return None

    def code_changed(self, path: Path, version: Any) -> None:
        """Other code wrote ``path``: start over, saying so (``resume=strict``: ConfigError)."""
        before = describe_version(version) if isinstance(version, dict) else "code that recorded no version"
        reason = (
            f"checkpoint {path} was written by other code ({before}) than this run's "
            f"({describe_version(code_version())}): resuming would mix two versions of the code in one run."
        )
        if self.mode == "strict":
            raise ConfigError(
                f"resume=strict: {reason} Run the code that wrote it, or pass resume=auto to start over with "
                f"this code."
            )
        self.refused.append(reason)
        self.log(f"[resume] {reason}")
        self.start_over("the code changed: starting over")

    def previous_resumes(self) -> int:
        """``resumes`` of the summary an earlier attempt of this configuration left (0 if none)."""
        try:
            summary = json.loads((self.run / SUMMARY_FILE).read_text())
        except (OSError, ValueError):
            return 0
        if not isinstance(summary, dict) or summary.get("config_digest") != self.config_digest:
            return 0
        resumes = summary.get("resumes")
        return resumes if isinstance(resumes, int) and not isinstance(resumes, bool) else 0

    def refuse(self, path: Path, reason: str) -> None:
        self.refused.append(reason)
        self.log(f"[resume] {reason}")
        if self.mode == "strict":
            raise ConfigError(
                f"resume=strict: {reason} Remove the file (or pass resume=auto to start over without it)."
            )
        remove_pair(path)

    def start_over(self, reason: str | None) -> None:
        """Remove every checkpoint of an earlier attempt: this run writes its own."""
        old = [path for path in self.folder.iterdir() if path.is_file()] if self.folder.is_dir() else []
        if old and reason:
            self.log(f"[resume] {reason}; removing {len(old)} old checkpoint file(s) in {self.folder}")
        for path in old:
            path.unlink(missing_ok=True)

    def remove_after(self, step: int) -> None:
        """Remove the rotating checkpoints after ``step``: a resumed run writes its own again."""
        for path in list_checkpoints(self.run, "latest"):
            if step_of(path) > step:
                remove_pair(path)

    def remove_leftovers(self) -> None:
        """Remove temporary files (of the run's atomic writes too) and checkpoint files without their other
        half: writes that a kill cut short."""
        for name in (SUMMARY_FILE, METRICS_FILE):
            for path in self.run.glob(f".{name}.*.tmp"):
                path.unlink(missing_ok=True)
        if not self.folder.is_dir():
            return
        for path in self.folder.iterdir():
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
            elif path.suffix == ".pt" and not sidecar_path(path).exists():
                path.unlink(missing_ok=True)
            elif path.suffix == ".json" and not path.with_suffix(".pt").exists():
                path.unlink(missing_ok=True)

    # Saving ---------------------------------------------------------------------------------------------
    def after_step(self, step: int, state: Callable[[], dict[str, Any]]) -> None:
        """Save what is due at the end of ``step``; on a stop signal, save and stop (``StopSignals.stop``)."""
        if step in self.steps:
            self.save(step, "step", state())
        elif self.every and step and step % self.every == 0:
            self.save(step, "latest", state())
        if self.signals is not None and self.signals.requested is not None:
            if self.saved_step != step:
                self.save(step, "latest", state())
            self.signals.stop(step, self.saved_path)

    def save(self, step: int, kind: str, state: dict[str, Any]) -> None:
        path = checkpoint_path(self.run, step, kind)
        state = {
            **state,
            "config_digest": self.config_digest,
            "config": OmegaConf.to_yaml(self.config, resolve=True),
            "threads": torch.get_num_threads(),
            "resumes": self.resumes,
            "code_version": code_version(),
        }
        save(path, state)
        self.saved_step, self.saved_path = step, path
        if kind == "latest":
            for old in list_checkpoints(self.run, "latest")[:-KEPT_LATEST]:
                remove_pair(old)


def same_code(version: Any) -> bool:
    """Whether a checkpoint's recorded ``code_version`` is this process's code (the same ``source_hash``)."""
    return isinstance(version, dict) and version.get("source_hash") == code_version()["source_hash"]


def remove_pair(path: Path) -> None:
    """Remove a checkpoint: its sidecar first (the pair is then incomplete), then the file."""
    sidecar_path(path).unlink(missing_ok=True)
    Path(path).unlink(missing_ok=True)
