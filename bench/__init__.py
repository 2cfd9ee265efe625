"""Benchmark of the pipeline (``make bench``): prints figures, asserts nothing."""
