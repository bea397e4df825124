"""DTC checkpoints on disk, and DTCs built from a Paint-by-Example pipeline or SD-inpainting + DINOv2.

A DTC checkpoint is a directory:

    dtc.json                                   {"format_version": 1, "model_type": "diffuse-to-choose",
                                                "input_layout": "paint_by_example" | "sd_inpaint",
                                                "provenance": {...} (pipeline/core/provenance.py), ...}
    unet/config.json                           diffusers UNet2DConditionModel (diffusers can open this folder)
    unet/diffusion_pytorch_model.safetensors
    vae/config.json                            diffusers AutoencoderKL (likewise)
    vae/diffusion_pytorch_model.safetensors
    image_encoder/config.json                  {"type": "dinov2" | "paint_by_example", "backbone": {...}, ...}
    image_encoder/model.safetensors
    hint/config.json                           {"unet": {...}, "adapter": {...}, "film": {...}}
    hint/model.safetensors                     adapter.*, encoder.*, films.*, film_mid.*
    image_processor/preprocessor_config.json   transformers image processor for the reference image
    scheduler/scheduler_config.json            the training noise schedule

`dtc.json` is written last, so a directory without it is an incomplete write, never a checkpoint. A dtc.json without
`input_layout` is Paint-by-Example's order, and one without `provenance` is untrained: both were true of every
checkpoint written before they were recorded.

diffusers loads and saves the UNet and VAE (of a DTC checkpoint and of the pipelines we convert, one way), transformers
the pipelines' image encoders; what is read here is what is DTC's own: dtc.json, the hint branch and the reference
encoder (their config.json is ours). Weights are only ever read from safetensors, checked before any loader runs:
pickle files are refused, a truncated file is named. A folder holding only an fp16 variant
(`<name>.fp16.safetensors`, as public checkpoints' fp16 downloads are) loads like the plain one, cast to the
requested dtype.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.pipelines.deprecated.paint_by_example.image_encoder import PaintByExampleImageEncoder
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_model
from torch import nn
from transformers import BitImageProcessorPil, CLIPImageProcessorPil, CLIPVisionConfig, Dinov2Config, Dinov2Model
from transformers.image_processing_utils import BaseImageProcessor

from pipeline.core.provenance import (
    INDEX_FILE,
    check_provenance,
    paint_by_example_provenance,
    sd_inpaint_provenance,
    unrecorded_provenance,
)
from pipeline.core.weights import SAFETENSORS_SUFFIX, is_pickle, pickle_refused

from .build import DEFAULT_SEED, assemble, cast, dinov2_image_processor, seeded
from .configs import SD15, SD_SCHEDULER_CONFIG
from .dtc import DTC
from .encoders import Dinov2ReferenceEncoder, PaintByExampleReferenceEncoder, reference_encoder_from_config
from .errors import CheckpointError
from .hint import HintBranch
from .unet_inputs import PAINT_BY_EXAMPLE, SD_INPAINT, UNRECORDED_LAYOUT, check_input_layout

FORMAT_VERSION = 1
MODEL_TYPE = "diffuse-to-choose"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
TRANSFORMERS_WEIGHTS = "model"  # also our own components' file name (hint/, image_encoder/)
# Weight variants read when a folder has no plain `<name>.safetensors`, in this order: diffusers' and transformers'
# `variant=` names, which their loaders must be given explicitly.
WEIGHT_VARIANTS = ("fp16", "bf16")

# Image processors by the type name a preprocessor_config.json records. Always the PIL backend: it needs no
# torchvision and gives the same pixels on every machine (transformers falls back to it without torchvision anyway).
IMAGE_PROCESSORS: dict[str, type[BaseImageProcessor]] = {
    "CLIPImageProcessor": CLIPImageProcessorPil,
    "CLIPImageProcessorPil": CLIPImageProcessorPil,
    "CLIPFeatureExtractor": CLIPImageProcessorPil,
    "BitImageProcessor": BitImageProcessorPil,
    "BitImageProcessorPil": BitImageProcessorPil,
}


# ----------------------------------------------------------------------------------------------------------- reading


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"missing file {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def read_safetensors(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """Tensors of one safetensors file, read straight onto `device`; an unreadable file is named in the error."""
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc} (truncated or corrupt safetensors file?)") from exc


def safetensors_weights(folder: Path, stem: str) -> tuple[str | None, list[Path]]:
    """The variant a component folder's weights are stored as (None: plain, which wins) and its safetensors files:
    `<stem>.safetensors` or its shards `<stem>-00001-of-00002.safetensors`, else the same with `<stem>.fp16`, ..."""
    names = sorted(p.name for p in folder.glob(f"*{SAFETENSORS_SUFFIX}")) if folder.is_dir() else []
    for variant in (None, *WEIGHT_VARIANTS):
        tag = f"{stem}.{variant}" if variant else stem
        found = [n for n in names if re.fullmatch(rf"{re.escape(tag)}(-\d+-of-\d+)?\.safetensors", n)]
        if found:
            return variant, [folder / n for n in found]
    pickles = sorted(p for p in folder.iterdir() if is_pickle(p)) if folder.is_dir() else []
    if pickles:
        raise pickle_refused(pickles[0])
    raise CheckpointError(f"missing file {folder / f'{stem}{SAFETENSORS_SUFFIX}'}")


def check_safetensors(files: list[Path]) -> None:
    """Open each file's header (cheap): a truncated or corrupt file fails here with its name, before any loading."""
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read {path}: {exc} (truncated or corrupt safetensors file?)") from exc


