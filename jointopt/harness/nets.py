"""Small networks for the digits harness, with early exits and split points.

Provenance: **project choice**. Shapes follow ``docs/kinds/split_learning.md`` (``DigitsSplitMLP``,
``DigitsSplitCNN``) and ``docs/kinds/cis_early_exit.md`` (a linear head after a hidden block);
the joint training-inference harness uses a plain :func:`mlp` without exits. Importing this
module imports torch: only the harness does, and only when called.

A :class:`BlockNet` is a sequence of ``blocks`` (``x -> h_1 -> ... -> logits``, the last
block ends in the classifier) plus optional exit ``heads`` after some blocks:

* ``net(x)``: the final logits; ``net.exits(x)``: the logits of every exit, shallowest
  first, the final output last;
* ``net.client(x, s)`` / ``net.server(h, s)``: blocks ``1..s`` and ``s+1..L`` (split
  consistency: ``net.server(net.client(x, s), s) == net(x)``);
* ``net.head(s)``: the exit head after block ``s``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class BlockNet(nn.Module):
    """Blocks with optional exit heads (keys: the block count they follow, as strings)."""

    def __init__(self, blocks: Sequence[nn.Module], heads: dict[int, nn.Module] | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleDict({str(k): v for k, v in sorted((heads or {}).items())})
        for k in (heads or {}):
            if not 1 <= k < len(self.blocks):
                raise ValueError(f"exit after block {k}: must be in 1..{len(self.blocks) - 1}")

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def exit_points(self) -> list[int]:
        """Blocks after which an exit head sits (the final output not included)."""
        return sorted(int(k) for k in self.heads)

    def head(self, s: int) -> nn.Module:
        return self.heads[str(s)]

    def client(self, x: torch.Tensor, s: int) -> torch.Tensor:
        for block in self.blocks[:s]:
            x = block(x)
        return x

    def server(self, h: torch.Tensor, s: int) -> torch.Tensor:
        for block in self.blocks[s:]:
            h = block(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.server(x, 0)

    def exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            if str(i) in self.heads:
                out.append(self.heads[str(i)](x))
        out.append(x)
        return out


def _seeded(seed: int | None):
    if seed is not None:
        torch.manual_seed(seed)


def mlp(in_dim: int = 64, hidden: Sequence[int] = (32,), n_classes: int = 10, *,
        exits: Sequence[int] = (), seed: int | None = None) -> BlockNet:
    """``Linear+ReLU`` blocks of widths ``hidden``, then a linear classifier block;
    a linear exit head after each block listed in ``exits`` (1-based)."""
    _seeded(seed)
    widths = [in_dim, *hidden]
    blocks: list[nn.Module] = [nn.Sequential(nn.Linear(widths[i], widths[i + 1]), nn.ReLU())
                               for i in range(len(hidden))]
    blocks.append(nn.Linear(widths[-1], n_classes))
    heads = {k: nn.Linear(widths[k], n_classes) for k in exits}
    return BlockNet(blocks, heads)


class _Reshape(nn.Module):
    def __init__(self, *shape: int):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


def digits_cnn(n_classes: int = 10, *, exits: Sequence[int] = (),
               seed: int | None = None) -> BlockNet:
    """``DigitsSplitCNN`` of ``docs/kinds/split_learning.md`` on flat 64-pixel inputs; exit heads
    pool a feature map to 2x2 (or take a vector) and map it linearly to the classes."""
    _seeded(seed)
    blocks = [
        nn.Sequential(_Reshape(1, 8, 8), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Flatten()),
        nn.Sequential(nn.Linear(128, 128), nn.ReLU()),
        nn.Linear(128, n_classes),
    ]
    channels = {1: 16, 2: 32, 3: 32}
    heads = {}
    for k in exits:
        if k in channels:
            heads[k] = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                     nn.Linear(4 * channels[k], n_classes))
        else:
            heads[k] = nn.Linear(128, n_classes)
    return BlockNet(blocks, heads)
