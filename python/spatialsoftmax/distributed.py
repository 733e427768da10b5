"""A cross-entropy mean over every rank of a torch.distributed job.

With DistributedDataParallel each rank computes ``reduction='mean'`` over its own shard and DDP
averages the gradients. When the ranks ignore different numbers of pixels (ignore_index, class
or pixel weights), the average of per-rank means is not the mean over the global batch: a rank
with few valid pixels weighs as much as one with many. ``cross_entropy`` here divides every
rank's loss sum by the global weight total instead::

    loss = spatialsoftmax.distributed.cross_entropy(logits, target, ignore_index=255)
    loss.backward()   # under DDP: exactly the gradient of the global-batch mean

One all_reduce per call moves two numbers (the local loss sum and the local weight total, both
in float64). Its forward value is the global mean on every rank. Its backward is the
all_reduce's own (torch.distributed.nn): each rank's gradient is world_size / global_total
times the gradient of its loss sum, which DDP's average turns into the gradient of the global
mean. Without DDP, divide the summed gradients by the world size yourself.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor

from . import torch as sst
from .torch._common import is_index_target

__all__ = ["cross_entropy", "weight_total"]


def weight_total(
    input: Tensor, target: Tensor, weight: Optional[Tensor] = None, ignore_index: int = -100
) -> Tensor:
    """The denominator of PyTorch's cross_entropy mean on this rank, as a float64 scalar: the
    sum of weight[target] over the positions not ignored (their count without weights), or the
    number of positions for probability targets."""
    if not is_index_target(target):
        return torch.tensor(float(target.numel() // target.shape[1]), dtype=torch.float64)
    valid = target != ignore_index
    if weight is None:
        return valid.sum(dtype=torch.float64)
    safe = torch.where(valid, target, torch.zeros_like(target))
    return (weight.to(torch.float64)[safe] * valid).sum()


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor] = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    *,
    group: Optional[dist.ProcessGroup] = None,
) -> Tensor:
    """spatialsoftmax.torch.cross_entropy with reduction='mean' over the global batch of every
    rank of `group` (default: the world). Arguments as torch.nn.functional.cross_entropy."""
    local_sum = sst.cross_entropy(
        input, target, weight, ignore_index, reduction="sum", label_smoothing=label_smoothing
    )
    local_total = weight_total(input, target, weight, ignore_index).detach()
    stacked = torch.stack([local_sum.to(torch.float64), local_total])
    reduced = dist_fn.all_reduce(stacked, op=dist.ReduceOp.SUM, group=group or dist.group.WORLD)
    return (reduced[0] / reduced[1]).to(local_sum.dtype)
