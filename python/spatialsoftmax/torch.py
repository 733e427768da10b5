"""PyTorch operators over spatialsoftmax's kernels, with autograd and torch.compile support.

The functional forms take the arguments of their torch.nn.functional namesakes::

    import spatialsoftmax.torch as sst
    loss = sst.cross_entropy(logits, target, weight=None, ignore_index=-100,
                             reduction="mean", label_smoothing=0.0)

Each is a custom operator of torch.library (namespace ``spatialsoftmax``) with a fake
implementation, so ``torch.compile(fullgraph=True)`` traces it without graph breaks, and with
autograd. torch allocates every output and the kernels write into it (the library's ``_into``
functions). When the logits require grad, cross_entropy runs the fused forward+backward kernel
and keeps dX; the backward only scales it by the upstream gradient, so a training step reads the
logits once (``fused=False`` runs the separate forward and backward kernels instead).

Memory formats: a tensor stored class-last (``torch.channels_last``, or any (N, d1..dk, C)
storage viewed as (N, C, d1..dk)) goes to the class-last kernels without a copy, and its
outputs are allocated class-last too; other strides are read as they are.

dtypes: float32 and float64; bfloat16 and float16 logits are computed in float32 (a converted
copy, until native kernels exist) and the loss and gradient come back in the input's dtype.

Devices: CPU tensors only, for now; a tensor on another device is a ValueError, never a silent
copy.

Gradients flow to the logits (the input), not to targets or weights: a probability target that
requires grad is refused. Second derivatives are not supported.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from . import _core

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

_HALF_TYPES = (torch.bfloat16, torch.float16)
_INDEX_TYPES = (torch.int32, torch.int64)


# --- layout, dtype and device rules, shared by every operator ------------------------------


def _check_cpu(op: str, **tensors: Optional[Tensor]) -> None:
    for name, t in tensors.items():
        if t is not None and t.device.type != "cpu":
            raise ValueError(
                f"spatialsoftmax.torch.{op}: {name} device: expected cpu (this build has CPU "
                f"kernels only; move the tensor with .cpu()), got {t.device}"
            )


def _layout(x: Tensor) -> str:
    """'NHWC' when x (N, C, d1..dk) is stored class-last and not also class-first."""
    if x.dim() >= 3 and not x.is_contiguous() and x.movedim(1, -1).is_contiguous():
        return "NHWC"
    return "NCHW"


def _class_view(t: Tensor, layout: str) -> Tensor:
    """The view of a class-axis tensor that the kernels see: (N, C, d..) or (N, d.., C)."""
    return t.movedim(1, -1) if layout == "NHWC" else t


def _empty_in_layout(like: Tensor, layout: str, dtype: Optional[torch.dtype] = None) -> Tensor:
    """An uninitialised (N, C, d1..dk) tensor stored in `layout`, densely."""
    dtype = like.dtype if dtype is None else dtype
    if layout == "NHWC":
        stored = like.movedim(1, -1).shape
        return torch.empty(stored, dtype=dtype, device=like.device).movedim(-1, 1)
    return torch.empty(like.shape, dtype=dtype, device=like.device)


def _compute_dtype(t: Tensor) -> Tensor:
    return t.float() if t.dtype in _HALF_TYPES else t


def _map_shape(x: Tensor) -> Sequence[int]:
    return (x.shape[0], *x.shape[2:])


def _is_index_target(target: Tensor) -> bool:
    return target.dtype in _INDEX_TYPES


def _check_no_target_grad(op: str, target: Tensor) -> None:
    if target.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"spatialsoftmax.torch.{op}: target requires grad: expected a target without "
            "gradient (gradients flow to the input only); pass target.detach()"
        )


def _wants_grad(x: Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


# --- cross_entropy ---------------------------------------------------------------------------


def _ce_kwargs(target, weight, ignore_index, reduction, label_smoothing, layout):
    return dict(
        layout=layout,
        class_weight=weight,
        # PyTorch ignores ignore_index for probability targets.
        ignore_index=ignore_index if _is_index_target(target) else None,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )


def _ce_inputs(input, target, weight):
    x = _compute_dtype(input)
    t = target if _is_index_target(target) else _compute_dtype(target)
    w = None if weight is None else _compute_dtype(weight)
    layout = _layout(x)
    t_view = t if _is_index_target(t) else _class_view(t, layout)
    return x, t_view, w, layout


def _loss_shape(input: Tensor, reduction: str) -> Sequence[int]:
    return _map_shape(input) if reduction == "none" else ()


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
    _check_cpu("cross_entropy", input=input, target=target, weight=weight)
    x, t, w, layout = _ce_inputs(input, target, weight)
    loss = x.new_empty(_loss_shape(x, reduction))
    kwargs = _ce_kwargs(target, w, ignore_index, reduction, label_smoothing, layout)
    if compute_grad:
        grad = _empty_in_layout(x, layout)
        _core.cross_entropy_forward_backward_into(
            _class_view(x, layout), t, loss=loss, grad_logits=_class_view(grad, layout), **kwargs
        )
        grad = grad.to(input.dtype)
    else:
        _core.cross_entropy_into(_class_view(x, layout), t, loss=loss, **kwargs)
        grad = input.new_empty(0)
    return loss.to(input.dtype), grad


@_cross_entropy_op.register_fake
def _(input, target, weight, ignore_index, reduction, label_smoothing, compute_grad):
    loss = input.new_empty(_loss_shape(input, reduction))
    grad = _empty_in_layout(input, _layout(input)) if compute_grad else input.new_empty(0)
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
    _check_cpu("cross_entropy", input=input, target=target, weight=weight, grad_loss=grad_loss)
    x, t, w, layout = _ce_inputs(input, target, weight)
    grad = _empty_in_layout(x, layout)
    _core.cross_entropy_backward_into(
        _class_view(x, layout),
        t,
        _class_view(grad, layout),
        grad_loss=grad_loss.to(x.dtype),
        **_ce_kwargs(target, w, ignore_index, reduction, label_smoothing, layout),
    )
    return grad.to(input.dtype)


@_cross_entropy_backward_op.register_fake
def _(input, target, weight, grad_loss, ignore_index, reduction, label_smoothing):
    return _empty_in_layout(input, _layout(input))


def _cross_entropy_setup(ctx, inputs, output):
    input, target, weight, ignore_index, reduction, label_smoothing, compute_grad = inputs
    ctx.options = (ignore_index, reduction, label_smoothing)
    ctx.compute_grad = compute_grad
    ctx.mark_non_differentiable(output[1])
    if compute_grad:
        ctx.save_for_backward(output[1])
    else:
        ctx.save_for_backward(input, target, weight)


def _cross_entropy_backward(ctx, grad_loss, _grad_of_grad):
    ignore_index, reduction, label_smoothing = ctx.options
    if ctx.compute_grad:
        (grad,) = ctx.saved_tensors
        # The fused kernel's dX is the gradient for an upstream gradient of 1 at every
        # position; each position's gradient depends on its own loss only.
        scale = grad_loss.unsqueeze(1) if reduction == "none" else grad_loss
        grad_input = grad * scale.to(grad.dtype)
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
    _check_cpu("cross_entropy", input=input, target=target, weight=weight)
    _check_no_target_grad("cross_entropy", target)
    compute_grad = fused and _wants_grad(input)
    loss, _ = _cross_entropy_op(
        input, target, weight, ignore_index, reduction, float(label_smoothing), compute_grad
    )
    return loss


# --- kl_div ------------------------------------------------------------------------------------


def _kl_inputs(input, target):
    x = _compute_dtype(input)
    layout = _layout(x)
    return x, _class_view(_compute_dtype(target), layout), layout


def _kl_output(x: Tensor, reduction: str, layout: str) -> Tensor:
    return _empty_in_layout(x, layout) if reduction == "none" else x.new_empty(())


@torch.library.custom_op("spatialsoftmax::kl_div", mutates_args=())
def _kl_div_op(input: Tensor, target: Tensor, reduction: str, log_target: bool) -> Tensor:
    _check_cpu("kl_div", input=input, target=target)
    x, t, layout = _kl_inputs(input, target)
    out = _kl_output(x, reduction, layout)
    view = _class_view(out, layout) if reduction == "none" else out
    _core.kl_div_into(
        _class_view(x, layout), t, view, layout=layout, log_target=log_target, reduction=reduction
    )
    return out.to(input.dtype)


@_kl_div_op.register_fake
def _(input, target, reduction, log_target):
    return _kl_output(input, reduction, _layout(input))


@torch.library.custom_op("spatialsoftmax::kl_div_backward", mutates_args=())
def _kl_div_backward_op(
    input: Tensor, target: Tensor, grad_output: Tensor, reduction: str, log_target: bool
) -> Tensor:
    _check_cpu("kl_div", input=input, target=target, grad_output=grad_output)
    x, t, layout = _kl_inputs(input, target)
    grad = _empty_in_layout(x, layout)
    g = grad_output.to(x.dtype)
    _core.kl_div_backward_into(
        _class_view(x, layout),
        t,
        _class_view(g, layout) if reduction == "none" else g,
        _class_view(grad, layout),
        layout=layout,
        log_target=log_target,
        reduction=reduction,
    )
    return grad.to(input.dtype)


@_kl_div_backward_op.register_fake
def _(input, target, grad_output, reduction, log_target):
    return _empty_in_layout(input, _layout(input))


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
    _check_cpu("kl_div", logits=logits, target=target)
    _check_no_target_grad("kl_div", target)
    return _kl_div_op(logits, target, reduction, log_target)


# --- softmax and log_softmax -----------------------------------------------------------------


def _def_softmax(name: str, into, backward_into):
    """Registers spatialsoftmax::<name> and its backward; returns the forward op."""

    @torch.library.custom_op(f"spatialsoftmax::{name}", mutates_args=())
    def forward(input: Tensor) -> Tensor:
        _check_cpu(name, input=input)
        x = _compute_dtype(input)
        layout = _layout(x)
        out = _empty_in_layout(x, layout)
        into(_class_view(x, layout), _class_view(out, layout), layout)
        return out.to(input.dtype)

    @forward.register_fake
    def _(input):
        return _empty_in_layout(input, _layout(input))

    @torch.library.custom_op(f"spatialsoftmax::{name}_backward", mutates_args=())
    def backward_op(output: Tensor, grad_output: Tensor) -> Tensor:
        _check_cpu(name, output=output, grad_output=grad_output)
        y = _compute_dtype(output)
        layout = _layout(y)
        grad = _empty_in_layout(y, layout)
        backward_into(
            _class_view(y, layout),
            _class_view(grad_output.to(y.dtype), layout),
            _class_view(grad, layout),
            layout,
        )
        return grad.to(output.dtype)

    @backward_op.register_fake
    def _(output, grad_output):
        return _empty_in_layout(output, _layout(output))

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
    _check_cpu("softmax", input=input)
    return _over_dim(_softmax_op, input, dim)


def log_softmax(input: Tensor, dim: int = 1) -> Tensor:
    """torch.log_softmax(input, dim) on spatialsoftmax's kernels (input rank >= 2)."""
    _check_cpu("log_softmax", input=input)
    return _over_dim(_log_softmax_op, input, dim)


