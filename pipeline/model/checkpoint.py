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
checkpoint written before they were recorded. Weights are only ever read with safetensors: pickle formats are refused,
never loaded. A component folder holding only an fp16 variant (`<name>.fp16.safetensors`, as public checkpoints'
fp16 downloads are) loads like the plain one, cast to the requested dtype.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.pipelines.deprecated.paint_by_example.image_encoder import PaintByExampleImageEncoder
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
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
from pipeline.core.weights import is_pickle, pickle_refused

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
TRANSFORMERS_WEIGHTS = "model"
# Weight variants read when a folder has no plain `<name>.safetensors`, in this order (diffusers' and transformers'
# `variant=` names: `<name>.fp16.safetensors`, shards indexed by `<name>.safetensors.index.fp16.json`).
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


def _variant_files(folder: Path, stem: str, variant: str | None) -> list[Path]:
    """The safetensors file(s) of one variant (None: the plain one), or [] if the folder has none of it."""
    tag = f".{variant}" if variant else ""
    single = folder / f"{stem}{tag}.safetensors"
    if single.is_file():
        return [single]
    index = folder / f"{stem}.safetensors.index{tag}.json"
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: no weight_map")
        shards = [folder / name for name in sorted(set(weight_map.values()))]
        for shard in shards:
            if not shard.is_file():
                raise CheckpointError(f"missing file {shard} (listed in {index})")
        return shards
    return []


def weight_variant(folder: Path, stem: str) -> str | None:
    """The variant a component folder's weights are stored as: None for `<stem>.safetensors` (or its shards), else
    the first of WEIGHT_VARIANTS present; the plain files win when both exist."""
    for variant in (None, *WEIGHT_VARIANTS):
        if _variant_files(folder, stem, variant):
            return variant
    return None


def weight_files(folder: Path, stem: str) -> list[Path]:
    """The safetensors file(s) of a component folder: `<stem>.safetensors`, shards listed in its index, or the same
    for a variant (`<stem>.fp16.safetensors`, ...) when there are no plain ones."""
    for variant in (None, *WEIGHT_VARIANTS):
        files = _variant_files(folder, stem, variant)
        if files:
            return files
    single = folder / f"{stem}.safetensors"
    pickles = sorted(p for p in folder.iterdir() if is_pickle(p)) if folder.is_dir() else []
    if pickles:
        raise pickle_refused(pickles[0])
    raise CheckpointError(f"missing file {single}")


def read_safetensors(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """Tensors of one safetensors file, read straight onto `device`; an unreadable file is named in the error."""
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc} (truncated or corrupt safetensors file?)") from exc


def read_state_dict(files: list[Path], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v for path in files for k, v in read_safetensors(path, device).items()}


def _has_non_persistent_buffers(module: nn.Module) -> bool:
    return any(m._non_persistent_buffers_set for m in module.modules())


def materialise(
    factory: Callable[[], nn.Module],
    files: list[Path],
    *,
    device: torch.device,
    dtype: torch.dtype,
    prefix: str = "",
) -> nn.Module:
    """Build a module with `factory` and fill it with the weights in `files` (keys prefixed with `prefix`).

    The module is created on the meta device and the loaded tensors are assigned to it, so a 1B-parameter model is
    never randomly initialised just to be overwritten. Modules with non-persistent buffers (CLIP's position ids) are
    built normally instead, since those buffers are not in the file. On the meta device no file is read.
    """
    if device.type == "meta":
        with torch.device("meta"):
            return cast(factory(), dtype=dtype)
    with torch.device("meta"):
        module = factory()
    assign = not _has_non_persistent_buffers(module)
    if not assign:
        module = factory()
    state = read_state_dict(files, device)
    state = {prefix + k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    where = ", ".join(str(f) for f in files)
    try:
        missing, unexpected = module.load_state_dict(state, strict=False, assign=assign)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: weights do not fit the component's config: {exc}") from exc
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: weights do not fit the component's config (missing {len(missing)} keys, e.g. {missing[:3]}; "
            f"unexpected {len(unexpected)}, e.g. {unexpected[:3]})"
        )
    return cast(module, device=device, dtype=dtype)


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


def _diffusers_component(cls: type, folder: Path, device: torch.device, dtype: torch.dtype) -> nn.Module:
    config = read_json(folder / "config.json")
    return materialise(
        lambda: cls.from_config(config), weight_files(folder, DIFFUSERS_WEIGHTS), device=device, dtype=dtype
    )


def check_safetensors(files: list[Path]) -> None:
    """Open each file's header (cheap): a truncated or corrupt file fails here with its name, before any loading."""
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read {path}: {exc} (truncated or corrupt safetensors file?)") from exc


