"""What a `model.source` can be, without torch: the driver checks a source before any GPU is requested, and the
model package (which imports torch) uses the same facts when it loads one."""

from __future__ import annotations

from pathlib import Path

# The stages' no-op model: returns the scene crop unchanged (measures the framework's own cost).
NOOP_MODEL = "noop"
# Named configurations built with seeded random weights (pipeline.model.configs.NAMED_CONFIGS is keyed by these).
TINY_MODEL = "tiny"
SMALL_MODEL = "small"
SD15_MODEL = "sd15"
# A FLUX.2 [klein] pipeline of the same architecture as the public ones, tiny and with seeded random weights
# (pipeline.model.klein_build): tests and CPU benchmarks of the second family.
KLEIN_TINY_MODEL = "klein-tiny"
RANDOM_MODELS = (TINY_MODEL, SMALL_MODEL, SD15_MODEL, KLEIN_TINY_MODEL)
# Trained checkpoints shipped inside the package (package data), by name: `demo` is the `small` configuration
# trained on procedural pairs by `make demo-model` (README, "The demo model").
DEMO_MODEL = "demo"
PACKAGED_MODELS: dict[str, Path] = {DEMO_MODEL: Path(__file__).parents[1] / "model" / "weights" / DEMO_MODEL}
# Sources that name a model rather than a checkpoint.
MODEL_NAMES = (NOOP_MODEL, *RANDOM_MODELS, *PACKAGED_MODELS)


def checkpoint_location(source: str) -> str:
    """Where the checkpoint of `source` lies: a packaged model's directory, else `source` itself."""
    packaged = PACKAGED_MODELS.get(source)
    return str(packaged) if packaged is not None else source


# The node-local model cache directory; infra/ sets it on every node.
MODEL_CACHE_ENV = "TRYALL_MODEL_CACHE_DIR"
