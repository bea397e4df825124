"""The optimisation core of one worker: model, trainable parts, AdamW, one optimizer step. No Ray in here.

`Learner.step` takes the micro-batches of one optimizer step (gradient accumulation), normalises the loss by the
number of good samples over all workers (so N workers with batch B compute exactly what one worker with batch N * B
computes), checks the loss before applying anything, and returns the step's figures, identical on every worker.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.model import DTC
from pipeline.model.device import torch_dtype
from pipeline.train.config import TrainConfig
from pipeline.train.data import SKIP_REASONS
from pipeline.train.parts import set_trainable
from pipeline.train.perceptual import VGGPerceptual, read_vgg_weights
from pipeline.train.state import TrainState, load_optimizer
from pipeline.train.step import Batch, DenoisingLoss


@dataclass(frozen=True)
class StepStats:
    loss: float  # mean loss over the step's good samples, all workers
    samples: int  # good samples in the step, all workers
    skipped: dict[str, int]  # skipped rows in the step by reason, all workers
    lr: float
    finite: bool  # False: NaN/inf or above train.max_loss; the step was not applied


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast precision for settings' dtype on `device`; None runs fp32. CPU runs fp32 (auto or fp32 only)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    dtype = torch_dtype(name)
    if dtype == torch.float32:
        return None
    if device.type != "cuda":
        raise ValueError(f"model.dtype {name} needs a GPU; training on {device} runs in fp32 (auto or fp32)")
    return dtype


def enable_gradient_checkpointing(dtc: DTC) -> None:
    """Recompute block activations in backward, for the main UNet and the hint encoder (a plain nn.Module whose
    blocks are diffusers blocks, so it takes the same switch diffusers' enable_gradient_checkpointing flips)."""
    dtc.unet.enable_gradient_checkpointing()
    checkpoint = next(
        m._gradient_checkpointing_func for m in dtc.unet.modules() if getattr(m, "gradient_checkpointing", False)
    )
    for module in dtc.hint.encoder.modules():
        if hasattr(module, "gradient_checkpointing"):
            module._gradient_checkpointing_func = checkpoint
            module.gradient_checkpointing = True


class Learner:
    def __init__(
        self,
        dtc: DTC,
        cfg: TrainConfig,
        *,
        parts: tuple[str, ...],
        device: torch.device,
        wrap: Callable[[nn.Module], nn.Module] = lambda module: module,
    ) -> None:
        """`wrap` puts the loss module under DDP (ray.train.torch.prepare_model on a worker); identity alone."""
        self.cfg = cfg
        self.device = device
        self.dtc = dtc.to(device)
        trained = set_trainable(self.dtc, parts)
        self.names = [name for name, _ in trained]
        self.parts = parts
        if cfg.model.gradient_checkpointing:
            enable_gradient_checkpointing(self.dtc)
        precision = autocast_dtype(cfg.model.dtype, device)
        perceptual = None
        if cfg.train.perceptual_weight > 0:
            perceptual = VGGPerceptual(read_vgg_weights(cfg.train.vgg_weights)).to(device)
        loss = DenoisingLoss(
            self.dtc, autocast_dtype=precision, perceptual=perceptual, perceptual_weight=cfg.train.perceptual_weight
        )
        self.model = wrap(loss)
        opt = cfg.optim
        self.optimizer = torch.optim.AdamW(
            [p for _, p in trained], lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps,
            weight_decay=opt.weight_decay,
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == torch.float16)
        self.step_count = 0

    def restore(self, state: TrainState, tensors: dict[str, torch.Tensor]) -> None:
        load_optimizer(self.optimizer, self.names, tensors, state.param_groups)
        if state.scaler:
            self.scaler.load_state_dict(state.scaler)
        self.step_count = state.step

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then constant: a pure function of the step, so resuming needs no scheduler state."""
        warmup = self.cfg.optim.warmup_steps
        return self.cfg.optim.lr * (min(1.0, (step + 1) / warmup) if warmup else 1.0)

    def _sum_over_workers(self, values: torch.Tensor) -> torch.Tensor:
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(values)
        return values

    def _world(self) -> int:
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def step(self, micro_batches: list[Batch]) -> StepStats:
        """One optimizer step over `micro_batches`; not applied (and `finite` False) when the loss is bad."""
        world = self._world()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        skipped = torch.zeros(len(SKIP_REASONS), device=self.device, dtype=torch.float64)
        good_total = torch.zeros((), device=self.device, dtype=torch.float64)
        for i, batch in enumerate(micro_batches):
            ok = batch.ok.to(self.device)
            good = self._sum_over_workers(ok.sum().to(torch.float64))
            last = i == len(micro_batches) - 1
            no_sync = isinstance(self.model, DistributedDataParallel) and not last
            with self.model.no_sync() if no_sync else contextlib.nullcontext():
                losses = self.model(batch)
                per_sample = torch.where(ok, losses, torch.zeros_like(losses))
                # DDP averages gradients over workers, hence * world: the result is the mean over the good samples
                # of all workers, the same for any number of workers.
                scale = world / max(good.item(), 1.0) / len(micro_batches)
                self.scaler.scale(per_sample.sum() * scale).backward()
            loss_sum += per_sample.detach().sum().to(torch.float64)
            good_total += ok.sum()
            skipped += torch.bincount(batch.reason.to(self.device), minlength=len(SKIP_REASONS)).to(torch.float64)
        totals = self._sum_over_workers(torch.cat([loss_sum[None], good_total[None], skipped]))
        samples = int(totals[1].item())
        loss = totals[0].item() / max(samples, 1)
        finite = math.isfinite(loss) and loss <= self.cfg.train.max_loss
        lr = self.lr_at(self.step_count)
        if finite:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            if self.cfg.optim.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                params = [p for group in self.optimizer.param_groups for p in group["params"]]
                torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step_count += 1
        self.optimizer.zero_grad(set_to_none=True)
        counts = {SKIP_REASONS[i]: int(n) for i, n in enumerate(totals[2:].tolist()) if i and n}
        return StepStats(loss=loss, samples=samples, skipped=counts, lr=lr, finite=finite)
