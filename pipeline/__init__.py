"""tryall: batch virtual try-all with Diffuse-to-Choose on Ray Data."""
