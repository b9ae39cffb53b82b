"""Evaluating trained runs: the VLVAE's importance-weighted bounds and the paper's tables."""
