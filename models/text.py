"""Autoregressive GRU text decoder p(y|z) (VLVAE paper, appendix 5.1)."""
from __future__ import annotations

import torch
from torch import nn

from mmvae_zoo.models.blocks import Block, ResidualMLP


class TextDecoderNet(Block):
    """GRU with a ``hidden``-d state; step t sees the previous word (id 0 = start), the previous
    state and the shared decoder output h. Each state goes through three fully connected layers
    with a residual, batchnorm and dropout to logits over the vocabulary."""

    def __init__(self, vocab_size: int, length: int, cond_dim: int = 200, hidden: int = 200,
                 embed_dim: int = 64, dropout: float = 0.5):
        super().__init__()
        self.length = length
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.init_state = nn.Sequential(nn.Linear(cond_dim, hidden), nn.Tanh())
        self.gru = nn.GRU(embed_dim + cond_dim, hidden, batch_first=True)
        self.readout = ResidualMLP(hidden, hidden, vocab_size, num_layers=3, num_residual=1, dropout=dropout)

    def train(self, mode: bool = True) -> "TextDecoderNet":
        """As ``nn.Module.train``, but the GRU always stays in training mode. With one layer it
        computes the same in both, and cuDNN refuses to backpropagate through a GRU in eval mode:
        the frozen (eval-mode) p(y|z) of Eq. 3 must pass gradients on to q(z|y)."""
        super().train(mode)
        self.gru.train()
        return self

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [..., L, V] of text ``y`` [..., L] given decoder output ``h`` [..., C]."""
        batch = torch.broadcast_shapes(h.shape[:-1], y.shape[:-1])
        h = h.expand(batch + h.shape[-1:]).reshape(-1, h.shape[-1])
        y = y.expand(batch + y.shape[-1:]).reshape(-1, self.length)
        previous = torch.cat([y.new_zeros(y.shape[0], 1), y[:, :-1]], dim=1)
        inputs = torch.cat([self.embed(previous), h.unsqueeze(1).expand(-1, self.length, -1)], dim=-1)
        states, _ = self.gru(inputs, self.init_state(h).unsqueeze(0))
        logits = self.readout(states)
        return logits.reshape(batch + logits.shape[1:])

    @torch.no_grad()
    def sample(self, h: torch.Tensor, greedy: bool = False, temperature: float = 1.0) -> torch.Tensor:
        """Texts [..., L] decoded word by word from ``h`` [..., C]: argmax if ``greedy``, else sampled."""
        flat = h.reshape(-1, h.shape[-1])
        state = self.init_state(flat).unsqueeze(0)
        word = flat.new_zeros(flat.shape[0], dtype=torch.long)
        words = []
        for _ in range(self.length):
            out, state = self.gru(torch.cat([self.embed(word), flat], dim=-1).unsqueeze(1), state)
            logits = self.readout(out[:, 0])
            logits[:, 0] = -float("inf")  # never emit padding inside a fixed-length text
            word = logits.argmax(-1) if greedy else torch.distributions.Categorical(logits=logits / temperature).sample()
            words.append(word)
        return torch.stack(words, dim=-1).reshape(h.shape[:-1] + (self.length,))
