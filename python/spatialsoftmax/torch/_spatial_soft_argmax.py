"""The spatial soft-argmax keypoints and their backward operator."""

from __future__ import annotations

from typing import Sequence

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
    float32_for_half,
    kernels_on,
    layout_of,
    logical_view,
)


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
    check_device("spatial_soft_argmax", input=input)
    x = float32_for_half(input)
    layout = layout_of(x)
    xv = dense(class_view(x, layout))
    keypoints = empty_output(x, _keypoints_shape(input))
    with kernels_on(x):
        _core.spatial_soft_argmax_into(
            xv, keypoints=keypoints, **_ssa_kwargs(layout, temperature, temperature_mode, coordinates)
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
    check_device("spatial_soft_argmax", input=input, grad_keypoints=grad_keypoints)
    x = float32_for_half(input)
    layout = layout_of(x)
    xv = dense(class_view(x, layout))
    grad = class_output(xv)
    with kernels_on(x):
        _core.spatial_soft_argmax_backward_into(
            xv,
            grad,
            grad_keypoints=dense(grad_keypoints.to(x.dtype)),
            **_ssa_kwargs(layout, temperature, temperature_mode, coordinates),
        )
    return logical_view(grad, layout).to(input.dtype)


@_spatial_soft_argmax_backward_op.register_fake
def _(input, grad_keypoints, temperature, temperature_mode, coordinates):
    return empty_in_layout(input, layout_of(input))


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
    check_device("spatial_soft_argmax", input=input)
    return _spatial_soft_argmax_op(input, float(temperature), temperature_mode, coordinates)