# --- Caffe2's SpatialSoftmaxWithLoss -----------------------------------------------------------


@torch.library.custom_op("spatialsoftmax::spatial_softmax_with_loss", mutates_args=())
def _spatial_softmax_with_loss_op(
    X: Tensor, T: Tensor, weight: Optional[Tensor], scale: float, variant: str
) -> tuple[Tensor, Tensor]:
    _check_cpu("spatial_softmax_with_loss", X=X, T=T, weight=weight)
    P = torch.empty(X.shape, dtype=X.dtype, device=X.device)
    loss = X.new_empty(())
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
    _check_cpu("spatial_softmax_with_loss", X=X, T=T, weight=weight, P=P, d_loss=d_loss)
    dX = torch.empty(X.shape, dtype=X.dtype, device=X.device)
    _core.caffe2.spatial_softmax_with_loss_gradient_into(
        X, T, P, d_loss.to(X.dtype), dX, weight=weight, scale=scale, variant=variant
    )
    return dX


@_spatial_softmax_with_loss_gradient_op.register_fake
def _(X, T, weight, P, d_loss, scale, variant):
    return torch.empty(X.shape, dtype=X.dtype, device=X.device)


def _spatial_setup(ctx, inputs, output):
    X, T, weight, scale, variant = inputs
    ctx.options = (scale, variant)
    ctx.mark_non_differentiable(output[0])
    ctx.save_for_backward(X, T, weight, output[0])


