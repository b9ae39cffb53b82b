"""Network blocks shared by the models and the guides (VLVAE paper, appendix 5.1).

Every block accepts inputs with any number of leading batch dimensions (e.g. particles
[K, B, ...]): they are flattened for batchnorm / convolutions and restored afterwards.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._pytree import tree_map_only

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # --precision: the dtype the networks' blocks compute in


class Block(nn.Module):
    """A plain tensor network, no distributions in it: the unit that ``set_precision`` runs at lower
    precision and ``compile_blocks`` compiles.

    With ``compute_dtype`` set, the block runs under ``torch.autocast`` (matrix products and
    convolutions in that dtype) and hands fp32 tensors back. So whatever a Pyro program does with
    a block's output (likelihoods, KLs, flow log-determinants, the sums over pixels) is fp32.
    """

    compute_dtype: torch.dtype | None = None

    def __call__(self, *args, **kwargs):
        if self.compute_dtype is None:
            return super().__call__(*args, **kwargs)
        device = next(a.device for a in args if isinstance(a, torch.Tensor))
        with torch.autocast(device.type, dtype=self.compute_dtype):
            out = super().__call__(*args, **kwargs)
        return tree_map_only(torch.Tensor, lambda t: t.float() if t.is_floating_point() else t, out)


def flat_apply(net: nn.Module, x: torch.Tensor, event_dims: int) -> torch.Tensor:
    """``net`` applied to ``x`` with all but its last ``event_dims`` dimensions flattened into one."""
    batch = x.shape[: x.dim() - event_dims]
    y = net(x.reshape((-1,) + x.shape[x.dim() - event_dims:]))
    return y.reshape(batch + y.shape[1:])


class ResidualMLP(Block):
    """``num_layers`` fully connected layers with batchnorm: an input layer, hidden layers of
    ``width`` (the last ``num_residual`` of them wrapped in residual connections), an output layer."""

    def __init__(self, in_dim: int, width: int, out_dim: int, num_layers: int, num_residual: int,
                 dropout: float = 0.0):
        super().__init__()
        if not 0 <= num_residual <= num_layers - 2:
            raise ValueError(f"{num_layers} layers have {num_layers - 2} hidden layers, fewer than {num_residual} residuals")
        self.inp = nn.Linear(in_dim, width)
        self.hidden = nn.ModuleList(
            nn.Sequential(nn.BatchNorm1d(width), nn.LeakyReLU(0.2), nn.Dropout(dropout), nn.Linear(width, width))
            for _ in range(num_layers - 2)
        )
        self.first_residual = num_layers - 2 - num_residual
        self.out = nn.Sequential(nn.BatchNorm1d(width), nn.LeakyReLU(0.2), nn.Linear(width, out_dim))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for i, layer in enumerate(self.hidden):
            h = h + layer(h) if i >= self.first_residual else layer(h)
        return self.out(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return flat_apply(self._forward, x, 1)


class ConvResBlock(nn.Module):
    """CycleGAN residual block: x + IN(conv(relu(IN(conv(x)))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect"),
            nn.InstanceNorm2d(channels, affine=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect"),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x):
        return x + self.body(x)


def conv_norm_relu(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, padding_mode="reflect"),
        nn.InstanceNorm2d(cout, affine=True),
        nn.ReLU(inplace=True),
    )


def up_norm_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
        nn.InstanceNorm2d(cout, affine=True),
        nn.ReLU(inplace=True),
    )


class ImageEncoderNet(Block):
    """CycleGAN-like image encoder: stem conv, ``num_down`` stride-2 convs doubling the channels,
    ``num_blocks`` residual blocks with instance norm, flattened and mapped to ``out_dim``."""

    def __init__(self, image_shape, channels: int, num_down: int, out_dim: int = 200,
                 stem_kernel: int = 7, stem_stride: int = 1, num_blocks: int = 3):
        super().__init__()
        c, h, w = image_shape
        stride = stem_stride * 2**num_down
        if h % stride or w % stride:
            raise ValueError(f"image size {h}x{w} is not divisible by the encoder's total stride {stride}; "
                             f"pick an image size that is a multiple of {stride}")
        layers = [conv_norm_relu(c, channels, stem_kernel, stem_stride)]
        for i in range(num_down):
            layers.append(conv_norm_relu(channels * 2**i, channels * 2 ** (i + 1), 3, 2))
        top = channels * 2**num_down
        layers += [ConvResBlock(top) for _ in range(num_blocks)]
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Linear(top * (h // stride) * (w // stride), out_dim)
        self.image_shape = tuple(image_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-3:]) != self.image_shape:
            raise ValueError(f"expected images of shape {list(self.image_shape)}, got {list(x.shape[-3:])}")
        return flat_apply(lambda v: self.fc(self.conv(v).flatten(1)), x, 3)


class ImageDecoderNet(Block):
    """Image decoder (paper 5.1): linear to ``10 * grid^2`` (1000 for grid 10), reshaped to 10
    channels, resized to the resolution of the encoder's residual blocks, then a ResNet with
    instance norm and ``num_up`` upsamplings; outputs per-pixel logits of the Beta's alpha."""

    GRID_CHANNELS = 10

    def __init__(self, image_shape, channels: int, num_up: int, in_dim: int = 200, grid: int = 10,
                 stem_kernel: int = 7, stem_stride: int = 1, num_blocks: int = 3):
        super().__init__()
        c, h, w = image_shape
        stride = stem_stride * 2**num_up
        self.base_hw = (h // stride, w // stride)
        self.grid = grid
        top = channels * 2**num_up
        self.fc = nn.Linear(in_dim, self.GRID_CHANNELS * grid * grid)
        layers = [conv_norm_relu(self.GRID_CHANNELS, top, 3, 1)]
        layers += [ConvResBlock(top) for _ in range(num_blocks)]
        for i in reversed(range(num_up)):
            layers.append(up_norm_relu(channels * 2 ** (i + 1), channels * 2**i))
        if stem_stride > 1:
            layers.append(nn.Upsample(scale_factor=stem_stride, mode="nearest"))
        layers.append(nn.Conv2d(channels, c, stem_kernel, padding=stem_kernel // 2, padding_mode="reflect"))
        self.conv = nn.Sequential(*layers)

    def _forward(self, h: torch.Tensor) -> torch.Tensor:
        g = self.fc(h).view(-1, self.GRID_CHANNELS, self.grid, self.grid)
        if (self.grid, self.grid) != self.base_hw:
            g = F.interpolate(g, size=self.base_hw, mode="bilinear", align_corners=False)
        return self.conv(g)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return flat_apply(self._forward, h, 1)


class TextEncoderNet(Block):
    """GRU text encoder (paper 5.1): the final hidden state (size ``hidden``) is the encoding.

    Padding (id 0) at the end of a text is skipped: the state after the last real word is used.
    """

    def __init__(self, vocab_size: int, hidden: int = 200, embed_dim: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.gru = nn.GRU(embed_dim, hidden, batch_first=True)

    def _forward(self, y: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(self.embed(y))
        last = (y != 0).sum(-1).clamp(min=1) - 1
        return states[torch.arange(y.shape[0], device=y.device), last]

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return flat_apply(self._forward, y, 1)


class GaussianHead(Block):
    """Shared encoder network (paper 5.1): three fully connected layers with batchnorm and a
    residual connection, outputting the mean and scale of a diagonal Gaussian over z."""

    def __init__(self, in_dim: int, z_dim: int, width: int = 200):
        super().__init__()
        self.net = ResidualMLP(in_dim, width, 2 * z_dim, num_layers=3, num_residual=1)

    def forward(self, h: torch.Tensor):
        loc, raw_scale = self.net(h).chunk(2, dim=-1)
        return loc, F.softplus(raw_scale) + 1e-4


def outermost_blocks(module: nn.Module) -> list[Block]:
    """The ``Block`` instances inside ``module`` (or ``module`` itself) that no other block contains."""
    if isinstance(module, Block):
        return [module]
    return [block for child in module.children() for block in outermost_blocks(child)]


def compile_blocks(module: nn.Module) -> list[Block]:
    """Compiles in place (``nn.Module.compile``, state dict keys unchanged) the outermost blocks inside
    ``module``: plain tensor networks, while the Pyro programs and distributions around them stay eager.
    Compilation happens at each block's first call. Returns the blocks."""
    blocks = outermost_blocks(module)
    for block in blocks:
        block.compile()
    return blocks


def set_precision(module: nn.Module, precision: str) -> list[Block]:
    """Runs the outermost blocks inside ``module`` in ``precision`` (a key of ``PRECISIONS``; see
    ``Block``); everything else, flows included, stays fp32. Returns the blocks."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    blocks = outermost_blocks(module)
    for block in blocks:
        block.compute_dtype = PRECISIONS[precision]
    return blocks


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

