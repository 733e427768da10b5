"""PyTorch operators over spatialsoftmax's kernels, with autograd and torch.compile support.

The functional forms take the arguments of their torch.nn.functional namesakes::

    import spatialsoftmax.torch as sst
    loss = sst.cross_entropy(logits, target, weight=None, ignore_index=-100,
                             reduction="mean", label_smoothing=0.0)

Each is a custom operator of torch.library (namespace ``spatialsoftmax``) with a fake
implementation, so ``torch.compile(fullgraph=True)`` traces it without graph breaks, and with
autograd. When the logits require grad, cross_entropy runs the fused forward+backward kernel and
keeps dX; the backward only scales it by the upstream gradient (not at all for 1), so a
training step reads the logits once (``fused=False`` runs the separate forward and backward
kernels instead).

Outputs on the CPU are the library's own buffers handed to torch without a copy (DLPack): the
library keeps large freed blocks for reuse, while a fresh torch CPU tensor of that size is new
memory from the kernel, whose first touch costs a page fault per 4 KiB page (a fused call on a
2 x 19 x 512 x 1024 float32 batch took 43 ms into a fresh torch tensor, 9 ms into a reused one,
on this project's machine; README, "The Python front"). The fake
implementations describe the same outputs (shape, dtype, strides) for tracing.

Memory formats: a tensor stored class-last (``torch.channels_last``, or any (N, d1..dk, C)
storage viewed as (N, C, d1..dk)) goes to the class-last kernels without a copy, and its
outputs are allocated class-last too; other strides are read as they are.

dtypes: float32, float64, and on the CPU bfloat16 and float16, which the kernels read and write
in 16 bits (float32 math, float64 loss sums; a float weight or probability target is taken in
the logits' dtype). On a GPU, and for the spatial soft-argmax, 16-bit inputs are computed from a
float32 copy; the outputs come back in the input's dtype.

Devices: CPU tensors only, for now; a tensor on another device is a ValueError, never a silent
copy.

Gradients flow to the logits (the input), not to targets or weights: a probability target that
requires grad is refused. Second derivatives are not supported.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._caffe2 import spatial_softmax_with_loss
from ._cross_entropy import cross_entropy
from ._kl_div import kl_div
from ._softmax import log_softmax, softmax
from ._spatial_soft_argmax import spatial_soft_argmax

__all__ = [
    "cross_entropy",
    "kl_div",
    "softmax",
    "log_softmax",
    "spatial_softmax_with_loss",
    "spatial_soft_argmax",
    "CrossEntropyLoss",
    "SpatialSoftmaxWithLoss",
    "SpatialSoftArgmax",
]


class CrossEntropyLoss(torch.nn.Module):
    """torch.nn.CrossEntropyLoss on spatialsoftmax's kernels (see cross_entropy)."""

    def __init__(
        self,
        weight: Optional[Tensor] = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(
            input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing
        )

    def extra_repr(self) -> str:
        return (
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
            f"label_smoothing={self.label_smoothing}"
        )


class SpatialSoftmaxWithLoss(torch.nn.Module):
    """Caffe2's SpatialSoftmaxWithLoss as a module: forward(X, T, weight=None) -> (P, loss)."""

    def __init__(self, scale: float = 1.0, variant: str = "cpu") -> None:
        super().__init__()
        self.scale = scale
        self.variant = variant

    def forward(
        self, X: Tensor, T: Tensor, weight: Optional[Tensor] = None
    ) -> tuple[Tensor, Tensor]:
        return spatial_softmax_with_loss(X, T, weight, self.scale, self.variant)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, variant={self.variant!r}"


class SpatialSoftArgmax(torch.nn.Module):
    """Spatial soft-argmax keypoints as a module: forward(x (N, C, d1..dk)) -> (N, C, k)."""

    def __init__(
        self,
        temperature: float = 1.0,
        temperature_mode: str = "divide",
        coordinates: str = "normalized",
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.temperature_mode = temperature_mode
        self.coordinates = coordinates

    def forward(self, input: Tensor) -> Tensor:
        return spatial_soft_argmax(
            input, self.temperature, self.temperature_mode, self.coordinates
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, temperature_mode={self.temperature_mode!r}, "
            f"coordinates={self.coordinates!r}"
        )
