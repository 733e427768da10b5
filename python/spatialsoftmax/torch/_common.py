"""The rules every operator of spatialsoftmax.torch shares: which layout a tensor is read in
(layout_of), the view the kernels see (class_view), where outputs come from (empty_output,
empty_in_layout), the stream and device calls run on (kernels_on), the dtype the kernels read
(compute_dtype), and the device check."""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor

from .. import _core

HALF_TYPES = (torch.bfloat16, torch.float16)
INDEX_TYPES = (torch.int32, torch.int64)


@functools.cache
def _has_cuda_backend() -> bool:
    """Whether this build has the CUDA kernels (fixed for the process: asked once)."""
    return any(name.endswith("(cuda)") for name in _core.backend_names())


def check_device(op: str, **tensors: Optional[Tensor]) -> None:
    """ValueError naming the first tensor on a device the kernels do not run on (no silent
    copy): the CPU, and CUDA where the build has its kernels. Every tensor on one device is
    the library's own check."""
    for name, t in tensors.items():
        if t is None or t.device.type == "cpu":
            continue
        if t.device.type != "cuda" or not _has_cuda_backend():
            kernels = "cpu or cuda" if _has_cuda_backend() else "cpu (this build has no CUDA kernels)"
            raise ValueError(
                f"spatialsoftmax.torch.{op}: {name} device: expected {kernels}, got {t.device}"
            )


def dense(t: Optional[Tensor]) -> Optional[Tensor]:
    """t itself, or a C-contiguous copy of a device tensor that is not dense: the CUDA
    kernels read device memory densely (CPU tensors are read with their strides)."""
    if t is None or t.device.type == "cpu" or t.is_contiguous():
        return t
    return t.contiguous()


def empty_output(like: Tensor, shape: Sequence[int]) -> Tensor:
    """A dense output of like's dtype and device for the kernels to write. On the CPU it is
    the library's reused memory: a fresh torch CPU tensor is new mmap'd memory, and writing dX
    into one took 43 ms against 9 ms for a reused buffer (Cityscapes, 2 threads). On a GPU it
    comes from torch's caching allocator."""
    if like.device.type == "cpu":
        return _core._empty(like, list(shape))
    return torch.empty(tuple(shape), dtype=like.dtype, device=like.device)


@contextmanager
def kernels_on(like: Tensor) -> Iterator[None]:
    """Runs the block's calls where `like` is: for a CUDA tensor on its device, as the
    current device, and on torch's current stream there (so that the kernels are ordered
    with torch's own work, and captured with it in a CUDA graph)."""
    if like.device.type != "cuda":
        yield
        return
    with torch.cuda.device(like.device):
        previous = _core._set_cuda_stream(torch.cuda.current_stream(like.device).cuda_stream)
        try:
            yield
        finally:
            _core._set_cuda_stream(previous)


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


def class_output(x: Tensor) -> Tensor:
    """The output the kernels write for a class-axis input `x` (already its class view):
    dense, of x's shape; logical_view turns it back into (N, C, d1..dk)."""
    return empty_output(x, x.shape)


def compute_dtype(t: Tensor) -> Tensor:
    """The tensor the kernels read: t itself on the CPU, whose kernels read bfloat16 and
    float16 (computing in float32); float32 for the half types on a GPU (no 16-bit CUDA kernels
    yet)."""
    return t.float() if t.dtype in HALF_TYPES and t.device.type != "cpu" else t


def float32_for_half(t: Tensor) -> Tensor:
    """float32 for the half types: the spatial soft-argmax has no 16-bit kernels."""
    return t.float() if t.dtype in HALF_TYPES else t


def like_dtype(t: Optional[Tensor], x: Tensor) -> Optional[Tensor]:
    """A floating input (weights, probability targets) in the logits' dtype, as the kernels
    take it (a float32 weight beside bfloat16 logits is rounded to bfloat16); any other dtype
    is left for the library to refuse, naming the argument."""
    if t is None or t.dtype == x.dtype or not t.is_floating_point():
        return t
    return t.to(x.dtype)


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
