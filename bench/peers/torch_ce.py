#!/usr/bin/env python3
"""Times PyTorch's F.cross_entropy (reduction mean, float32 logits, int64 labels) on the CPU.

forward: the loss under torch.no_grad(). forward_backward: loss.backward() into a fresh
x.grad each run (set to None between runs, as our API allocates dX per call). NHWC is
torch.channels_last (logical shape (N, C, H, W), stored (N, H, W, C)); a 2-D case is a plain
(rows, classes) tensor. Threads: torch.set_num_threads(n). Arguments and output: common.py.
"""

import common

args = common.parse_args(__doc__)

import torch  # noqa: E402  (after argument errors, which are quick)
import torch.nn.functional as F  # noqa: E402

torch.manual_seed(0)
for shape, layout in args.case:
    x = torch.rand(shape, dtype=torch.float32) * 4 - 2
    if layout == "NHWC" and len(shape) == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "NHWC" and len(shape) > 2:
        # Class-last for any rank: store (N, d..., C), view it as (N, C, d...).
        x = x.movedim(1, -1).contiguous().movedim(-1, 1)
    labels = torch.randint(0, shape[1], [shape[0], *shape[2:]], dtype=torch.int64)

    def forward():
        with torch.no_grad():
            return F.cross_entropy(x, labels, reduction="mean")

    xg = x.detach().requires_grad_(True)

    def forward_backward():
        xg.grad = None
        loss = F.cross_entropy(xg, labels, reduction="mean")
        loss.backward()
        return loss

    fns = {"forward": forward, "forward_backward": forward_backward}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for op in args.ops:
            ms_min, ms_median, runs = common.time_it(fns[op], args)
            common.emit("pytorch", op, shape, layout, threads, ms_min, ms_median, runs,
                        version=torch.__version__)
    del x, xg, labels
