"""A training checkpoint: the DTC checkpoint plus what resuming needs, all without pickles.

    model/                 the DTC checkpoint (pipeline.model.save_checkpoint; loads in the inference pipeline)
    optimizer.safetensors  AdamW's per-parameter state, keyed `<parameter name>/<state name>`
    train_state.json       step, data position, optimizer hyper-parameters, gradient-scaler state, skipped rows

Optimizer state is keyed by parameter name, not by position, so a checkpoint is refused (clearly) rather than
misapplied when the trained parts changed between runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

MODEL_DIR = "model"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "train_state.json"


@dataclass
class TrainState:
    step: int  # optimizer steps done
    samples: int  # data position: samples consumed (step * global batch)
    global_batch: int
    trained_parts: list[str]
    base_provenance: dict[str, Any]  # provenance of the model the run started from (dtc.json's adds this run)
    skipped: dict[str, int] = field(default_factory=dict)  # skipped rows by reason, over the whole run
    scaler: dict[str, Any] | None = None  # torch.amp.GradScaler state (fp16 only)
    param_groups: list[dict[str, Any]] = field(default_factory=list)  # optimizer hyper-parameters

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        return cls(**json.loads(text))


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, torch.Tensor]:
    """AdamW's state of each parameter (`names` in the optimizer's parameter order) as named CPU tensors."""
    state = optimizer.state_dict()["state"]
    tensors = {}
    for index, name in enumerate(names):
        for key, value in state.get(index, {}).items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{name}/{key}"] = tensor.detach().to("cpu").contiguous()
    return tensors


def param_groups(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The optimizer's hyper-parameters (JSON data; the parameter lists are positions)."""
    return json.loads(json.dumps(optimizer.state_dict()["param_groups"], default=list))


def load_optimizer(
    optimizer: torch.optim.Optimizer, names: list[str], tensors: dict[str, torch.Tensor], groups: list[dict]
) -> None:
    """Restore `optimizer_tensors` output; ValueError when the checkpoint's parameters are not this run's."""
    saved = {key.rsplit("/", 1)[0] for key in tensors}
    if saved - set(names) or (saved and set(names) - saved):
        raise ValueError(
            "the checkpoint's optimizer state is for other parameters than this run trains (did train.trainable "
            f"change?): {len(saved - set(names))} unknown, {len(set(names) - saved)} missing"
        )
    state: dict[int, dict[str, torch.Tensor]] = {}
    for index, name in enumerate(names):
        entries = {k.rsplit("/", 1)[1]: v for k, v in tensors.items() if k.rsplit("/", 1)[0] == name}
        if entries:
            state[index] = entries
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def write_checkpoint(
    folder: Path,
    *,
    dtc: nn.Module,
    optimizer: torch.optim.Optimizer,
    names: list[str],
    state: TrainState,
) -> None:
    """Write the whole training checkpoint into `folder` (empty or absent)."""
    from pipeline.model import save_checkpoint

    save_checkpoint(dtc, folder / MODEL_DIR)
    save_file(optimizer_tensors(optimizer, names), str(folder / OPTIMIZER_FILE))
    state.param_groups = param_groups(optimizer)
    (folder / STATE_FILE).write_text(state.to_json())


def read_state(folder: Path) -> TrainState:
    return TrainState.from_json((folder / STATE_FILE).read_text())


def read_optimizer(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / OPTIMIZER_FILE))