def _check_loading_info(info: dict[str, Any], folder: Path) -> None:
    bad = {k: list(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(bad.values()):
        summary = "; ".join(f"{k} {len(v)}, e.g. {v[:3]}" for k, v in bad.items() if v)
        raise CheckpointError(f"{folder}: weights do not fit the component's config ({summary})")


def external_diffusers_model(cls: type, folder: Path, *, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A diffusers model folder written by diffusers (any version): loaded by diffusers itself, which knows the older
    key layouts (e.g. SD VAEs' pre-0.14 attention names), after our own checks for pickles and corrupt files."""
    if device.type == "meta":
        config = read_json(folder / "config.json")
        with torch.device("meta"):
            return cast(cls.from_config(config), dtype=dtype)
    check_safetensors(weight_files(folder, DIFFUSERS_WEIGHTS))
    # low_cpu_mem_usage needs `accelerate`, which we do not depend on; saying so explicitly keeps the logs quiet.
    model, info = cls.from_pretrained(
        str(folder),
        use_safetensors=True,
        variant=weight_variant(folder, DIFFUSERS_WEIGHTS),
        torch_dtype=dtype,
        output_loading_info=True,
        low_cpu_mem_usage=False,
    )
    _check_loading_info(info, folder)
    return cast(model, device=device, dtype=dtype)


def external_transformers_model(
    factory: Callable[[dict[str, Any]], nn.Module],
    loader: Callable[..., Any],
    folder: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> nn.Module:
    """A transformers model folder: loaded by transformers' `from_pretrained` (which converts older key layouts, e.g.
    CLIP's `vision_model.` prefix or DINOv2's pre-v5 attention names), never from pickles, never from the hub."""
    if device.type == "meta":
        config = read_json(folder / "config.json")
        with torch.device("meta"):
            return cast(factory(config), dtype=dtype)
    check_safetensors(weight_files(folder, TRANSFORMERS_WEIGHTS))
    model, info = loader(
        str(folder),
        use_safetensors=True,
        variant=weight_variant(folder, TRANSFORMERS_WEIGHTS),
        local_files_only=True,
        dtype=dtype,
        output_loading_info=True,
    )
    _check_loading_info(info, folder)
    return cast(model, device=device, dtype=dtype)


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
    unet = _diffusers_component(UNet2DConditionModel, root / "unet", device, dtype)
    vae = _diffusers_component(AutoencoderKL, root / "vae", device, dtype)
    enc_config = read_json(root / "image_encoder" / "config.json")
    image_encoder = materialise(
        lambda: reference_encoder_from_config(enc_config),
        weight_files(root / "image_encoder", TRANSFORMERS_WEIGHTS),
        device=device,
        dtype=dtype,
    )
    hint_config = read_json(root / "hint" / "config.json")
    hint = materialise(
        lambda: HintBranch.from_config(hint_config),
        weight_files(root / "hint", TRANSFORMERS_WEIGHTS),
        device=device,
        dtype=dtype,
    )
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


def _save_weights(module: nn.Module, path: Path) -> None:
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})


def _public_config(config: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def save_checkpoint(dtc: DTC, out: str | Path) -> Path:
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
        for name, model in (("unet", dtc.unet), ("vae", dtc.vae)):
            (tmp / name).mkdir()
            model.save_config(str(tmp / name))
            _save_weights(model, tmp / name / f"{DIFFUSERS_WEIGHTS}.safetensors")
        (tmp / "image_encoder").mkdir()
        (tmp / "image_encoder" / "config.json").write_text(json.dumps(dtc.image_encoder.config_dict(), indent=2))
        _save_weights(dtc.image_encoder, tmp / "image_encoder" / f"{TRANSFORMERS_WEIGHTS}.safetensors")
        (tmp / "hint").mkdir()
        hint_config = dtc.hint.config_dict(_public_config(dtc.unet.config))
        (tmp / "hint" / "config.json").write_text(json.dumps(hint_config, indent=2))
        _save_weights(dtc.hint, tmp / "hint" / f"{TRANSFORMERS_WEIGHTS}.safetensors")
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
    unet = external_diffusers_model(UNet2DConditionModel, root / "unet", device=device, dtype=dtype)
    vae = external_diffusers_model(AutoencoderKL, root / "vae", device=device, dtype=dtype)
    encoder = external_transformers_model(
        lambda cfg: PaintByExampleImageEncoder(CLIPVisionConfig.from_dict(cfg)),
        PaintByExampleImageEncoder.from_pretrained,
        root / "image_encoder",
        device=device,
        dtype=dtype,
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
    unet = external_diffusers_model(UNet2DConditionModel, sd_root / "unet", device=device, dtype=dtype)
    vae = external_diffusers_model(AutoencoderKL, sd_root / "vae", device=device, dtype=dtype)
    config = read_json(dinov2_root / "config.json")
    if config.get("model_type") != "dinov2":
        raise CheckpointError(f"{dinov2_root / 'config.json'}: model_type is {config.get('model_type')!r}, not dinov2")
    backbone = external_transformers_model(
        lambda cfg: Dinov2Model(Dinov2Config.from_dict(cfg)),
        Dinov2Model.from_pretrained,
        dinov2_root,
        device=device,
        dtype=dtype,
    )
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
