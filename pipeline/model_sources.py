"""What a `model.source` can be, without torch: the driver checks a source before any GPU is requested, and the
model package (which imports torch) uses the same facts when it loads one."""

from __future__ import annotations

# The stages' no-op model: returns the scene crop unchanged (measures the framework's own cost).
NOOP_MODEL = "noop"
# Named configurations built with seeded random weights (pipeline.model.configs.NAMED_CONFIGS is keyed by these).
TINY_MODEL = "tiny"
SMALL_MODEL = "small"
SD15_MODEL = "sd15"
RANDOM_MODELS = (TINY_MODEL, SMALL_MODEL, SD15_MODEL)
# Sources that name a model rather than a checkpoint.
MODEL_NAMES = (NOOP_MODEL, *RANDOM_MODELS)

# Pickle-format checkpoint files, refused everywhere: tryall never unpickles a file.
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")

# The node-local model cache directory; infra/ sets it on every node.
MODEL_CACHE_ENV = "TRYALL_MODEL_CACHE_DIR"
