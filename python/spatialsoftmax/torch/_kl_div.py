"""kl_div: KL(target || softmax(logits)) over the class axis, and its backward operator."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _core
from ._common import (
    check_device,
    check_no_target_grad,
    class_output,
    class_view,
    compute_dtype,
    dense,
    empty_in_layout,
    empty_output,
    kernels_on,
    layout_of,
    like_dtype,
    logical_view,
)


def _kl_inputs(input, target):
    """The kernels' class views of the logits and the target (dense on a device)."""
    x = compute_dtype(input)
    layout = layout_of(x)
    return dense(class_view(x, layout)), dense(class_view(like_dtype(target, x), layout)), layout


def _kl_output(x: Tensor, reduction: str, layout: str) -> Tensor:
    """The fake implementation's output: the logits' layout for 'none', else a scalar."""
    return empty_in_layout(x, layout) if reduction == "none" else x.new_empty(())


@torch.library.custom_op("spatialsoftmax::kl_div", mutates_args=())
def _kl_div_op(input: Tensor, target: Tensor, reduction: str, log_target: bool) -> Tensor:
    check_device("kl_div", input=input, target=target)
    x, t, layout = _kl_inputs(input, target)
    out = class_output(x) if reduction == "none" else empty_output(x, ())
    with kernels_on(x):
        _core.kl_div_into(x, t, out, layout=layout, log_target=log_target, reduction=reduction)
    return (logical_view(out, layout) if reduction == "none" else out).to(input.dtype)


@_kl_div_op.register_fake
def _(input, target, reduction, log_target):
    return _kl_output(input, reduction, layout_of(input))


@torch.library.custom_op("spatialsoftmax::kl_div_backward", mutates_args=())
def _kl_div_backward_op(
    input: Tensor, target: Tensor, grad_output: Tensor, reduction: str, log_target: bool
) -> Tensor:
    check_device("kl_div", input=input, target=target, grad_output=grad_output)
    x, t, layout = _kl_inputs(input, target)
    g = grad_output.to(x.dtype)
    grad = class_output(x)
    with kernels_on(x):
        _core.kl_div_backward_into(
            x,
            t,
            dense(class_view(g, layout) if reduction == "none" else g),
            grad,
            layout=layout,
            log_target=log_target,
            reduction=reduction,
        )
    return logical_view(grad, layout).to(input.dtype)


@_kl_div_backward_op.register_fake
def _(input, target, grad_output, reduction, log_target):
    return empty_in_layout(input, layout_of(input))


def _kl_div_setup(ctx, inputs, output):
    input, target, reduction, log_target = inputs
    ctx.options = (reduction, log_target)
    ctx.save_for_backward(input, target)


def _kl_div_backward(ctx, grad_output):
    input, target = ctx.saved_tensors
    reduction, log_target = ctx.options
    return _kl_div_backward_op(input, target, grad_output, reduction, log_target), None, None, None


_kl_div_op.register_autograd(_kl_div_backward, setup_context=_kl_div_setup)


def kl_div(
    logits: Tensor, target: Tensor, reduction: str = "mean", log_target: bool = False
) -> Tensor:
    """torch.nn.functional.kl_div(torch.log_softmax(logits, 1), target, reduction, log_target)
    in one kernel: KL(target || softmax(logits)) over the class axis 1. reduction 'none', 'sum',
    'mean' (over every element, as PyTorch) or 'batchmean'."""
    check_device("kl_div", logits=logits, target=target)
    check_no_target_grad("kl_div", target)
    return _kl_div_op(logits, target, reduction, log_target)
