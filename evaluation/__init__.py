"""Evaluating trained runs: the papers' importance-weighted bounds and tables, the correctness
classifiers (``evaluation.correctness``), figures and captioned image grids (``evaluation.plots``)."""
