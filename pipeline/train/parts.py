"""Which of the DTC's parts a training run updates. The parts themselves are the model's own split
(`DTC.part_parameters`, names in `provenance.PART_NAMES`), the names the checkpoint's provenance records."""

from __future__ import annotations

from torch import nn

from pipeline.core.provenance import PART_NAMES
from pipeline.model import DTC

# The paper's split: frozen VAE, image-encoder backbone and main UNet encoder; everything else trained.
PAPER = (
    "unet.decoder",
    "image_encoder.projection",
    "image_encoder.uncond_vector",
    "hint.adapter",
    "hint.encoder",
    "hint.film",
)
# A model from scratch (a tiny demo model): everything but the VAE, which defines the latent space.
ALL_BUT_VAE = tuple(p for p in PART_NAMES if p != "vae")


def resolve_trainable(spec: str | list[str]) -> tuple[str, ...]:
    """`paper`, `all_but_vae` or a list of part names -> the part names, in `PART_NAMES` order."""
    if spec == "paper":
        return tuple(p for p in PART_NAMES if p in PAPER)
    if spec == "all_but_vae":
        return ALL_BUT_VAE
    if isinstance(spec, str):
        raise ValueError(f"trainable must be paper, all_but_vae or a list of part names, got {spec!r}")
    unknown = [p for p in spec if p not in PART_NAMES]
    if unknown:
        raise ValueError(f"unknown part names {unknown} (known: {', '.join(PART_NAMES)})")
    return tuple(p for p in PART_NAMES if p in spec)


def parameter_parts(dtc: DTC) -> dict[str, str]:
    """Parameter name -> the part it belongs to."""
    part_of = {id(p): part for part, params in dtc.part_parameters().items() for p in params}
    return {name: part_of[id(p)] for name, p in dtc.named_parameters()}


def set_trainable(dtc: DTC, parts: tuple[str, ...]) -> list[tuple[str, nn.Parameter]]:
    """Turn gradients on for `parts` and off elsewhere; returns the trained (name, parameter) pairs in the model's
    order (optimizer state is saved by these names). The model stays in eval mode: its configurations have no
    dropout, and frozen parts must compute exactly what inference computes."""
    dtc.eval()
    owners = parameter_parts(dtc)
    trained = []
    for name, param in dtc.named_parameters():
        param.requires_grad_(owners[name] in parts)
        if owners[name] in parts:
            trained.append((name, param))
    if not trained:
        raise ValueError(f"the parts {list(parts)} hold no parameters in this model")
    return trained
