"""Reliability diagnostics for importance weights, per datapoint.

Both functions take log importance weights ``log_w`` of shape ``[K, B]``: K draws
(particles) for each of B datapoints, as returned by
:func:`metrics.iwae.log_importance_weights`. They are pure functions of the weights
and know nothing of Pyro.

- :func:`effective_sample_size`: Kish's ESS of the self-normalised weights,
  ``(sum_k w_k)^2 / sum_k w_k^2 = exp(2 logsumexp(log_w) - logsumexp(2 log_w))``,
  between 1 (one draw carries all the weight) and K (all weights equal).
- :func:`psis_khat`: the Pareto k-hat of Pareto smoothed importance sampling
  (Vehtari, Simpson, Gelman, Yao & Gabry 2024, JMLR 25(72)): the shape of a
  generalised Pareto distribution fitted to the largest weights. Below 0.5 the
  weights have finite variance; 0.5 to 0.7 the estimate is usable but noisy; above
  0.7 the importance-sampling estimate (and hence an IWAE bound built on it) is not
  to be trusted for any practical K.

Backends for k-hat (the first that imports wins):

1. ``arviz_stats`` >= 0.5 (what ArviZ >= 1.0 uses; installable on Python >= 3.11):
   ``arviz_stats.base.array_stats.psislw(ary, r_eff, axis=-1)``. It follows the
   PSIS-LOO convention: ``ary`` is a log-likelihood and the weights are its negation,
   so we pass ``-log_w``.
2. ``arviz`` < 1 (0.23.x on Python 3.11): ``arviz.psislw(log_weights, reff)`` with the
   draws on the LAST axis; it takes the log weights themselves.

The two use the same algorithm; their tail lengths differ slightly for K >= ~1000,
so k-hat may differ in the second decimal between backends.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import numpy as np
import torch

__all__ = ["MIN_PSIS_DRAWS", "effective_sample_size", "psis_backend_name", "psis_khat"]

#: PSIS fits the generalised Pareto to the largest ceil(min(K/5, 3 sqrt(K))) draws and
#: needs at least 5 of them (arviz_stats refuses fewer); hence K >= 25 for a k-hat.
MIN_PSIS_DRAWS = 25

_ARVIZ_MISSING = (
    "PSIS k-hat needs ArviZ. On Python 3.11 run `pip install \"arviz<1\"` "
    "(ArviZ 1.x needs Python >= 3.12); on Python >= 3.12 `pip install arviz` "
    "(or just `pip install arviz-stats`)."
)


def effective_sample_size(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Effective sample size of the normalised importance weights along ``dim``.

    ``ESS = (sum_k w_k)^2 / sum_k w_k^2 = exp(2 logsumexp(log_w) - logsumexp(2 log_w))``,
    computed in log space so huge or tiny weights do not overflow. For ``log_w`` of
    shape ``[K, B]`` and ``dim=0`` the result has shape ``[B]``, each in ``[1, K]``
    (NaN for a datapoint whose weights are all zero).
    """
    log_w = torch.as_tensor(log_w)
    if not log_w.is_floating_point():
        log_w = log_w.double()
    return torch.exp(2.0 * torch.logsumexp(log_w, dim=dim) - torch.logsumexp(2.0 * log_w, dim=dim))


@functools.lru_cache(maxsize=1)
def _psis_backend() -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """Returns (name, fn) where fn maps log weights [B, K] (draws last) to k-hat [B]."""
    try:
        from arviz_stats.base import array_stats  # arviz >= 1.0 / arviz-stats >= 0.5

        if hasattr(array_stats, "psislw"):

            def khat_new(lw: np.ndarray) -> np.ndarray:
                # arviz_stats negates its input (it expects a log-likelihood).
                return np.asarray(array_stats.psislw(-lw, r_eff=1.0, axis=-1)[1], dtype=float)

            return "arviz_stats", khat_new
    except ImportError:
        pass
    try:
        with warnings.catch_warnings():
            # arviz 0.2x warns about its coming 1.0 refactor on import.
            warnings.simplefilter("ignore", FutureWarning)
            import arviz as az
    except ImportError as err:
        raise ImportError(_ARVIZ_MISSING) from err
    if not hasattr(az, "psislw"):
        raise ImportError(
            f"arviz {getattr(az, '__version__', '?')} has no psislw and arviz_stats "
            f"could not be imported. {_ARVIZ_MISSING}"
        )

    def khat_old(lw: np.ndarray) -> np.ndarray:
        return np.asarray(az.psislw(lw, reff=1.0)[1], dtype=float)

    return f"arviz {az.__version__}", khat_old


