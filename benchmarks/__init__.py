"""Benchmarks: the model (naive reference vs our fast path), the whole pipeline against the model alone, the CPU
stages per pair, and memory as a run grows. `python -m benchmarks` runs them and writes one JSON report.

Modules: `machine` (what a figure was measured on), `measure` (CPU-time and wall-time medians, process memory),
`images` (photo-like test inputs), `cpu_stages`, `naive` (the paper-settings reference sampler), `model`,
`pipeline` (end-to-end efficiency, framework overhead, memory), `report` (the table).
"""
