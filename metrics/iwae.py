r"""Importance-weighted (IWAE) bounds on log-likelihoods, per datapoint, for any Pyro
model and guide pair.

The maths
---------
For a model p(x, z) and a proposal q(z | x), draw z_1..z_K ~ q(z | x) independently
and set w_k = p(x, z_k) / q(z_k | x). Then (Burda, Grosse & Salakhutdinov 2016,
"Importance Weighted Autoencoders")

    log p(x) >= L_K = E[ log (1/K) sum_k w_k ],

L_1 is the ELBO, L_K increases with K, and L_K -> log p(x) as K -> infinity when the
weights have finite variance. :func:`iwae_log_likelihood` returns the one-sample
estimate ``logsumexp_k(log w_k) - log K`` for each datapoint; it is itself a
stochastic lower bound (its expectation is L_K).

Nothing here is specific to the unconditional marginal: the weights are whatever the
model's joint density over the guide's density is. With a model whose prior site
draws z from q(z | y) (a text encoder) instead of p(z), and the image encoder
q(z | x) as the guide, the same code estimates Eq. 6 of Cremer & Kushman's VLVAE
paper,

    log p(x | y) >= E_{q(z|x)}[ log p(x | z) + log q(z | y) - log q(z | x) ],

in its importance-weighted form (logmeanexp over K draws); likewise JMVAE's
conditional log p(x | w) with q(z | w) in place of the prior. The caller composes
that model (e.g. a small function that samples "z" from the text encoder's
distribution and then observes the image); this module never imports the project's
``models/`` or ``guides/``.

Conventions the model and guide must follow
-------------------------------------------
- ``model(*args, **kwargs)`` and ``guide(*args, **kwargs)`` are plain callables called
  with the same arguments.
- Every per-datapoint sample site sits in ``pyro.plate("data", B, dim=-1)``. Vector
  latents declare their event dim (``.to_event(1)``: z has event shape [D]); observed
  sites declare theirs too, so each site's ``log_prob`` has batch shape [B] (or one
  broadcastable to it).
- Models and guides cope with extra leading particle dims: here both run inside
  ``pyro.plate("particles", k, dim=-2)``, so z has shape [k, B, D] and every
  ``log_prob`` has shape [k, B] (or [k, 1]). No plate of the model may use dim -2 or
  further left.
- Sites outside the data plate are global: their log-prob enters every datapoint's
  weight once per particle (broadcast over data points). Then each datapoint's value
  bounds log p(x_i, globals) rather than log p(x_i), and the per-datapoint values do
  not add up to a bound on the batch.
- Every latent (unobserved) sample site of the model must also be in the guide: a
  latent the model samples itself would enter the weight with its density but
  without its proposal density, which is no bound at all. A ValueError says which.
- No scaling. The bound holds only for the model's real density: weights w_x, w_y,
  KL annealing, ``poutine.scale`` or a subsampled plate make it meaningless. The
  project's models take weights of 1 when called for evaluation; any site with
  ``scale != 1`` in the model or guide trace raises a ValueError (no attempt is
  made to undo a scaling).
- Masks are honoured: ``poutine.mask``/``obs_mask`` entries that are masked out add
  zero to the log weight (a missing observation is marginalised out, as intended).

Chunking and randomness
-----------------------
The K particles are drawn in chunks of ``chunk_size`` (one vectorised pass per
chunk, no Python loop over particles), under ``torch.no_grad()``, and the [k, B]
chunks are concatenated along the particle dim (K x B floats is small even for K =
5000). Chunking only regroups the draws: for a guide whose chunk of k draws consumes
the same random numbers as the corresponding rows of one K-draw pass, chunked and
unchunked give the same log weights. torch's CPU normal sampler has this property
when each particle's draw has a multiple of 16 elements (B * D % 16 == 0); otherwise
the chunks are different (equally valid) random draws. Pyro's validation (if
enabled) runs on a first pass of ``VALIDATION_PARTICLES`` draws only (its checks of a
large observation cost about as much as the likelihood itself), the rest unchecked.

Speed: on CPU the cost is the model's own compute on K x B particle rows (measured
at the plain-PyTorch floor by ``bench/bench_iwae.py``); vectorising removes the Python
and Pyro overhead of K separate passes, which matters most for small batches and on
GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import pyro
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from pyro.infer.util import is_validation_enabled

from mmvae_zoo.metrics.diagnostics import effective_sample_size, psis_khat

__all__ = [
    "BoundEstimate",
    "DATA_PLATE",
    "PARTICLE_DIM",
    "PARTICLE_PLATE",
    "iwae_log_likelihood",
    "log_importance_weights",
]

VALIDATION_PARTICLES = 2  # particles of the validated first pass (2: a particle dim of size 1 would broadcast)
PARTICLE_PLATE = "particles"
PARTICLE_DIM = -2
DATA_PLATE = "data"


def _in_particle_plate(fn: Callable, k: int) -> Callable:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with pyro.plate(PARTICLE_PLATE, k, dim=PARTICLE_DIM):
            return fn(*args, **kwargs)

    return wrapped


def _sample_sites(trace: poutine.Trace) -> list[tuple[str, dict]]:
    return [(name, site) for name, site in trace.nodes.items() if site["type"] == "sample"]


def _check_unscaled(trace: poutine.Trace, role: str) -> None:
    for name, site in _sample_sites(trace):
        scale = site["scale"]
        unscaled = (
            bool(torch.all(scale == 1.0)) if isinstance(scale, torch.Tensor) else scale == 1.0
        )
        if not unscaled:
            shown = scale if not isinstance(scale, torch.Tensor) or scale.numel() == 1 else "tensor"
            raise ValueError(
                f"site '{name}' in the {role} trace has scale {shown} != 1: an importance-"
                f"weighted bound is only valid for the unscaled model. Call the {role} with "
                "likelihood/KL weights of 1 (no poutine.scale, no subsampled plate) for "
                "evaluation."
            )


def _data_size(traces: Sequence[poutine.Trace]) -> int | None:
    for trace in traces:
        for _, site in _sample_sites(trace):
            for frame in site["cond_indep_stack"]:
                if frame.name == DATA_PLATE and frame.size is not None:
                    return int(frame.size)
    return None


def _as_particles_by_data(log_prob: torch.Tensor, name: str, role: str) -> torch.Tensor:
    """A site's log_prob as a 2-d tensor broadcastable to [k, B]."""
    if log_prob.dim() > 2:
        raise ValueError(
            f"site '{name}' in the {role} has log_prob of shape {tuple(log_prob.shape)}; "
            f"expected [particles, data] = [k, B]. Declare its event dims with "
            f".to_event(...) and put it in pyro.plate('{DATA_PLATE}', B, dim=-1)."
        )
    while log_prob.dim() < 2:
        log_prob = log_prob.unsqueeze(0)
    return log_prob


