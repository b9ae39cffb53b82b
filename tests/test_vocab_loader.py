"""The shared vocabulary and the step-indexed batch loader."""

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from mmvae_zoo.datasets.loader import BatchLoader
from mmvae_zoo.datasets.vocab import PAD, Vocabulary

WORDS = ["small", "large", "red", "blue"]


@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=9), st.integers(0, 4))
def test_encode_decode_round_trip(words, extra):
    vocab = Vocabulary(WORDS)
    ids = vocab.encode(words, len(words) + extra)
    assert ids.dtype == torch.long and ids.shape == (len(words) + extra,)
    assert (ids[len(words):] == vocab.pad_id).all()
    assert vocab.decode(ids) == " ".join(words)


def test_batch_encoding_pads_to_the_longest():
    vocab = Vocabulary(WORDS)
    batch = vocab.encode_batch(["small red", "large blue red"])
    assert batch.tolist() == [[1, 3, 0], [2, 4, 3]]
    assert vocab.decode_batch(batch) == ["small red", "large blue red"]


def test_unknown_word_names_the_word_and_the_vocabulary():
    with pytest.raises(ValueError, match="unknown word 'huge' in 'huge red'; known words: small large red blue"):
        Vocabulary(WORDS).encode("huge red")
    with pytest.raises(ValueError, match="more than the 1 allowed"):
        Vocabulary(WORDS).encode("small red", length=1)
    with pytest.raises(ValueError, match="must be unique"):
        Vocabulary(["a", "a"])
    with pytest.raises(ValueError, match="outside this vocabulary"):
        Vocabulary(WORDS).decode([7])
    with pytest.raises(ValueError, match="unknown word"):
        Vocabulary(WORDS).encode([PAD])



class _Data:
    def __init__(self, n):
        self.images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1)
        self.tokens = np.arange(n, dtype=np.int64).reshape(n, 1)

    def __len__(self):
        return len(self.images)


def test_batches_cover_each_epoch_once_and_depend_only_on_the_step():
    loader = BatchLoader(_Data(10), batch_size=3, seed=5)
    assert loader.steps_per_epoch == 3
    epoch = torch.cat([loader.batch(s)[1] for s in range(3)]).flatten().tolist()
    assert len(set(epoch)) == 9
    fresh = BatchLoader(_Data(10), batch_size=3, seed=5)
    assert torch.equal(fresh.batch(4)[1], loader.batch(4)[1])  # resuming at step 4 sees the same batch
    x, y = loader.batch(0)
    assert x.dtype == torch.float32 and torch.equal(x.flatten() * 255, y.flatten().float())
    assert not torch.equal(loader.batch(3)[1], loader.batch(0)[1])  # a new permutation each epoch


def test_ranks_take_disjoint_slices_of_the_global_batch():
    ranks = [BatchLoader(_Data(12), batch_size=2, seed=1, rank=r, world_size=3) for r in range(3)]
    single = BatchLoader(_Data(12), batch_size=6, seed=1)
    for step in range(4):
        together = torch.cat([loader.batch(step)[1] for loader in ranks])
        assert torch.equal(together, single.batch(step)[1])


def test_too_little_data_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than one batch of 8"):
        BatchLoader(_Data(5), batch_size=8)
    with pytest.raises(ValueError, match="batch size must be a positive integer, got 0"):
        BatchLoader(_Data(5), batch_size=0)
