#!/usr/bin/env python3
"""Times JAX with optax's softmax_cross_entropy_with_integer_labels (reduction mean, float32
logits, int32 labels) on the CPU, each step jax.jit-compiled: forward (the loss) and
forward_backward (jax.value_and_grad: the loss and dX), until block_until_ready.

NCHW keeps the logits (N, C, d...) and reduces over axis 1; NHWC stores them (N, d..., C) and
reduces over the last axis (JAX's own layout); a 2-D case is (rows, classes). The logits are
uniform in [-2, 2) and the labels uniform over the classes, like torch_inputs.make_case. Threads:
XLA sizes its thread pool from the CPUs the process may run on, so each thread count runs in a
child process pinned to that many CPUs (os.sched_setaffinity) before JAX is imported. Needs JAX
and optax (scripts/install-peers.sh puts them in .venv-jax, Python 3.12). Arguments and output:
common.py.
"""

import os
import subprocess
import sys

import common

args = common.parse_args(__doc__)
CHILD = "SPATIALSOFTMAX_JAX_THREADS"

if CHILD not in os.environ:
    # The parent: one pinned child per thread count, their rows passed through.
    status = 0
    for threads in args.threads:
        env = dict(os.environ, **{CHILD: str(threads)})
        status |= subprocess.call([sys.executable, *sys.argv], env=env)
    raise SystemExit(status)

threads = int(os.environ[CHILD])
cpus = sorted(os.sched_getaffinity(0))
if threads > len(cpus):
    common.note(f"jax_ce: {threads} threads asked for, {len(cpus)} CPUs available: skipped")
    raise SystemExit(0)
os.sched_setaffinity(0, cpus[:threads])

import jax  # noqa: E402  (after the affinity, which sizes XLA's thread pool)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

for shape, layout in args.case:
    rng = np.random.default_rng(0)
    logits = rng.uniform(-2, 2, size=shape).astype(np.float32)
    labels = rng.integers(0, shape[1], size=[shape[0], *shape[2:]], dtype=np.int32)
    axis = 1
    if layout == "NHWC" and len(shape) > 2:
        logits = np.ascontiguousarray(np.moveaxis(logits, 1, -1))
        axis = -1
    x, y = jax.device_put(logits), jax.device_put(labels)

    def loss(x, y, axis=axis):
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(x, y, axis=axis))

    forward = jax.jit(loss)
    fused = jax.jit(jax.value_and_grad(loss))
    steps = {
        "forward": lambda: forward(x, y).block_until_ready(),
        "forward_backward": lambda: jax.block_until_ready(fused(x, y)),
    }
    for op in args.ops:
        ms_min, ms_median, runs = common.time_it(steps[op], args)
        common.emit("jax", op, shape, layout, threads, ms_min, ms_median, runs,
                    version=f"jax {jax.__version__}, optax {optax.__version__}")
    del x, y, logits, labels