def _log_weights_pass(
    model: Callable, guide: Callable, k: int, args: tuple, kwargs: dict
) -> torch.Tensor:
    """One vectorised pass with k particles -> log weights [k, B]."""
    guide_trace = poutine.trace(_in_particle_plate(guide, k)).get_trace(*args, **kwargs)
    model_trace = poutine.trace(
        poutine.replay(_in_particle_plate(model, k), trace=guide_trace)
    ).get_trace(*args, **kwargs)
    guide_trace = prune_subsample_sites(guide_trace)
    model_trace = prune_subsample_sites(model_trace)
    _check_unscaled(guide_trace, "guide")
    _check_unscaled(model_trace, "model")
    for name, site in _sample_sites(model_trace):
        if not site["is_observed"] and name not in guide_trace.nodes:
            raise ValueError(
                f"latent site '{name}' of the model is not sampled by the guide: the "
                "guide must propose every unobserved model site."
            )
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()

    terms = [
        _as_particles_by_data(site["log_prob"], name, "model")
        for name, site in _sample_sites(model_trace)
    ] + [
        -_as_particles_by_data(site["log_prob"], name, "guide")
        for name, site in _sample_sites(guide_trace)
    ]
    if not terms:
        raise ValueError("the model and guide have no sample sites")
    batch = _data_size([model_trace, guide_trace])
    try:
        shape = torch.broadcast_shapes(*(t.shape for t in terms))
        if batch is not None:
            shape = torch.broadcast_shapes(shape, (1, batch))
        shape = torch.broadcast_shapes(shape, (k, 1))
    except RuntimeError as err:
        shapes = {n: tuple(s["log_prob"].shape) for n, s in _sample_sites(model_trace)}
        raise ValueError(
            f"site log_probs do not broadcast to [particles={k}, data]: {shapes}"
        ) from err
    if shape[0] != k:
        raise ValueError(f"log weights have {shape[0]} particles, expected {k}")
    log_w = terms[0].expand(shape).clone()
    for term in terms[1:]:
        log_w += term
    return log_w


