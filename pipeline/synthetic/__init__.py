"""Procedurally drawn products, rooms and photo-like images: the demo's inputs, the tests' and benchmarks'."""
