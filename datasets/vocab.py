"""Vocabulary shared by every dataset: words <-> integer ids, padding, batch encoding.

Id 0 is always the padding token ``<pad>``; it marks positions past the end of a text.
Datasets whose texts have a real "blank" word (CelebA's ``-``) put it in ``words``.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

PAD = "<pad>"


class Vocabulary:
    """An ordered list of words; ``ids[word]`` is its index, ``PAD`` is index 0."""

    def __init__(self, words: Iterable[str]):
        words = list(words)
        if PAD in words or len(set(words)) != len(words):
            raise ValueError(f"vocabulary words must be unique and must not contain {PAD!r}: {words}")
        self.words = [PAD] + words
        self.ids = {w: i for i, w in enumerate(self.words)}

    pad_id = 0

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.ids

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.words == other.words

    def __repr__(self) -> str:
        return f"Vocabulary({self.words[1:]})"

    def encode(self, text: str | Sequence[str], length: int | None = None) -> torch.Tensor:
        """Ids of a text (a string of space-separated words, or a list of words), padded to ``length``."""
        words = text.split() if isinstance(text, str) else list(text)
        unknown = [w for w in words if w not in self.ids or w == PAD]
        if unknown:
            raise ValueError(f"unknown word {unknown[0]!r} in {' '.join(words)!r}; known words: {' '.join(self.words[1:])}")
        length = len(words) if length is None else length
        if len(words) > length:
            raise ValueError(f"text {' '.join(words)!r} has {len(words)} words, more than the {length} allowed")
        return torch.tensor([self.ids[w] for w in words] + [self.pad_id] * (length - len(words)), dtype=torch.long)

    def encode_batch(self, texts: Sequence[str | Sequence[str]], length: int | None = None) -> torch.Tensor:
        """A LongTensor [len(texts), length] (length defaults to the longest text)."""
        if length is None:
            length = max(len(t.split() if isinstance(t, str) else t) for t in texts)
        return torch.stack([self.encode(t, length) for t in texts])

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """The text of a sequence of ids, padding dropped."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        bad = [i for i in ids if not 0 <= i < len(self.words)]
        if bad:
            raise ValueError(f"id {bad[0]} is outside this vocabulary of {len(self.words)} words")
        return " ".join(self.words[i] for i in ids if i != self.pad_id)

    def decode_batch(self, ids: torch.Tensor) -> list[str]:
        return [self.decode(row) for row in ids]

    def to_list(self) -> list[str]:
        """The words without padding, as saved in a run's config (``Vocabulary(v.to_list()) == v``)."""
        return self.words[1:]
