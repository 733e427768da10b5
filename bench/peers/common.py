"""Shared command line, timing and output of the peer runners (torch_ce.py, ort_sce.py).

Every runner takes the same arguments as the oneDNN runner (spatialsoftmax_onednn_peer):

    --case 8x2x512x512:NCHW --case 8192x32000:NHWC   (repeatable; logical shape N x C x d1..dk)
    --threads 1,2  --ops forward,forward_backward  --repeats 5  --min-time 0.5  --warmup 1
    --dtype float32|bfloat16|float16   (the torch-based runners: X's and dX's type)

and prints one JSON object per line on stdout:

    {"impl": ..., "op": ..., "shape": [N, C, d...], "layout": "NCHW"|"NHWC", "threads": n,
     "ms_min": t, "ms_median": t, "gbps": g, "dtype": ..., ...extra fields}

The shape is always logical (N, C, d1..dk). NHWC means the tensor is stored class-last,
(N, d1..dk, C); for a 2-D shape (rows x classes) both layouts are the same memory and the
runners call it NHWC. GB/s counts the bytes a fused kernel must move: forward = bytes(X) +
bytes(labels); forward_backward = bytes(X) + bytes(labels) + bytes(dX); X and dX of the
row's dtype (float32 unless --dtype says otherwise), int64 labels. Diagnostics go to stderr.
"""

import argparse
import json
import math
import statistics
import sys
import time

OPS = ("forward", "forward_backward")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LAYOUTS = ("NCHW", "NHWC")


def parse_case(text):
    dims_text, sep, layout = text.partition(":")
    layout = layout.upper() if sep else "NCHW"
    if layout not in LAYOUTS:
        raise argparse.ArgumentTypeError(f"case {text!r}: layout must be NCHW or NHWC")
    try:
        shape = [int(d) for d in dims_text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"case {text!r}: shape must be like 8x2x512x512") from None
    if len(shape) < 2 or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"case {text!r}: need N x C [x d...], all >= 1")
    if len(shape) == 2:
        layout = "NHWC"  # rows x classes: class-last and class-first are the same memory
    return shape, layout


def int_list(text):
    values = [int(v) for v in text.split(",") if v]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers like 1,2")
    return values


def op_list(text):
    values = [v for v in text.split(",") if v]
    for v in values:
        if v not in OPS:
            raise argparse.ArgumentTypeError(f"unknown op {v!r}; expected {', '.join(OPS)}")
    return values


def parse_args(description, argv=None, add_arguments=None):
    """The runners' shared arguments; add_arguments(parser) adds a runner's own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--case", action="append", type=parse_case, required=True,
                   help="logical shape and layout, e.g. 2x19x512x1024:NHWC (repeatable)")
    p.add_argument("--threads", type=int_list, default=[1], help="thread counts, e.g. 1,2")
    p.add_argument("--ops", type=op_list, default=list(OPS),
                   help="forward,forward_backward (default both)")
    p.add_argument("--repeats", type=int, default=5, help="at least this many timed runs")
    p.add_argument("--min-time", type=float, default=0.5,
                   help="and at least this many seconds of timed runs")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    p.add_argument("--max-runs", type=int, default=10000, help="stop after this many timed runs")
    p.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="float32",
                   help="the logits' (and dX's) type, for the runners that take it")
    if add_arguments:
        add_arguments(p)
    return p.parse_args(argv)


def labels_numel(shape):
    return math.prod(shape) // shape[1]


def bytes_moved(shape, op, dtype="float32"):
    x = DTYPE_BYTES[dtype] * math.prod(shape)
    labels = 8 * labels_numel(shape)
    return x + labels + (x if op == "forward_backward" else 0)


def time_it(fn, args):
    """Warm up, then run until both `repeats` runs and `min_time` seconds are reached."""
    for _ in range(args.warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < args.max_runs:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= args.repeats and time.perf_counter() - start >= args.min_time:
            break
    return min(times) * 1e3, statistics.median(times) * 1e3, len(times)


def emit(impl, op, shape, layout, threads, ms_min, ms_median, runs, dtype="float32", **extra):
    row = {"impl": impl, "op": op, "shape": list(shape), "layout": layout, "threads": threads,
           "ms_min": round(ms_min, 6), "ms_median": round(ms_median, 6),
           "gbps": round(bytes_moved(shape, op, dtype) / (ms_min * 1e-3) / 1e9, 4), "runs": runs,
           "dtype": dtype}
    row.update(extra)
    print(json.dumps(row), flush=True)


def note(message):
    print(message, file=sys.stderr, flush=True)
