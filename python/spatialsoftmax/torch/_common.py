"""The rules every operator of spatialsoftmax.torch shares: which layout a tensor is read in
(layout_of), the view the kernels see (class_view), outputs allocated in that layout
(empty_in_layout), the compute dtype of half types, and the device check."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

HALF_TYPES = (torch.bfloat16, torch.float16)
INDEX_TYPES = (torch.int32, torch.int64)


def check_cpu(op: str, **tensors: Optional[Tensor]) -> None:
    """ValueError naming the first tensor not on the CPU (no silent copy)."""
    for name, t in tensors.items():
        if t is not None and t.device.type != "cpu":
            raise ValueError(
                f"spatialsoftmax.torch.{op}: {name} device: expected cpu (this build has CPU "
                f"kernels only; move the tensor with .cpu()), got {t.device}"
            )


def layout_of(x: Tensor) -> str:
    """'NHWC' when x (N, C, d1..dk) is stored class-last and not also class-first."""
    if x.dim() >= 3 and not x.is_contiguous() and x.movedim(1, -1).is_contiguous():
        return "NHWC"
    return "NCHW"


def class_view(t: Tensor, layout: str) -> Tensor:
    """The view of a class-axis tensor that the kernels see: (N, C, d..) or (N, d.., C)."""
    return t.movedim(1, -1) if layout == "NHWC" else t


def logical_view(t: Tensor, layout: str) -> Tensor:
    """The (N, C, d1..dk) view of a tensor the kernels returned in `layout`."""
    return t.movedim(-1, 1) if layout == "NHWC" else t


def empty_in_layout(like: Tensor, layout: str) -> Tensor:
    """An uninitialised tensor of like's (N, C, d1..dk) shape and dtype stored in `layout`,
    densely: what the kernels return (the fake implementations' outputs)."""
    if layout == "NHWC":
        return like.new_empty(like.movedim(1, -1).shape).movedim(-1, 1)
    return like.new_empty(like.shape)


def compute_dtype(t: Tensor) -> Tensor:
    """float32 for the half types (computed in float32 until native kernels exist)."""
    return t.float() if t.dtype in HALF_TYPES else t


def map_shape(x: Tensor) -> Sequence[int]:
    """(N, d1..dk): the shape of per-position maps of a (N, C, d1..dk) tensor."""
    return (x.shape[0], *x.shape[2:])


def is_index_target(target: Tensor) -> bool:
    """Class indices (int32/int64) rather than probabilities."""
    return target.dtype in INDEX_TYPES


def check_no_target_grad(op: str, target: Tensor) -> None:
    if target.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"spatialsoftmax.torch.{op}: target requires grad: expected a target without "
            "gradient (gradients flow to the input only); pass target.detach()"
        )


def wants_grad(x: Tensor) -> bool:
    """Whether autograd will ask for x's gradient."""
    return torch.is_grad_enabled() and x.requires_grad