def load_image_processor(path: Path) -> BaseImageProcessor:
    """A transformers image processor from its preprocessor_config.json (PIL backend, known types only)."""
    data = read_json(path)
    # Older pipelines (the public Paint-by-Example one among them) record a feature_extractor_type instead.
    kind = data.get("image_processor_type") or data.get("feature_extractor_type")
    cls = IMAGE_PROCESSORS.get(str(kind))
    if cls is None:
        raise CheckpointError(
            f"{path}: image_processor_type {kind!r} is not supported (known: {sorted(IMAGE_PROCESSORS)})"
        )
    for key in ("image_processor_type", "feature_extractor_type", "processor_class"):
        data.pop(key, None)
    return cls(**data)


def _check_loading_info(info: dict[str, Any], where: str) -> None:
    bad = {k: list(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(bad.values()):
        summary = "; ".join(f"{k} {len(v)}, e.g. {v[:3]}" for k, v in bad.items() if v)
        raise CheckpointError(f"{where}: weights do not fit the component's config ({summary})")


def _from_pretrained(loader: Callable[..., Any], folder: Path, stem: str, **kwargs: Any) -> Any:
    """`loader(folder, ...)` (a library's from_pretrained, safetensors only) once our checks passed."""
    variant, files = safetensors_weights(folder, stem)
    check_safetensors(files)
    where = ", ".join(str(f) for f in files)
    try:
        model, info = loader(str(folder), use_safetensors=True, variant=variant, output_loading_info=True, **kwargs)
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{where}: weights do not fit the component's config: {exc}") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot load {folder}: {exc}") from exc
    _check_loading_info(info, where)
    return model


def load_diffusers_model(cls: type, folder: Path, *, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A diffusers model folder (a DTC checkpoint's unet/ or vae/, or a pipeline's), loaded by diffusers itself, which
    knows the older key layouts (e.g. SD VAEs' pre-0.14 attention names). On the meta device no file is read."""
    if device.type == "meta":
        with torch.device("meta"):
            return cast(cls.from_config(read_json(folder / "config.json")), dtype=dtype)
    model = _from_pretrained(cls.from_pretrained, folder, DIFFUSERS_WEIGHTS, torch_dtype=dtype)
    return cast(model, device=device, dtype=dtype)


def load_transformers_model(
    cls: type, config_class: type, folder: Path, *, device: torch.device, dtype: torch.dtype
) -> nn.Module:
    """A transformers model folder, loaded by transformers' `from_pretrained` (which converts older key layouts, e.g.
    CLIP's `vision_model.` prefix or DINOv2's pre-v5 attention names), never from the hub."""
    if device.type == "meta":
        with torch.device("meta"):
            return cast(cls(config_class.from_dict(read_json(folder / "config.json"))), dtype=dtype)
    model = _from_pretrained(cls.from_pretrained, folder, TRANSFORMERS_WEIGHTS, dtype=dtype, local_files_only=True)
    return cast(model, device=device, dtype=dtype)


def load_component(
    build: Callable[[dict[str, Any]], nn.Module], folder: Path, *, device: torch.device, dtype: torch.dtype
) -> nn.Module:
    """A DTC checkpoint's hint/ or image_encoder/: `build(config)` from our config.json, filled with the tensors of
    its model.safetensors (or a variant of it) and nothing else (strict)."""
    config = read_json(folder / "config.json")
    if device.type == "meta":
        with torch.device("meta"):
            return cast(build(config), dtype=dtype)
    _, files = safetensors_weights(folder, TRANSFORMERS_WEIGHTS)
    state = {k: v for path in files for k, v in read_safetensors(path, device).items()}
    # Parameters are created on the meta device and the file's tensors assigned to them, so nothing is randomly
    # initialised first; buffers are created as usual, since the non-persistent ones (CLIP's position ids) are not in
    # the file.
    with init_empty_weights(include_buffers=False):
        module = build(config)
    try:
        module.load_state_dict(state, assign=True)
    except RuntimeError as exc:
        where = ", ".join(str(f) for f in files)
        raise CheckpointError(f"{where}: weights do not fit the component's config: {exc}") from exc
    return cast(module, device=device, dtype=dtype)


def _vae_scale(vae: AutoencoderKL) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _scheduler_config(folder: Path) -> dict[str, Any]:
    path = folder / "scheduler_config.json"
    return read_json(path) if path.is_file() else dict(SD_SCHEDULER_CONFIG)


# --------------------------------------------------------------------------------------------------- DTC checkpoints


def load_checkpoint(root: Path, *, device: torch.device, dtype: torch.dtype, model_id: str) -> DTC:
    """A DTC from a checkpoint directory written by `save_checkpoint`."""
    index = read_json(root / INDEX_FILE)
    version = index.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{root / INDEX_FILE}: format_version {version!r} is not supported (this code reads {FORMAT_VERSION})"
        )
    unet = load_diffusers_model(UNet2DConditionModel, root / "unet", device=device, dtype=dtype)
    vae = load_diffusers_model(AutoencoderKL, root / "vae", device=device, dtype=dtype)
    image_encoder = load_component(reference_encoder_from_config, root / "image_encoder", device=device, dtype=dtype)
    hint = load_component(HintBranch.from_config, root / "hint", device=device, dtype=dtype)
    try:
        input_layout = check_input_layout(index.get("input_layout", UNRECORDED_LAYOUT), str(root / INDEX_FILE))
        provenance = check_provenance(index.get("provenance", unrecorded_provenance()), str(root / INDEX_FILE))
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    return DTC(
        unet=unet,
        vae=vae,
        image_encoder=image_encoder,
        hint=hint,
        image_processor=load_image_processor(root / "image_processor" / "preprocessor_config.json"),
        scheduler_config=_scheduler_config(root / "scheduler"),
        model_id=model_id,
        default_resolution=int(index.get("default_resolution", unet.config.sample_size * _vae_scale(vae))),
        input_layout=input_layout,
        provenance=provenance,
    )


def _save_component(module: nn.Module, config: dict[str, Any], folder: Path) -> None:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_model(module, str(folder / f"{TRANSFORMERS_WEIGHTS}{SAFETENSORS_SUFFIX}"), metadata={"format": "pt"})


def _public_config(config: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def save_checkpoint(dtc: DTC, out: str | Path, *, sampling: dict[str, Any] | None = None) -> Path:
    """Write `dtc` as a checkpoint directory at `out` (which must not exist, or be empty).

    Written to a sibling temporary directory and renamed into place, so readers never see a partial checkpoint.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out} already exists and is not an empty directory")
    if any(p.is_meta for p in dtc.parameters()):
        raise CheckpointError("cannot save a DTC built on the meta device (it has no weights)")
    try:
        # Checked before anything is written: a trainer sets `dtc.provenance` by hand.
        provenance = check_provenance(dtc.provenance, "dtc")
        input_layout = check_input_layout(dtc.input_layout, "dtc")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        dtc.unet.save_pretrained(str(tmp / "unet"), safe_serialization=True)
        dtc.vae.save_pretrained(str(tmp / "vae"), safe_serialization=True)
        _save_component(dtc.image_encoder, dtc.image_encoder.config_dict(), tmp / "image_encoder")
        _save_component(dtc.hint, dtc.hint.config_dict(_public_config(dtc.unet.config)), tmp / "hint")
        dtc.image_processor.save_pretrained(str(tmp / "image_processor"))
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(dtc.scheduler_config, indent=2))
        index = {
            "format_version": FORMAT_VERSION,
            "model_type": MODEL_TYPE,
            "default_resolution": dtc.default_resolution,
            "image_encoder_type": dtc.image_encoder.kind,
            "dtype": str(dtc.dtype).removeprefix("torch."),
            "base_model_id": dtc.model_id,
            "input_layout": input_layout,
            "provenance": provenance,
            "components": ["unet", "vae", "image_encoder", "hint", "image_processor", "scheduler"],
        }
        if sampling:  # the model's own sampling defaults (steps, guidance, scheduler): runs use them unless told
            index["sampling"] = dict(sampling)
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ------------------------------------------------------------------------------------------------ starting points


def build_from_paint_by_example(
    root: Path, *, device: torch.device, dtype: torch.dtype, model_id: str, seed: int = DEFAULT_SEED
) -> DTC:
    """A DTC from a diffusers Paint-by-Example pipeline directory (`save_pretrained(..., safe_serialization=True)`).

    The UNet, VAE, CLIP image encoder (with its mapper and uncond vector), feature extractor and scheduler are PBE's;
    the hint branch is new with zero FiLM, so the DTC produces exactly PBE's images. `model_id` is the source as the
    caller named it, recorded in the provenance.
    """
    index = read_json(root / "model_index.json")
    if index.get("_class_name") != "PaintByExamplePipeline":
        raise CheckpointError(
            f"{root / 'model_index.json'}: _class_name is {index.get('_class_name')!r}, not PaintByExamplePipeline"
        )
    unet = load_diffusers_model(UNet2DConditionModel, root / "unet", device=device, dtype=dtype)
    vae = load_diffusers_model(AutoencoderKL, root / "vae", device=device, dtype=dtype)
    encoder = load_transformers_model(
        PaintByExampleImageEncoder, CLIPVisionConfig, root / "image_encoder", device=device, dtype=dtype
    )
    image_encoder = PaintByExampleReferenceEncoder(encoder)
    return assemble(
        unet=unet,
        vae=vae,
        image_encoder=image_encoder,
        image_processor=load_image_processor(root / "feature_extractor" / "preprocessor_config.json"),
        scheduler_config=_scheduler_config(root / "scheduler"),
        model_id=model_id,
        default_resolution=int(unet.config.sample_size) * _vae_scale(vae),
        input_layout=PAINT_BY_EXAMPLE,
        provenance=paint_by_example_provenance(model_id),
        seed=seed,
    )


def build_from_sd_inpaint(
    sd_root: Path,
    dinov2_root: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    model_id: str,
    reference_size: int = 224,
    seed: int = DEFAULT_SEED,
) -> DTC:
    """The paper's start: an SD-inpainting pipeline directory (its `unet/`, `vae/`, `scheduler/`) + a DINOv2 model
    directory (`config.json`, `model.safetensors`). The projection is new (seeded), the uncond vector zero, FiLM zero.
    The UNet keeps SD-inpainting's input layout (`[noisy, fill-mask, masked latent]`), recorded in the checkpoint.
    """
    for sub in ("unet", "vae"):
        if not (sd_root / sub).is_dir():
            raise CheckpointError(f"{sd_root}: expected an SD-inpainting pipeline directory with a {sub}/ folder")
    unet = load_diffusers_model(UNet2DConditionModel, sd_root / "unet", device=device, dtype=dtype)
    vae = load_diffusers_model(AutoencoderKL, sd_root / "vae", device=device, dtype=dtype)
    config = read_json(dinov2_root / "config.json")
    if config.get("model_type") != "dinov2":
        raise CheckpointError(f"{dinov2_root / 'config.json'}: model_type is {config.get('model_type')!r}, not dinov2")
    backbone = load_transformers_model(Dinov2Model, Dinov2Config, dinov2_root, device=device, dtype=dtype)
    # New parts: the projection (seeded, PyTorch's default Linear init) and the zero uncond vector.
    with seeded(seed, torch.device("cpu")):
        image_encoder = Dinov2ReferenceEncoder(backbone, int(unet.config.cross_attention_dim))
    image_encoder = cast(image_encoder, device=device, dtype=dtype)
    return assemble(
        unet=unet,
        vae=vae,
        image_encoder=image_encoder,
        image_processor=dinov2_image_processor(reference_size),
        scheduler_config=_scheduler_config(sd_root / "scheduler"),
        model_id=model_id,
        default_resolution=int(unet.config.sample_size) * _vae_scale(vae),
        input_layout=SD_INPAINT,
        provenance=sd_inpaint_provenance(str(sd_root), str(dinov2_root)),
        adapter_widths=SD15.adapter_widths,
        seed=seed,
    )
