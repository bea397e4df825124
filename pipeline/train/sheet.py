"""The validation contact sheet: one row per fixed validation pair, columns scene, mask, reference, output."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from pipeline.model import DTC, DTCSampler, SampleBatch, SamplingParams
from pipeline.train.pairs import TrainPair


def sample_outputs(dtc: DTC, pairs: list[tuple[int, TrainPair]], *, steps: int, guidance: float) -> np.ndarray:
    """The sampler's images for `pairs` (each with its fixed seed), with the weights as they are now."""
    batch = SampleBatch(
        scene=np.stack([p.scene for _, p in pairs]),
        mask=np.stack([p.mask.astype(bool) for _, p in pairs]),
        hint=np.stack([p.hint for _, p in pairs]),
        reference=np.stack([p.reference for _, p in pairs]),
        seeds=np.asarray([seed for seed, _ in pairs], dtype=np.int64),
    )
    was_training = {m: m.training for m in dtc.modules()}
    dtc.eval()
    try:
        with torch.no_grad():
            return DTCSampler(dtc, SamplingParams("ddim", steps, guidance)).generate(batch)
    finally:
        for module, mode in was_training.items():
            module.train(mode)


def contact_sheet(pairs: list[tuple[int, TrainPair]], outputs: np.ndarray) -> bytes:
    """PNG bytes of the grid (each tile the crop's size; the reference resized to it)."""
    rows = []
    for (_, pair), output in zip(pairs, outputs, strict=True):
        res = pair.scene.shape[0]
        mask = np.repeat((pair.mask.astype(np.uint8) * 255)[..., None], 3, axis=2)
        reference = np.asarray(Image.fromarray(pair.reference).resize((res, res), Image.Resampling.BICUBIC))
        rows.append(np.concatenate([pair.scene, mask, reference, output], axis=1))
    buf = io.BytesIO()
    Image.fromarray(np.concatenate(rows, axis=0)).save(buf, format="PNG")
    return buf.getvalue()
