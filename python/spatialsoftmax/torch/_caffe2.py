"""Caffe2's SpatialSoftmaxWithLoss and its gradient operator."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _core
from ._common import (
    check_device,
    class_output,
    class_view,
    dense,
    empty_in_layout,
    empty_output,
    kernels_on,
    layout_of,
    logical_view,
)


@torch.library.custom_op("spatialsoftmax::spatial_softmax_with_loss", mutates_args=())
def _spatial_softmax_with_loss_op(
    X: Tensor, T: Tensor, weight: Optional[Tensor], scale: float, variant: str
) -> tuple[Tensor, Tensor]:
    check_device("spatial_softmax_with_loss", X=X, T=T, weight=weight)
    # Channels-last X is read in place with Caffe2's order NHWC (our extension).
    layout = layout_of(X)
    x = dense(class_view(X, layout))
    T, weight = dense(T), dense(weight)
    P, loss = class_output(x), empty_output(x, ())
    with kernels_on(x):
        _core.caffe2.spatial_softmax_with_loss_into(
            x, T, P, loss, weight=weight, scale=scale, order=layout, variant=variant
        )
    return logical_view(P, layout), loss


@_spatial_softmax_with_loss_op.register_fake
def _(X, T, weight, scale, variant):
    return empty_in_layout(X, layout_of(X)), X.new_empty(())


@torch.library.custom_op("spatialsoftmax::spatial_softmax_with_loss_gradient", mutates_args=())
def _spatial_softmax_with_loss_gradient_op(
    X: Tensor,
    T: Tensor,
    weight: Optional[Tensor],
    P: Tensor,
    d_loss: Tensor,
    scale: float,
    variant: str,
) -> Tensor:
    check_device("spatial_softmax_with_loss", X=X, T=T, weight=weight, P=P, d_loss=d_loss)
    layout = layout_of(X)
    x = dense(class_view(X, layout))
    p = dense(class_view(P, layout))
    T, weight = dense(T), dense(weight)
    dX = class_output(x)
    with kernels_on(x):
        _core.caffe2.spatial_softmax_with_loss_gradient_into(
            x, T, p, dense(d_loss.to(X.dtype)), dX, weight=weight, scale=scale, order=layout,
            variant=variant,
        )
    return logical_view(dX, layout)


@_spatial_softmax_with_loss_gradient_op.register_fake
def _(X, T, weight, P, d_loss, scale, variant):
    return empty_in_layout(X, layout_of(X))


def _spatial_setup(ctx, inputs, output):
    X, T, weight, scale, variant = inputs
    ctx.options = (scale, variant)
    ctx.mark_non_differentiable(output[0])
    ctx.set_materialize_grads(False)  # no X-sized zeros for the gradient of P
    ctx.save_for_backward(X, T, weight, output[0])


def _spatial_backward(ctx, _grad_P, grad_loss):
    if grad_loss is None:  # grads are not materialized: the loss got none
        return None, None, None, None, None
    X, T, weight, P = ctx.saved_tensors
    scale, variant = ctx.options
    dX = _spatial_softmax_with_loss_gradient_op(X, T, weight, P, grad_loss, scale, variant)
    return dX, None, None, None, None


_spatial_softmax_with_loss_op.register_autograd(_spatial_backward, setup_context=_spatial_setup)


def spatial_softmax_with_loss(
    X: Tensor,
    T: Tensor,
    weight: Optional[Tensor] = None,
    scale: float = 1.0,
    variant: str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Caffe2's SpatialSoftmaxWithLoss: returns (P, avg_loss).

    X (N, D, H, W) float32/float64: class-first storage as Caffe2's NCHW, channels_last storage
    read in place as order NHWC (an extension; P and dX then channels_last too);
    T (N, H, W) int32 labels, -1 = ignored; weight (N, H, W) one per pixel. The CPU variant's
    forward does not apply `scale`, its gradient does (Caffe2's semantics, docs/semantics.md 2);
    variant='cuda' follows Caffe2's CUDA implementation. Gradients flow to X through avg_loss;
    P is not differentiable, as in Caffe2.
    """
    check_device("spatial_softmax_with_loss", X=X, T=T, weight=weight)
    return _spatial_softmax_with_loss_op(X, T, weight, float(scale), variant)
