"""Evaluation metrics for any Pyro model and guide pair.

- :mod:`metrics.iwae`: importance-weighted bounds per datapoint
  (:func:`iwae_log_likelihood`, :func:`log_importance_weights`, :class:`BoundEstimate`).
- :mod:`metrics.diagnostics`: effective sample size and PSIS Pareto k-hat of
  importance weights.

This package imports none of ``models/``, ``guides/``, ``datasets/``, ``training/`` and ``evaluation/``
(tests/test_layering.py checks it); the correctness classifiers are ``evaluation.correctness``.
"""

from mmvae_zoo.metrics.diagnostics import effective_sample_size, psis_backend_name, psis_khat
from mmvae_zoo.metrics.iwae import BoundEstimate, iwae_log_likelihood, log_importance_weights

__all__ = [
    "BoundEstimate",
    "effective_sample_size",
    "iwae_log_likelihood",
    "log_importance_weights",
    "psis_backend_name",
    "psis_khat",
]
