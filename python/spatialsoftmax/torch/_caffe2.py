"""Caffe2's SpatialSoftmaxWithLoss and its gradient operator."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _core
from ._common import check_device, dense, empty_output, kernels_on


@torch.library.custom_op("spatialsoftmax::spatial_softmax_with_loss", mutates_args=())
def _spatial_softmax_with_loss_op(
    X: Tensor, T: Tensor, weight: Optional[Tensor], scale: float, variant: str
) -> tuple[Tensor, Tensor]:
    check_device("spatial_softmax_with_loss", X=X, T=T, weight=weight)
    X, T, weight = dense(X), dense(T), dense(weight)
    P, loss = empty_output(X, X.shape), empty_output(X, ())
    with kernels_on(X):
        _core.caffe2.spatial_softmax_with_loss_into(
            X, T, P, loss, weight=weight, scale=scale, variant=variant
        )
    return P, loss


@_spatial_softmax_with_loss_op.register_fake
def _(X, T, weight, scale, variant):
    return torch.empty(X.shape, dtype=X.dtype, device=X.device), X.new_empty(())


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
    X, T, weight, P = dense(X), dense(T), dense(weight), dense(P)
    dX = empty_output(X, X.shape)
    with kernels_on(X):
        _core.caffe2.spatial_softmax_with_loss_gradient_into(
            X, T, P, dense(d_loss.to(X.dtype)), dX, weight=weight, scale=scale, variant=variant
        )
    return dX


@_spatial_softmax_with_loss_gradient_op.register_fake
def _(X, T, weight, P, d_loss, scale, variant):
    return torch.empty(X.shape, dtype=X.dtype, device=X.device)


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

    X (N, D, H, W) float32/float64 (NCHW, as Caffe2; other strides are read through a copy);
    T (N, H, W) int32 labels, -1 = ignored; weight (N, H, W) one per pixel. The CPU variant's
    forward does not apply `scale`, its gradient does (Caffe2's semantics, docs/semantics.md 2);
    variant='cuda' follows Caffe2's CUDA implementation. Gradients flow to X through avg_loss;
    P is not differentiable, as in Caffe2.
    """
    check_device("spatial_softmax_with_loss", X=X, T=T, weight=weight)
    return _spatial_softmax_with_loss_op(X, T, weight, float(scale), variant)
