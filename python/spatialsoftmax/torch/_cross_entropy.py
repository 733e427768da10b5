"""cross_entropy: the fused operator (the forward keeps dX for the backward) and the unfused
backward operator, as torch.nn.functional.cross_entropy."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import is_fake

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
    is_index_target,
    kernels_on,
    layout_of,
    like_dtype,
    logical_view,
    map_shape,
    wants_grad,
)


def _ce_kwargs(target, weight, ignore_index, reduction, label_smoothing, layout):
    return dict(
        layout=layout,
        class_weight=weight,
        # PyTorch ignores ignore_index for probability targets.
        ignore_index=ignore_index if is_index_target(target) else None,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )


def _ce_inputs(input, target, weight):
    """The kernels' views: logits and probability targets in their class view, in the dtype
    the kernels read (compute_dtype), dense where the kernels need it (device memory)."""
    x = compute_dtype(input)
    t = target if is_index_target(target) else like_dtype(target, x)
    w = like_dtype(weight, x)
    layout = layout_of(x)
    t_view = t if is_index_target(t) else class_view(t, layout)
    return dense(class_view(x, layout)), dense(t_view), dense(w), layout


def _loss_shape(input: Tensor, reduction: str) -> Sequence[int]:
    return map_shape(input) if reduction == "none" else ()


@torch.library.custom_op("spatialsoftmax::cross_entropy", mutates_args=())
def _cross_entropy_op(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    compute_grad: bool,
) -> tuple[Tensor, Tensor]:
    check_device("cross_entropy", input=input, target=target, weight=weight)
    x, t, w, layout = _ce_inputs(input, target, weight)
    kwargs = _ce_kwargs(target, w, ignore_index, reduction, label_smoothing, layout)
    loss = empty_output(x, _loss_shape(input, reduction))
    with kernels_on(x):
        if compute_grad:
            grad = class_output(x)
            _core.cross_entropy_forward_backward_into(x, t, loss=loss, grad_logits=grad, **kwargs)
            grad = logical_view(grad, layout).to(input.dtype)
        else:
            _core.cross_entropy_into(x, t, loss=loss, **kwargs)
            grad = input.new_empty(0)
    return loss.to(input.dtype), grad


@_cross_entropy_op.register_fake
def _(input, target, weight, ignore_index, reduction, label_smoothing, compute_grad):
    loss = input.new_empty(_loss_shape(input, reduction))
    grad = empty_in_layout(input, layout_of(input)) if compute_grad else input.new_empty(0)
    return loss, grad


@torch.library.custom_op("spatialsoftmax::cross_entropy_backward", mutates_args=())
def _cross_entropy_backward_op(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    grad_loss: Tensor,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
) -> Tensor:
    check_device("cross_entropy", input=input, target=target, weight=weight, grad_loss=grad_loss)
    x, t, w, layout = _ce_inputs(input, target, weight)
    grad = class_output(x)
    with kernels_on(x):
        _core.cross_entropy_backward_into(
            x,
            t,
            grad,
            grad_loss=dense(grad_loss.to(x.dtype)),
            **_ce_kwargs(target, w, ignore_index, reduction, label_smoothing, layout),
        )
    return logical_view(grad, layout).to(input.dtype)


@_cross_entropy_backward_op.register_fake
def _(input, target, weight, grad_loss, ignore_index, reduction, label_smoothing):
    return empty_in_layout(input, layout_of(input))


def _has_data(t: Tensor) -> bool:
    """True for a tensor with real values, false while a graph is being traced."""
    return not torch.compiler.is_compiling() and not is_fake(t)


def _cross_entropy_setup(ctx, inputs, output):
    input, target, weight, ignore_index, reduction, label_smoothing, compute_grad = inputs
    ctx.options = (ignore_index, reduction, label_smoothing)
    ctx.compute_grad = compute_grad
    ctx.mark_non_differentiable(output[1])
    # Otherwise autograd would fill an X-sized tensor of zeros as the gradient of that output.
    ctx.set_materialize_grads(False)
    if compute_grad:
        ctx.save_for_backward(output[1])
    else:
        ctx.save_for_backward(input, target, weight)


def _cross_entropy_backward(ctx, grad_loss, _grad_of_grad):
    ignore_index, reduction, label_smoothing = ctx.options
    if grad_loss is None:  # grads are not materialized: the loss got none
        return None, None, None, None, None, None, None
    if ctx.compute_grad:
        (grad,) = ctx.saved_tensors
        # The fused kernel's dX is the gradient for an upstream gradient of 1 at every
        # position, and each position's gradient depends on its own loss only. For
        # loss.backward() on the CPU (upstream 1, a CPU scalar: reading it is no device
        # synchronisation) dX is returned as it is, which autograd moves into input.grad
        # without a pass over it; on a GPU (reading the upstream would wait for the device)
        # and traced (torch.compile, AOT autograd: fake tensors), where the value is unknown,
        # it is always multiplied.
        if reduction == "none":
            grad_input = grad * grad_loss.unsqueeze(1).to(grad.dtype)
        elif _has_data(grad_loss) and grad_loss.device.type == "cpu" and float(grad_loss) == 1.0:
            grad_input = grad
        else:
            grad_input = grad * grad_loss.to(grad.dtype)
    else:
        input, target, weight = ctx.saved_tensors
        grad_input = _cross_entropy_backward_op(
            input, target, weight, grad_loss, ignore_index, reduction, label_smoothing
        )
    return grad_input, None, None, None, None, None, None


_cross_entropy_op.register_autograd(_cross_entropy_backward, setup_context=_cross_entropy_setup)


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    fused: bool = True,
) -> Tensor:
    """torch.nn.functional.cross_entropy on spatialsoftmax's kernels.

    input (N, C, d1..dk) logits, any strides (class-last storage is read in place); target
    class indices (N, d1..dk) int64/int32 or probabilities of the input's shape; weight (C,)
    class weights. reduction 'none', 'sum' or 'mean' (PyTorch's weighted mean; NaN when every
    position is ignored). fused=True (default): when the input requires grad the forward runs
    the fused kernel and keeps dX for the backward; fused=False runs forward and backward
    kernels separately.
    """
    check_device("cross_entropy", input=input, target=target, weight=weight)
    check_no_target_grad("cross_entropy", target)
    compute_grad = fused and wants_grad(input)
    loss, _ = _cross_entropy_op(
        input, target, weight, ignore_index, reduction, float(label_smoothing), compute_grad
    )
    return loss
