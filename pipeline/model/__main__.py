"""Command line: inspect a model source, or convert a base model into a DTC checkpoint.

    python -m pipeline.model info SOURCE                 # SOURCE: tiny | sd15 | checkpoint dir | file:// | s3://
    python -m pipeline.model convert --from-paint-by-example DIR --out DIR
    python -m pipeline.model convert --from-sd-inpaint DIR --dinov2 DIR --out DIR
    python -m pipeline.model convert --from-config tiny --out DIR
    python -m pipeline.model convert --from-checkpoint SOURCE --dtype fp16 --out DIR   # a copy in another dtype

Bad input (missing files, pickles, unknown sources) prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from pipeline.core.errors import JobError
from pipeline.core.provenance import hint_branch_trained

from .build import build_random
from .checkpoint import build_from_paint_by_example, build_from_sd_inpaint, save_checkpoint
from .configs import NAMED_CONFIGS
from .device import DTYPES
from .dtc import DTC
from .loading import load_dtc

UNTRAINED_NOTE = (
    "the hint branch was not trained (provenance.trained_parts lacks hint.adapter or hint.film, which start at "
    "zero): the collage cannot change this model's images"
)


def describe(dtc: DTC, source: str) -> dict[str, Any]:
    """Components, shapes that matter to callers, parameter counts, the input layout and where the weights came from
    (with a plain note when the hint branch was not trained: such a model is not yet a DTC)."""
    unet = dtc.unet.config
    trained = hint_branch_trained(dtc.provenance)
    return {
        "source": source,
        "model_id": dtc.model_id,
        "default_resolution": dtc.default_resolution,
        "latent_channels": dtc.latent_channels,
        "vae_scale_factor": dtc.vae_scale_factor,
        "input_layout": dtc.input_layout,
        "provenance": dtc.provenance,
        "hint_branch_trained": trained,
        "note": None if trained else UNTRAINED_NOTE,
        "components": {
            "unet": {"class": type(dtc.unet).__name__, "block_out_channels": list(unet.block_out_channels)},
            "vae": {"class": type(dtc.vae).__name__, "block_out_channels": list(dtc.vae.config.block_out_channels)},
            "image_encoder": {"type": dtc.image_encoder.kind, "cross_attention_dim": unet.cross_attention_dim},
            "image_processor": type(dtc.image_processor).__name__,
            "hint": {"adapter_widths": list(dtc.hint.adapter.widths), "film_modules": len(dtc.hint.films) + 1},
            "scheduler": dtc.scheduler_config.get("_class_name"),
        },
        "parameters": dtc.parameter_counts(),
    }


def _info(args: argparse.Namespace) -> None:
    # On the meta device: structure and counts only, no weights read, no memory used (sd15 is 2.5B parameters).
    dtc = load_dtc(
        args.source,
        device=torch.device("meta"),
        dtype=torch.float32,
        cache_dir=args.cache_dir,
        storage_options=json.loads(args.storage_options) if args.storage_options else None,
    )
    print(json.dumps(describe(dtc, args.source), indent=2))


def _convert(args: argparse.Namespace) -> None:
    device, dtype = torch.device("cpu"), DTYPES[args.dtype]
    if args.from_paint_by_example:
        src = args.from_paint_by_example
        dtc = build_from_paint_by_example(Path(src), device=device, dtype=dtype, model_id=src)
    elif args.from_sd_inpaint:
        if not args.dinov2:
            raise JobError("--from-sd-inpaint needs --dinov2 DIR (the reference encoder's weights)")
        src = args.from_sd_inpaint
        dtc = build_from_sd_inpaint(Path(src), Path(args.dinov2), device=device, dtype=dtype, model_id=src)
    elif args.from_checkpoint:
        # Provenance, input layout and configs travel unchanged; only the weights' dtype changes. Loaded in fp32
        # (the loader serves CPU inference, which it keeps in fp32) and cast here.
        dtc = load_dtc(args.from_checkpoint, device=device, dtype=torch.float32).to(dtype)
    else:
        dtc = build_random(NAMED_CONFIGS[args.from_config], device, dtype)
    sampling = {k: v for k, v in (("steps", args.steps), ("guidance", args.guidance)) if v is not None}
    out = save_checkpoint(dtc, args.out, sampling=sampling)
    print(json.dumps({"checkpoint": str(out), "parameters": dtc.parameter_counts()["total"]}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.model", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print a model's components and parameter counts as JSON")
    info.add_argument("source", help="tiny | sd15 | checkpoint directory | file://... | s3://...")
    info.add_argument("--cache-dir", default=None, help="local cache for remote checkpoints")
    info.add_argument("--storage-options", default=None, help="JSON object passed to fsspec.url_to_fs")
    convert = sub.add_parser("convert", help="write a DTC checkpoint from a base model")
    group = convert.add_mutually_exclusive_group(required=True)
    group.add_argument("--from-paint-by-example", metavar="DIR", help="diffusers PaintByExamplePipeline directory")
    group.add_argument("--from-sd-inpaint", metavar="DIR", help="SD-inpainting pipeline directory (unet/, vae/)")
    group.add_argument("--from-config", choices=sorted(NAMED_CONFIGS), help="random weights of a named size")
    group.add_argument("--from-checkpoint", metavar="SOURCE", help="any model source: re-saved in --dtype")
    convert.add_argument("--dinov2", metavar="DIR", help="DINOv2 model directory (with --from-sd-inpaint)")
    convert.add_argument("--out", required=True, help="new local directory for the checkpoint")
    convert.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="dtype of the saved weights")
    convert.add_argument("--steps", type=int, help="the model's own default steps, recorded in dtc.json")
    convert.add_argument("--guidance", type=float, help="the model's own default guidance, recorded in dtc.json")
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            _info(args)
        else:
            _convert(args)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except json.JSONDecodeError as exc:
        print(f"error: --storage-options is not valid JSON: {exc}", file=sys.stderr)
        return JobError.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
