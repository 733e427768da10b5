"""softmax and log_softmax over any dim, with their backward operators."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _core
from ._common import (
    check_device,
    class_output,
    class_view,
    compute_dtype,
    dense,
    empty_in_layout,
    kernels_on,
    layout_of,
    logical_view,
)


def _def_softmax(name: str, kernel, backward_kernel):
    """Registers spatialsoftmax::<name> and its backward; returns the forward op."""

    @torch.library.custom_op(f"spatialsoftmax::{name}", mutates_args=())
    def forward(input: Tensor) -> Tensor:
        check_device(name, input=input)
        x = compute_dtype(input)
        layout = layout_of(x)
        xv = dense(class_view(x, layout))
        out = class_output(xv)
        with kernels_on(x):
            kernel(xv, out, layout)
        return logical_view(out, layout).to(input.dtype)

    @forward.register_fake
    def _(input):
        return empty_in_layout(input, layout_of(input))

    @torch.library.custom_op(f"spatialsoftmax::{name}_backward", mutates_args=())
    def backward_op(output: Tensor, grad_output: Tensor) -> Tensor:
        check_device(name, output=output, grad_output=grad_output)
        y = compute_dtype(output)
        layout = layout_of(y)
        yv = dense(class_view(y, layout))
        grad = class_output(yv)
        with kernels_on(y):
            backward_kernel(yv, dense(class_view(grad_output.to(y.dtype), layout)), grad, layout)
        return logical_view(grad, layout).to(output.dtype)

    @backward_op.register_fake
    def _(output, grad_output):
        return empty_in_layout(output, layout_of(output))

    def setup(ctx, inputs, output):
        ctx.save_for_backward(output)

    def backward(ctx, grad_output):
        (output,) = ctx.saved_tensors
        return backward_op(output, grad_output)

    forward.register_autograd(backward, setup_context=setup)
    return forward, backward_op


_softmax_op, _softmax_backward_op = _def_softmax(
    "softmax", _core.softmax_into, _core.softmax_backward_into
)
_log_softmax_op, _log_softmax_backward_op = _def_softmax(
    "log_softmax", _core.log_softmax_into, _core.log_softmax_backward_into
)


def _over_dim(op, input: Tensor, dim: int) -> Tensor:
    # The kernels' class axis is 1; another dim is moved there as a view (class-last storage,
    # the common case of dim=-1, stays a zero-copy read).
    if input.dim() < 2:
        raise ValueError(
            f"spatialsoftmax.torch: input rank: expected at least 2 ((N, C, d1..dk)), got "
            f"{input.dim()} with shape {tuple(input.shape)}"
        )
    dim = dim % input.dim()
    if dim == 1:
        return op(input)
    return op(input.movedim(dim, 1)).movedim(1, dim)


def softmax(input: Tensor, dim: int = 1) -> Tensor:
    """torch.softmax(input, dim) on spatialsoftmax's kernels (input rank >= 2)."""
    check_device("softmax", input=input)
    return _over_dim(_softmax_op, input, dim)


def log_softmax(input: Tensor, dim: int = 1) -> Tensor:
    """torch.log_softmax(input, dim) on spatialsoftmax's kernels (input rank >= 2)."""
    check_device("log_softmax", input=input)
    return _over_dim(_log_softmax_op, input, dim)