def psis_backend_name() -> str:
    """Which library computes k-hat here (raises ImportError if none is installed)."""
    return _psis_backend()[0]


def _khat_rows(fn: Callable[[np.ndarray], np.ndarray], lw: np.ndarray) -> np.ndarray:
    """k-hat for rows of ``lw`` [n, K]; a row the backend rejects gets NaN."""
    try:
        return fn(lw).reshape(lw.shape[0])
    except (ValueError, FloatingPointError, IndexError):
        # e.g. arviz_stats' "All tail values are the same" on heavily tied weights:
        # retry row by row so one odd datapoint does not cost the others their k-hat.
        out = np.full(lw.shape[0], np.nan)
        for i in range(lw.shape[0]):
            try:
                out[i] = float(np.asarray(fn(lw[i : i + 1])).reshape(-1)[0])
            except (ValueError, FloatingPointError, IndexError):
                pass
        return out


def psis_khat(log_w: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Pareto k-hat per datapoint from log importance weights ``[K, B]`` -> ``[B]``.

    A 1-d input ``[K]`` is one datapoint and gives shape ``[1]``. The result is a
    float64 tensor on ``log_w``'s device (a numpy input gives a CPU tensor).

    NaN marks datapoints where k-hat is undefined:
    - fewer than :data:`MIN_PSIS_DRAWS` (25) draws;
    - all weights equal (e.g. the exact posterior as proposal: zero variance, the
      ideal case, but there is no tail to fit);
    - a NaN or +inf log weight;
    - the backend rejecting the row (arviz_stats raises on heavily tied tails).
    Log weights of -inf (zero weight) are kept as negligible weights. ``arviz<1``
    returns +inf when fewer than 5 draws lie strictly above the tail cutoff (ties,
    or a few draws holding all the weight); that is kept: it is a failed proposal.

    Raises ImportError (saying what to ``pip install``) when no ArviZ is available.
    """
    device = log_w.device if isinstance(log_w, torch.Tensor) else torch.device("cpu")
    if isinstance(log_w, torch.Tensor):
        arr = log_w.detach().to("cpu", torch.float64).numpy()
    else:
        arr = np.asarray(log_w, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"log_w must have shape [K, B] (or [K]), got {tuple(arr.shape)}")
    num_draws, batch = arr.shape
    khat = np.full(batch, np.nan)
    if num_draws < MIN_PSIS_DRAWS or batch == 0:
        return torch.from_numpy(khat).to(device)

    lw = arr.T.copy()  # [B, K]: both backends want the draws last
    valid = ~(np.isnan(lw) | np.isposinf(lw)).any(axis=1)
    valid &= np.isfinite(lw).any(axis=1)
    # -inf (zero weight): replace by something far below the row's smallest finite
    # log weight, so it stays at the bottom and never enters the right tail.
    finite_min = np.where(np.isfinite(lw), lw, np.inf).min(axis=1, keepdims=True)
    lw = np.where(np.isneginf(lw), finite_min - 1e3, lw)
    # Constant rows: no tail to fit (arviz returns inf or raises).
    spread = lw.max(axis=1) - lw.min(axis=1)
    scale = np.maximum(1.0, np.abs(lw).max(axis=1))
    valid &= spread > 1e-12 * scale
    if valid.any():
        _, fn = _psis_backend()
        with np.errstate(all="ignore"):
            khat[valid] = _khat_rows(fn, lw[valid])
    return torch.from_numpy(khat).to(device)
