#!/usr/bin/env python3
"""The GPU half of `spatialsoftmax bench --device cuda`: on one CUDA device, in one process,
the device-to-device copy bandwidth, then on the same inputs (float32 logits from
torch_inputs.make_case, int64 labels, reduction mean) our kernels and the peers, forward and
forward_backward, timed with CUDA events around each run.

Rows (common.py's schema, threads 0, plus "device"): impl "memcpy" op "copy" (GB/s = bytes read
+ written by a device-to-device copy of --memcpy-mib MiB); "spatialsoftmax" (the C++ API's
cross_entropy_into / cross_entropy_forward_backward_into through the zero-copy binding, on
torch's current stream: what a C++ caller gets, plus a binding call); "ss.torch" (the PyTorch
front, fused); "pytorch" (F.cross_entropy); and on 2-D (rows x classes) cases "liger"
(Liger-Kernel's LigerCrossEntropyLoss, Triton) and "quack" (quack-kernels' cross_entropy,
CuTe-DSL) where installed (--peers says which to try). forward_backward is the loss and
loss.backward() into a fresh x.grad, as on the CPU. Needs the package built with CUDA
(pip install . on a machine with nvcc).
"""

import json

import common

args = common.parse_args(
    __doc__,
    add_arguments=lambda p: (
        p.add_argument("--memcpy-mib", type=int, default=1024, help="copy buffer size in MiB"),
        p.add_argument("--peers", default="pytorch,liger,quack",
                       help="peers to time: pytorch, liger, quack (comma-separated)"),
    ),
)

import torch  # noqa: E402  (after argument errors, which are quick)
import torch.nn.functional as F  # noqa: E402

import spatialsoftmax  # noqa: E402
import spatialsoftmax.torch as sst  # noqa: E402
import torch_inputs  # noqa: E402

if not torch.cuda.is_available():
    common.note("cuda_bench: no CUDA device (torch.cuda.is_available() is False)")
    raise SystemExit(1)
if not any(n.endswith("(cuda)") for n in spatialsoftmax.backend_names()):
    common.note("cuda_bench: this spatialsoftmax was built without CUDA kernels")
    raise SystemExit(1)

DEVICE = torch.device("cuda")
DEVICE_NAME = torch.cuda.get_device_name(DEVICE)
PEERS = set(p for p in args.peers.split(",") if p)


def time_gpu(fn):
    """ms_min, ms_median, runs of fn on the current stream, each run between two CUDA events;
    until both --repeats runs and --min-time seconds of them (as common.time_it)."""
    for _ in range(max(args.warmup, 1)):
        fn()
    torch.cuda.synchronize()
    times, total = [], 0.0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    while len(times) < args.max_runs:
        start.record()
        fn()
        end.record()
        end.synchronize()
        ms = start.elapsed_time(end)
        times.append(ms)
        total += ms
        if len(times) >= args.repeats and total * 1e-3 >= args.min_time:
            break
    times.sort()
    n = len(times)
    median = times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
    return times[0], median, n


def emit(impl, op, shape, layout, timing, **extra):
    common.emit(impl, op, shape, layout, 0, *timing, device=DEVICE_NAME, **extra)


def copy_bandwidth():
    n = (args.memcpy_mib << 20) // 4
    src = torch.rand(n, device=DEVICE)
    dst = torch.empty_like(src)
    ms_min, ms_median, runs = time_gpu(lambda: dst.copy_(src))
    row = {"impl": "memcpy", "op": "copy", "shape": [n * 4], "layout": "flat", "threads": 0,
           "ms_min": round(ms_min, 6), "ms_median": round(ms_median, 6),
           "gbps": round(2 * n * 4 / (ms_min * 1e-3) / 1e9, 4), "runs": runs,
           "device": DEVICE_NAME}
    print(json.dumps(row), flush=True)


def ours(x, labels, layout):
    """The C++ API through the binding: outputs allocated once, as a C++ caller would."""
    core_layout = "NHWC" if layout == "NHWC" and x.dim() > 2 else "NCHW"
    xv = x.movedim(1, -1) if core_layout == "NHWC" else x
    loss = torch.empty((), device=DEVICE)
    grad = torch.empty_like(xv)
    kwargs = dict(layout=core_layout, ignore_index=-100)
    stream = torch.cuda.current_stream().cuda_stream

    def forward():
        with spatialsoftmax.cuda_stream(stream):
            spatialsoftmax.cross_entropy_into(xv, labels, loss=loss, **kwargs)

    def forward_backward():
        with spatialsoftmax.cuda_stream(stream):
            spatialsoftmax.cross_entropy_forward_backward_into(
                xv, labels, loss=loss, grad_logits=grad, **kwargs
            )

    return forward, forward_backward


def peer_steps(x, labels):
    steps = {"ss.torch": torch_inputs.timed_steps(x, labels, sst.cross_entropy)}
    if "pytorch" in PEERS:
        steps["pytorch"] = torch_inputs.timed_steps(x, labels, F.cross_entropy)
    if x.dim() == 2 and "liger" in PEERS:
        try:
            from liger_kernel.transformers import LigerCrossEntropyLoss

            liger = LigerCrossEntropyLoss()
            steps["liger"] = torch_inputs.timed_steps(x, labels, lambda a, b: liger(a, b))
        except ImportError as e:
            common.note(f"cuda_bench: liger skipped (pip install liger-kernel): {e}")
    if x.dim() == 2 and "quack" in PEERS:
        try:
            from quack import cross_entropy as quack_cross_entropy

            steps["quack"] = torch_inputs.timed_steps(x, labels, quack_cross_entropy)
        except ImportError as e:
            common.note(f"cuda_bench: quack skipped (pip install quack-kernels): {e}")
    return steps


copy_bandwidth()
for shape, layout in args.case:
    x_cpu, labels_cpu = torch_inputs.make_case(shape, layout)
    x, labels = x_cpu.to(DEVICE), labels_cpu.to(DEVICE)  # keeps the class-last strides
    del x_cpu, labels_cpu
    forward, forward_backward = ours(x, labels, layout)
    runs = {"forward": [("spatialsoftmax", forward)],
            "forward_backward": [("spatialsoftmax", forward_backward)]}
    for impl, (f, fb) in peer_steps(x, labels).items():
        runs["forward"].append((impl, f))
        runs["forward_backward"].append((impl, fb))
    for op in args.ops:
        for impl, fn in runs[op]:
            try:
                emit(impl, op, shape, layout, time_gpu(fn), version=torch.__version__)
            except Exception as e:  # a peer that cannot run this case is a note, not a stop
                common.note(f"cuda_bench: {impl} {op} {shape} {layout} failed: {e}")
    spatialsoftmax.check_device_errors()
    del x, labels, runs
    torch.cuda.empty_cache()
