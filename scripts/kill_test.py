#!/usr/bin/env python3
"""Kill test of `spatialsoftmax run`'s outputs (standard library only).

usage: kill_test.py [ROUNDS] [BINARY]    (defaults: 10, build/release/spatialsoftmax)

Runs a SpatialSoftmaxWithLoss net with its gradient on inputs of tens of MB
over an --out folder that holds the outputs of an earlier run on different
inputs, and kills it with SIGKILL at random moments: half of the kills at a
random time in the whole run, half at a random time after its first
temporary file appeared (the writing phase). After every kill each file under
a final name must be byte for byte the old or the new output, no final name
may be missing, and anything else must be a temporary. Each round makes
KILLS_PER_ROUND kills in a row, then one complete run over the same folder,
after which the folder must hold exactly the new outputs and no temporary of
that run or of the killed ones. Exit status 1 on the first failure (the work
folder is kept), 0 otherwise.
"""
import math
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from array import array

# What counts as a temporary output file: StagedFile's hidden
# ".spatialsoftmax-<pid>-<random>.tmp" (src/io/staged_file.h), and the older
# write_npy's "<file>.npy.tmp<random>". Anything else in --out that is not
# an output's final name is a failure.
TEMPORARY = re.compile(r"^\.spatialsoftmax-\d+-[^/]*\.tmp$|^[^/]*\.npy\.tmp[^/]*$")

KILLS_PER_ROUND = 3
# Logits (N, C, H, W) float32: 32 MiB; with the labels, P and X_grad the
# run writes about 104 MiB, long enough to be interrupted while writing.
SHAPE = (1, 4, 1024, 2048)
NET = """name: "kill_test"
op {
  type: "SpatialSoftmaxWithLoss"
  input: "X" input: "T"
  output: "P" output: "avg_loss"
}
"""