def _spatial_backward(ctx, _grad_P, grad_loss):
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
    _check_cpu("spatial_softmax_with_loss", X=X, T=T, weight=weight)
    return _spatial_softmax_with_loss_op(X, T, weight, float(scale), variant)


# --- spatial soft-argmax -------------------------------------------------------------------------


def _ssa_kwargs(layout, temperature, temperature_mode, coordinates):
    return dict(
        layout=layout,
        temperature=temperature,
        temperature_mode=temperature_mode,
        coordinates=coordinates,
    )


def _keypoints_shape(x: Tensor) -> Sequence[int]:
    return (x.shape[0], x.shape[1], x.dim() - 2)


@torch.library.custom_op("spatialsoftmax::spatial_soft_argmax", mutates_args=())
def _spatial_soft_argmax_op(
    input: Tensor, temperature: float, temperature_mode: str, coordinates: str
) -> Tensor:
    _check_cpu("spatial_soft_argmax", input=input)
    x = _compute_dtype(input)
    layout = _layout(x)
    keypoints = x.new_empty(_keypoints_shape(x))
    _core.spatial_soft_argmax_into(
        _class_view(x, layout),
        keypoints,
        **_ssa_kwargs(layout, temperature, temperature_mode, coordinates),
    )
    return keypoints.to(input.dtype)


