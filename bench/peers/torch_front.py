#!/usr/bin/env python3
"""Times spatialsoftmax.torch.cross_entropy, the Python front (reduction mean, float32 or --dtype
logits, int64 labels), on the CPU, as torch_ce.py times PyTorch's F.cross_entropy on the same
tensors.

Rows: impl "ss.torch" for forward (under torch.no_grad()) and for forward_backward with the fused
kernel (dX kept by the forward, scaled by the backward), impl "ss.torch-unfused" for
forward_backward with fused=False (forward kernel, then backward kernel), impl "ss._core" for the
C++ API called through the NumPy-level binding on the same tensors (no autograd: the cost of
the torch front is the difference). --with-torch adds
PyTorch's own rows (impl "pytorch"), for a comparison without `spatialsoftmax bench`. Threads:
spatialsoftmax.set_num_threads(n) and torch.set_num_threads(n). Needs the package installed
(pip install .). Arguments and output: common.py.
"""

import common

args = common.parse_args(
    __doc__,
    add_arguments=lambda p: p.add_argument(
        "--with-torch", action="store_true", help="also time torch.nn.functional.cross_entropy"
    ),
)

import torch  # noqa: E402  (after argument errors, which are quick)
import torch.nn.functional as F  # noqa: E402

import spatialsoftmax  # noqa: E402
import spatialsoftmax.torch as sst  # noqa: E402
import torch_inputs  # noqa: E402


def run_case(shape, layout):
    x, labels = torch_inputs.make_case(shape, layout, dtype=args.dtype)
    ours_forward, ours_fused = torch_inputs.timed_steps(x, labels, sst.cross_entropy)
    _, ours_unfused = torch_inputs.timed_steps(x, labels, sst.cross_entropy, fused=False)
    # The kernels' view: class-last storage is passed as (N, d..., C) with layout NHWC.
    core_layout = "NHWC" if layout == "NHWC" and len(shape) > 2 else "NCHW"
    core_x = x.movedim(1, -1) if core_layout == "NHWC" else x
    core_kwargs = dict(layout=core_layout, ignore_index=-100)
    runs = {
        "forward": [
            ("ss.torch", ours_forward),
            ("ss._core", lambda: spatialsoftmax.cross_entropy(core_x, labels, **core_kwargs)),
        ],
        "forward_backward": [
            ("ss.torch", ours_fused),
            ("ss.torch-unfused", ours_unfused),
            (
                "ss._core",
                lambda: spatialsoftmax.cross_entropy_forward_backward(core_x, labels, **core_kwargs),
            ),
        ],
    }
    if args.with_torch:
        torch_forward, torch_backward = torch_inputs.timed_steps(x, labels, F.cross_entropy)
        runs["forward"].append(("pytorch", torch_forward))
        runs["forward_backward"].append(("pytorch", torch_backward))
    for threads in args.threads:
        torch.set_num_threads(threads)
        spatialsoftmax.set_num_threads(threads)
        for op in args.ops:
            for impl, fn in runs[op]:
                ms_min, ms_median, n = common.time_it(fn, args)
                common.emit(impl, op, shape, layout, threads, ms_min, ms_median, n,
                            dtype=args.dtype, version=torch.__version__)


for shape, layout in args.case:
    run_case(shape, layout)
