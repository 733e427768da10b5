"""The tensors of one benchmark case for the torch-based runners (torch_ce.py, torch_front.py):
logits uniform in [-2, 2) (float32, or rounded to the --dtype) of the logical shape (N, C, d...), stored class-last for NHWC
(torch.channels_last for 4-D), and int64 labels (N, d...); and the two timed steps of a loss."""

import torch


def make_case(shape, layout, seed=0, dtype="float32"):
    torch.manual_seed(seed)
    x = (torch.rand(shape, dtype=torch.float32) * 4 - 2).to(getattr(torch, dtype))
    if layout == "NHWC" and len(shape) == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "NHWC" and len(shape) > 2:
        # Class-last for any rank: store (N, d..., C), view it as (N, C, d...).
        x = x.movedim(1, -1).contiguous().movedim(-1, 1)
    labels = torch.randint(0, shape[1], [shape[0], *shape[2:]], dtype=torch.int64)
    return x, labels


def timed_steps(x, labels, cross_entropy, **kwargs):
    """forward: the loss under torch.no_grad(); forward_backward: loss.backward() into a fresh
    x.grad each run (set to None between runs, as a training loop's zero_grad does)."""

    def forward():
        with torch.no_grad():
            return cross_entropy(x, labels, **kwargs)

    xg = x.detach().requires_grad_(True)

    def forward_backward():
        xg.grad = None
        loss = cross_entropy(xg, labels, **kwargs)
        loss.backward()
        return loss

    return forward, forward_backward
