#!/usr/bin/env python3
"""Times PyTorch's F.cross_entropy (reduction mean, float32 or --dtype logits, int64 labels) on
the CPU.

forward (under torch.no_grad()) and forward_backward (loss.backward() into a fresh x.grad each
run) as torch_inputs.timed_steps defines them. NHWC is
torch.channels_last (logical shape (N, C, H, W), stored (N, H, W, C)); a 2-D case is a plain
(rows, classes) tensor. Threads: torch.set_num_threads(n). Arguments and output: common.py.
"""

import common

args = common.parse_args(__doc__)

import torch  # noqa: E402  (after argument errors, which are quick)
import torch.nn.functional as F  # noqa: E402

import torch_inputs  # noqa: E402

for shape, layout in args.case:
    x, labels = torch_inputs.make_case(shape, layout, dtype=args.dtype)

    forward, forward_backward = torch_inputs.timed_steps(x, labels, F.cross_entropy)
    fns = {"forward": forward, "forward_backward": forward_backward}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for op in args.ops:
            ms_min, ms_median, runs = common.time_it(fns[op], args)
            common.emit("pytorch", op, shape, layout, threads, ms_min, ms_median, runs,
                        dtype=args.dtype, version=torch.__version__)
    del x, labels, forward, forward_backward
