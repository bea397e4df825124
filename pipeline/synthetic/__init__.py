"""Procedurally drawn images: the demo's inputs, the tests' and the benchmarks'.

- `images`: drawing primitives, photo-like noise pictures, `encode` to bytes, awkward bytes for decoders.
- `samples`: products and rooms, and the demo's sample set (`write_sample_set`) with its manifests.
- `procedural`: training pairs with ground truth (`python -m pipeline.synthetic.procedural`).
"""