@_spatial_soft_argmax_op.register_fake
def _(input, temperature, temperature_mode, coordinates):
    return input.new_empty(_keypoints_shape(input))


@torch.library.custom_op("spatialsoftmax::spatial_soft_argmax_backward", mutates_args=())
def _spatial_soft_argmax_backward_op(
    input: Tensor,
    grad_keypoints: Tensor,
    temperature: float,
    temperature_mode: str,
    coordinates: str,
) -> Tensor:
    _check_cpu("spatial_soft_argmax", input=input, grad_keypoints=grad_keypoints)
    x = _compute_dtype(input)
    layout = _layout(x)
    grad = _empty_in_layout(x, layout)
    _core.spatial_soft_argmax_backward_into(
        _class_view(x, layout),
        _class_view(grad, layout),
        grad_keypoints=grad_keypoints.to(x.dtype),
        **_ssa_kwargs(layout, temperature, temperature_mode, coordinates),
    )
    return grad.to(input.dtype)


@_spatial_soft_argmax_backward_op.register_fake
def _(input, grad_keypoints, temperature, temperature_mode, coordinates):
    return _empty_in_layout(input, _layout(input))


def _ssa_setup(ctx, inputs, output):
    input, temperature, temperature_mode, coordinates = inputs
    ctx.options = (temperature, temperature_mode, coordinates)
    ctx.save_for_backward(input)


def _ssa_backward(ctx, grad_keypoints):
    (input,) = ctx.saved_tensors
    grad = _spatial_soft_argmax_backward_op(input, grad_keypoints, *ctx.options)
    return grad, None, None, None


_spatial_soft_argmax_op.register_autograd(_ssa_backward, setup_context=_ssa_setup)


def spatial_soft_argmax(
    input: Tensor,
    temperature: float = 1.0,
    temperature_mode: str = "divide",
    coordinates: str = "normalized",
) -> Tensor:
    """Expected keypoints under the softmax over the spatial axes of each channel.

    input (N, C, d1..dk), k >= 1, any strides (channels-last storage read in place); returns
    (N, C, k) with the fastest spatial axis first ((x, y) for images). temperature > 0 divides
    the input (temperature_mode 'divide') or multiplies it ('multiply'); coordinates
    'normalized' (linspace(-1, 1, L) per axis) or 'pixel' (0..L-1). The temperature is a
    constant (no gradient).
    """
    _check_cpu("spatial_soft_argmax", input=input)
    return _spatial_soft_argmax_op(input, float(temperature), temperature_mode, coordinates)


# --- modules ---------------------------------------------------------------------------------


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
