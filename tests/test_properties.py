"""Property tests (hypothesis): the renderer's relation rule and the IWAE estimator's invariances.

The vocabulary round trip is in test_vocab_loader.py.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from mmvae_zoo.datasets import render
from mmvae_zoo.datasets.render import COLOURS, MATERIALS, SHAPES, SIZES
from mmvae_zoo.datasets.two_objects import RELATION_THRESHOLD, RELATIONS, TwoObjects, true_relations
from mmvae_zoo.metrics import BoundEstimate

OPPOSITE = {"right": "left", "left": "right", "front": "behind", "behind": "front"}
FAST = settings(max_examples=60, deadline=None)

positions = st.tuples(st.floats(-3, 3), st.floats(-3, 3)).map(np.array)


@FAST
@given(positions, positions)
def test_relations_are_antisymmetric_and_never_contradict(a, b):
    """A is REL of B exactly when B is OPPOSITE(REL) of A; A is never both REL and its opposite of B."""
    ab = {RELATIONS[r] for r in true_relations(a, b)}
    ba = {RELATIONS[r] for r in true_relations(b, a)}
    assert ba == {OPPOSITE[r] for r in ab}
    assert not any(OPPOSITE[r] in ab for r in ab)


@FAST
@given(positions, positions)
def test_relation_holds_exactly_beyond_the_threshold(a, b):
    directions = render.ground_directions()
    named = {RELATIONS[r] for r in true_relations(a, b)}
    for rel in RELATIONS:
        along = float((a - b) @ directions[rel])
        if abs(along - RELATION_THRESHOLD) > 1e-9:
            assert (rel in named) == (along > RELATION_THRESHOLD), (rel, along)


@FAST
@given(st.integers(0, 2**32 - 1))
def test_every_sampled_scene_says_what_it_shows(seed):
    """The text names the two objects' attributes in the order the relation word is true for."""
    fields, words = TwoObjects.sample_scene(np.random.default_rng(seed))
    first, relation = int(fields["first"]), int(fields["relation"])
    assert len(words) == 9 and words[4] == RELATIONS[relation]
    assert relation in true_relations(fields["position"][first], fields["position"][1 - first])
    for obj, named in ((first, words[:4]), (1 - first, words[5:])):
        assert named == [list(SIZES)[fields["size"][obj]], list(COLOURS)[fields["colour"][obj]],
                         MATERIALS[fields["material"][obj]], SHAPES[fields["shape"][obj]]]


log_weights = st.integers(2, 40).flatmap(lambda k: st.integers(1, 5).flatmap(
    lambda b: st.lists(st.floats(-50, 50), min_size=k * b, max_size=k * b).map(
        lambda v: torch.tensor(v, dtype=torch.float64).reshape(k, b))))


@FAST
@given(log_weights, st.floats(-1e3, 1e3), st.randoms(use_true_random=False))
def test_bound_invariances(log_w, shift, rnd):
    """logmeanexp: order of particles and of datapoints doesn't matter, a constant factor in every
    weight shifts the value by its log and leaves the ESS alone, and Jensen bounds it by the mean
    and the max of the log weights."""
    est = BoundEstimate.from_log_weights(log_w)
    k, b = log_w.shape
    particles, data = list(range(k)), list(range(b))
    rnd.shuffle(particles)
    rnd.shuffle(data)
    shuffled = BoundEstimate.from_log_weights(log_w[particles][:, data])
    torch.testing.assert_close(shuffled.value, est.value[data], rtol=0, atol=1e-9)
    torch.testing.assert_close(shuffled.ess, est.ess[data], rtol=1e-9, atol=1e-9)
    shifted = BoundEstimate.from_log_weights(log_w + shift)
    torch.testing.assert_close(shifted.value, est.value + shift, rtol=0, atol=1e-9)
    torch.testing.assert_close(shifted.ess, est.ess, rtol=1e-9, atol=1e-9)
    assert (est.value >= log_w.mean(0) - 1e-9).all() and (est.value <= log_w.max(0).values + 1e-9).all()
    assert (est.ess >= 1 - 1e-9).all() and (est.ess <= k + 1e-9).all()


@FAST
@given(st.integers(1, 30), st.floats(-100, 100), st.integers(1, 4))
def test_equal_weights_give_the_weight_and_full_ess(k, value, b):
    est = BoundEstimate.from_log_weights(torch.full((k, b), value, dtype=torch.float64))
    torch.testing.assert_close(est.value, torch.full((b,), value, dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(est.ess, torch.full((b,), float(k), dtype=torch.float64), rtol=1e-9, atol=0)


@FAST
@given(st.integers(2, 30), st.integers(1, 29))
def test_one_dominant_weight_gives_ess_one_and_log_k_penalty(k, where):
    """All mass on one particle: the bound is that log weight minus log K, the ESS is 1."""
    log_w = torch.full((k, 1), -1e4, dtype=torch.float64)
    log_w[where % k] = 0.0
    est = BoundEstimate.from_log_weights(log_w)
    assert math.isclose(float(est.value), -math.log(k), abs_tol=1e-9)
    assert math.isclose(float(est.ess), 1.0, abs_tol=1e-9)
