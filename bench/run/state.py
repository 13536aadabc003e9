"""The training state as one object: everything the next training step depends on, captured for a
checkpoint and restored from one.

``TrainingState`` holds the run's objects (the task, the estimator, the optimizer, the data generator, the
optimizer of the estimator's own parameters, the learning-rate schedule) and the training loop's own values
(the step, the metrics recorded so far, the step times, the running training loss, the last probe). Each
field says how it is saved (``saved=`` in its metadata):

- ``"state_dict"``: an object's ``state_dict()``, loaded back with ``load_state_dict`` (the optimizer of the
  estimator's own parameters, which exists only after the first training step, is rebuilt with
  ``estimator.make_optimizer()`` before its state is loaded);
- ``"module"``: a module's ``state_dict()`` and its plain (bool, int, float, str) attributes, e.g. a
  temperature a schedule moved;
- ``"generator"``: a ``torch.Generator``'s state;
- ``"value"``: the value itself (numbers, lists and dicts of them); a list is restored in place, so that
  whoever holds it (the run's ``Recorder`` holds ``rows``) sees the restored contents.

A new piece of state is one new field: ``capture`` and ``restore`` go over the fields, so checkpoints and
resuming need no other edit. Besides the fields, a checkpoint holds the states of torch's global generator
and of the CUDA generators (``random``), and ``params_digest`` (``bench.run.checkpoint.params_digest``).
Loading a capture into freshly built objects makes the next training step bit-identical on the CPU to the
uninterrupted run's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.run.checkpoint import CheckpointError, params_digest

PLAIN = (bool, int, float, str)  # the attributes of a module saved besides its state_dict


def saved(how: str, **kwargs: Any) -> Any:
    """A field of ``TrainingState`` saved ``how`` (``state_dict``, ``module``, ``generator`` or ``value``)."""
    return field(metadata={"saved": how}, **kwargs)


def plain_attributes(module: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """The plain (bool, int, float, str) attributes of every submodule, by submodule name."""
    return {
        name: {key: value for key, value in vars(child).items() if isinstance(value, PLAIN)}
        for name, child in module.named_modules()
    }


def set_attributes(module: torch.nn.Module, attributes: dict[str, dict[str, Any]], what: str) -> None:
    children = dict(module.named_modules())
    for name, values in attributes.items():
        child = children.get(name)
        if child is None:
            raise CheckpointError(f"the checkpoint has state for a submodule {name!r} that this {what} lacks")
        for key, value in values.items():
            setattr(child, key, value)


@dataclass
class TrainingState:
    """Everything the next training step depends on (module docstring). The tensors it captures are the
    live ones, not copies: save a capture before the next step changes them."""

    task: torch.nn.Module = saved("module")
    estimator: torch.nn.Module = saved("module")
    optimizer: torch.optim.Optimizer = saved("state_dict")
    data: torch.Generator = saved("generator")  # the run's data generator
    estimator_optimizer: torch.optim.Optimizer | None = saved("state_dict", default=None)
    # The learning-rate schedule (bench.run.build.make_scheduler; None for a constant rate): after the
    # optimizer, whose param_groups it moves, so that it is restored after them.
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = saved("state_dict", default=None)
    step: int = saved("value", default=0)  # the last training step that finished (0: none yet)
    rows: list[tuple[int, str, float]] = saved("value", default_factory=list)  # metrics.csv so far
    step_times: list[float] = saved("value", default_factory=list)
    optimizer_times: list[float] = saved("value", default_factory=list)
    estimate_times: list[float] = saved("value", default_factory=list)  # one estimate's forward and backward
    running_loss: float = saved("value", default=0.0)  # training loss summed since the last log
    running_count: int = saved("value", default=0)
    last_probe: dict[str, float] = saved("value", default_factory=dict)  # the last probe's results

    def capture(self) -> dict[str, Any]:
        """The state as a checkpoint holds it (``torch.save``-able with ``weights_only`` loading)."""
        state: dict[str, Any] = {"params_digest": params_digest(self.task), "random": global_random_state()}
        for item in dataclasses.fields(self):
            value, how = getattr(self, item.name), item.metadata["saved"]
            if how == "module":
                state[item.name] = value.state_dict()
                state.setdefault("attributes", {})[item.name] = plain_attributes(value)
            elif how == "state_dict":
                state[item.name] = None if value is None else value.state_dict()
            elif how == "generator":
                state[item.name] = value.get_state()
            else:
                state[item.name] = list(value) if isinstance(value, list) else value
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Load a capture into these (freshly built) objects and set the random generators as they were."""
        for item in dataclasses.fields(self):
            how, value = item.metadata["saved"], state.get(item.name)
            if how == "module":
                module = getattr(self, item.name)
                module.load_state_dict(value)
                set_attributes(module, state["attributes"][item.name], item.name)
            elif how == "state_dict":
                if item.name == "estimator_optimizer":
                    # Built by the estimator after its state is loaded, so that it sees every parameter; None
                    # for a plain estimator, or one saved before its first training step.
                    self.estimator_optimizer = None if value is None else self.estimator.make_optimizer()
                if value is not None:
                    getattr(self, item.name).load_state_dict(value)
            elif how == "generator":
                getattr(self, item.name).set_state(value)
            elif isinstance(getattr(self, item.name), list):
                getattr(self, item.name)[:] = value
            else:
                setattr(self, item.name, value)
        set_global_random_state(state["random"])


def global_random_state() -> dict[str, Any]:
    """The states of torch's global generator and of the CUDA generators (where CUDA is initialized)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