def log_importance_weights(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_particles: int,
    chunk_size: int | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Per-datapoint log importance weights ``log p(x, z_k) - log q(z_k | x)``.

    Args:
        model, guide: Pyro callables following the conventions in the module docstring.
        *args, **kwargs: passed unchanged to both (``num_particles`` and
            ``chunk_size`` are reserved names).
        num_particles: K, the number of draws z_k ~ q per datapoint.
        chunk_size: draws per vectorised pass (None: all K at once). Bounds memory:
            a pass holds tensors of shape [chunk_size, B, ...]. On CPU, passes of
            roughly 25-100 particles x 100 datapoints were also the fastest (cache).
            Pyro validation, when enabled, runs on a first pass of
            ``VALIDATION_PARTICLES`` particles only.

    Returns:
        Tensor [K, B] on the device the model computes on, without grad.

    Raises:
        ValueError: a site has ``scale != 1``, a model latent is missing from the guide,
            or a site's log_prob is not [particles, data].
    """
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}")
    chunk = num_particles if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    chunks = []
    with torch.no_grad():
        if is_validation_enabled():
            # Pyro's argument and support checks cost about a pass's worth of elementwise work on
            # large observations: they run on a first pass of a few particles, the rest unchecked.
            chunks.append(_log_weights_pass(model, guide, min(VALIDATION_PARTICLES, num_particles), args, kwargs))
        with pyro.validation_enabled(False):
            done = sum(len(c) for c in chunks)
            while done < num_particles:
                k = min(chunk, num_particles - done)
                chunks.append(_log_weights_pass(model, guide, k, args, kwargs))
                done += k
    if len(chunks) == 1:
        return chunks[0]
    batch = max(c.shape[1] for c in chunks)
    return torch.cat([c.expand(c.shape[0], batch) for c in chunks], dim=0)


@dataclass
class BoundEstimate:
    """An importance-weighted bound per datapoint with its reliability diagnostics.

    Attributes:
        value: [B] ``logsumexp_k log w_k - log K``, a stochastic lower bound on each
            datapoint's log-likelihood (nats).
        ess: [B] effective sample size of the normalised weights, in [1, K].
        khat: [B] PSIS Pareto k-hat (float64; NaN where undefined, e.g. K < 25 or
            all weights equal). Above 0.7 the bound for that datapoint is unreliable.
        num_particles: K.
    """

    value: torch.Tensor
    ess: torch.Tensor
    khat: torch.Tensor
    num_particles: int

    @classmethod
    def from_log_weights(cls, log_w: torch.Tensor) -> "BoundEstimate":
        """Builds the estimate from log weights [K, B]."""
        if log_w.dim() != 2:
            raise ValueError(f"log_w must be [K, B], got {tuple(log_w.shape)}")
        num = log_w.shape[0]
        value = torch.logsumexp(log_w, dim=0) - math.log(num)
        return cls(
            value=value,
            ess=effective_sample_size(log_w, dim=0),
            khat=psis_khat(log_w),
            num_particles=num,
        )

    @classmethod
    def concatenate(cls, estimates: Sequence["BoundEstimate"]) -> "BoundEstimate":
        """Joins estimates of several batches (same K) into one over all datapoints."""
        if not estimates:
            raise ValueError("nothing to concatenate")
        nums = {e.num_particles for e in estimates}
        if len(nums) != 1:
            raise ValueError(f"estimates use different numbers of particles: {sorted(nums)}")
        return cls(
            value=torch.cat([e.value for e in estimates]),
            ess=torch.cat([e.ess for e in estimates]),
            khat=torch.cat([e.khat for e in estimates]),
            num_particles=nums.pop(),
        )

    def summary(self) -> dict[str, float]:
        """Batch figures as plain floats.

        Keys: ``mean`` (mean value over datapoints), ``sem`` (its standard error,
        std / sqrt(B), NaN for B = 1), ``ess`` (mean ESS), ``khat`` (mean k-hat over
        datapoints where it is defined, NaN if none), ``khat_above_0.7`` (share of those
        datapoints with k-hat > 0.7), ``num_particles``, ``num_datapoints``.
        """
        value = self.value.detach().double().cpu()
        count = value.numel()
        sem = float(value.std(unbiased=True) / math.sqrt(count)) if count > 1 else math.nan
        khat = self.khat.detach().double().cpu()
        defined = khat[~torch.isnan(khat)]
        above = float((defined > 0.7).double().mean()) if defined.numel() else math.nan
        return {
            "mean": float(value.mean()) if count else math.nan,
            "sem": sem,
            "ess": float(self.ess.detach().double().mean()) if count else math.nan,
            "khat": float(defined.mean()) if defined.numel() else math.nan,
            "khat_above_0.7": above,
            "num_particles": float(self.num_particles),
            "num_datapoints": float(count),
        }


def iwae_log_likelihood(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_particles: int,
    chunk_size: int | None = None,
    **kwargs: Any,
) -> BoundEstimate:
    """IWAE estimate of log p(x) per datapoint, with ESS and PSIS k-hat.

    ``value = logsumexp_k(log w_k) - log K`` with ``log w_k`` from
    :func:`log_importance_weights` (same arguments; see the module docstring for the
    maths and the conventions). With K = 1 it is a one-sample ELBO.
    """
    log_w = log_importance_weights(
        model, guide, *args, num_particles=num_particles, chunk_size=chunk_size, **kwargs
    )
    return BoundEstimate.from_log_weights(log_w)