def npy_bytes(descr, shape, payload):
    shape_text = "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}"
    pad = (-(10 + len(header) + 1)) % 64
    text = (header + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + payload


def write_inputs(folder, seed):
    """X and T of SHAPE: repeated patterns that depend on `seed` (and, for X,
    on the class, so that the softmax is not uniform)."""
    n, c, h, w = SHAPE
    block = 4096

    def little(a):
        if sys.byteorder != "little":
            a.byteswap()
        return a.tobytes()

    x = b"".join(little(array("f", [4.0 * math.sin(0.37 * i + seed + 1.3 * k)
                                    for i in range(block)])) * (h * w // block)
                 for k in range(c)) * n
    ts = little(array("i", [(7 * i + seed) % c for i in range(block)]))
    os.makedirs(folder)
    x_path, t_path = os.path.join(folder, "X.npy"), os.path.join(folder, "T.npy")
    with open(x_path, "wb") as f:
        f.write(npy_bytes("<f4", SHAPE, x))
    with open(t_path, "wb") as f:
        f.write(npy_bytes("<i4", (n, h, w), ts * (n * h * w // block)))
    return x_path, t_path


class Failure(Exception):
    pass


def temporaries(out):
    return [name for name in os.listdir(out) if TEMPORARY.search(name)]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    binary = sys.argv[2] if len(sys.argv) > 2 else "build/release/spatialsoftmax"
    if not os.access(binary, os.X_OK):
        sys.exit(f"kill-test: no program {binary} (build it first)")
    rng = random.Random(int(os.environ.get("KILL_TEST_SEED", time.time_ns())))
    work = tempfile.mkdtemp(prefix="spatialsoftmax-kill.")
    net = os.path.join(work, "net.pbtxt")
    with open(net, "w") as f:
        f.write(NET)
    old_inputs = write_inputs(os.path.join(work, "old_inputs"), 1)
    new_inputs = write_inputs(os.path.join(work, "new_inputs"), 2)
    out = os.path.join(work, "out")

    def command(inputs, folder):
        return [binary, "run", net, "--input", "X=" + inputs[0], "--input", "T=" + inputs[1],
                "--out", folder, "--gradients", "avg_loss"]

    def complete_run(inputs, folder):
        r = subprocess.run(command(inputs, folder), capture_output=True, text=True)
        if r.returncode != 0:
            raise Failure(f"run exited {r.returncode}: {r.stderr.strip()}")

    try:
        # Reference outputs of both inputs, each from a run into a fresh folder.
        ref_old, ref_new = os.path.join(work, "ref_old"), os.path.join(work, "ref_new")
        complete_run(old_inputs, ref_old)
        start = time.monotonic()
        complete_run(new_inputs, ref_new)
        duration = time.monotonic() - start
        names = sorted(os.listdir(ref_new))
        if sorted(os.listdir(ref_old)) != names or any(TEMPORARY.search(n) for n in names):
            raise Failure(f"reference runs disagree on their files: {names}")
        old = {n: open(os.path.join(ref_old, n), "rb").read() for n in names}
        new = {n: open(os.path.join(ref_new, n), "rb").read() for n in names}
        differ = [n for n in names if old[n] != new[n]]
        print(f"kill-test: {binary}; outputs {', '.join(names)} "
              f"({sum(map(len, new.values())) >> 20} MiB; old and new differ in "
              f"{', '.join(differ)}); a complete run takes {duration:.2f} s")

        def check_after_kill(what):
            """Returns the state ("old" or "new") of each output that differs
            between the two runs, and the names of the temporaries."""
            present = set(os.listdir(out))
            states = []
            for n in names:
                if n not in present:
                    raise Failure(f"{what}: {n} is missing")
                data = open(os.path.join(out, n), "rb").read()
                if data == new[n]:
                    states.append("new" if n in differ else None)
                elif data == old[n]:
                    states.append("old")
                else:
                    raise Failure(f"{what}: {n} ({len(data)} bytes) is neither the old "
                                  f"({len(old[n])}) nor the new ({len(new[n])}) output")
            others = sorted(present - set(names))
            foreign = [n for n in others if not TEMPORARY.search(n)]
            if foreign:
                raise Failure(f"{what}: files that are neither outputs nor temporaries: {foreign}")
            return {s for s in states if s}, others

        stats = {"kills": 0, "in writing phase": 0, "finished before the kill": 0,
                 "left all old": 0, "left old and new mixed": 0, "left all new": 0,
                 "left temporaries": 0}
        seen = set()  # names of temporaries, for the report
        for round_ in range(rounds):
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(ref_old, out)
            for k in range(KILLS_PER_ROUND):
                what = f"round {round_ + 1}, kill {k + 1}"
                proc = subprocess.Popen(command(new_inputs, out), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                began = time.monotonic()
                if k % 2 == 0:
                    time.sleep(rng.uniform(0, 1.1 * duration))
                else:
                    # Wait for the first temporary of this run (the writing
                    # phase), then kill within what is left of the run.
                    before = set(temporaries(out))
                    while proc.poll() is None and not set(temporaries(out)) - before:
                        time.sleep(0.001)
                    time.sleep(rng.uniform(0, max(0.0, duration - (time.monotonic() - began))))
                writing = bool(temporaries(out))
                proc.send_signal(signal.SIGKILL)
                rc = proc.wait()
                stats["kills"] += 1
                stats["in writing phase"] += writing and rc != 0
                stats["finished before the kill"] += rc == 0
                states, left = check_after_kill(what)
                kind = ("all new" if states == {"new"} else
                        "all old" if states == {"old"} else "old and new mixed")
                stats["left " + kind] += 1
                stats["left temporaries"] += bool(left)
                seen.update(left)
            complete_run(new_inputs, out)
            present = sorted(os.listdir(out))
            if present != names:
                raise Failure(f"round {round_ + 1}: after a complete run --out holds {present}, "
                              f"expected exactly {names} (temporaries of killed runs left?)")
            for n in names:
                if open(os.path.join(out, n), "rb").read() != new[n]:
                    raise Failure(f"round {round_ + 1}: after a complete run {n} is not the "
                                  "new output")
        print("kill-test: " + "; ".join(f"{k} {v}" for k, v in stats.items()))
        if seen:
            print(f"kill-test: temporaries seen after kills, e.g. {sorted(seen)[:3]}")
        print(f"kill-test: {rounds} rounds passed")
        shutil.rmtree(work)
        return 0
    except Failure as e:
        print(f"kill-test: FAILED: {e}\nkill-test: work folder kept: {work}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
