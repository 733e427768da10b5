"""The global mean across ranks: two gloo processes on localhost train a tiny segmentation head
with DDP on halves of a batch whose halves ignore very different numbers of pixels. With
spatialsoftmax.distributed.cross_entropy their gradients (and weights after a few steps) equal
those of one process training on the whole batch; with a per-rank mean they do not."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import spatialsoftmax.distributed as ssd
import spatialsoftmax.torch as sst

pytestmark = pytest.mark.distributed

CLASSES, IGNORE, STEPS, LR = 4, 255, 3, 0.5


def make_model():
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, CLASSES, 1).double()


def make_batch():
    g = torch.Generator().manual_seed(1)
    image = torch.randn(4, 3, 6, 8, generator=g, dtype=torch.float64)
    target = torch.randint(0, CLASSES, (4, 6, 8), generator=g)
    target[:2, :5] = IGNORE  # rank 0's half: most pixels ignored
    target[2:, 0, :3] = IGNORE  # rank 1's half: a few
    return image, target


def train(model, image, target, loss_fn):
    """STEPS of SGD; returns the first step's gradients and the final weights."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    first_grads = None
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss_fn(model(image), target).backward()
        if first_grads is None:
            first_grads = [p.grad.detach().clone() for p in model.parameters()]
        optimizer.step()
    return first_grads, [p.detach().clone() for p in model.parameters()]


def worker(rank, world, address, results):
    dist.init_process_group("gloo", init_method=address, rank=rank, world_size=world)
    try:
        image, target = make_batch()
        shard = slice(rank * 2, rank * 2 + 2)
        out = {}
        for name, loss_fn in [
            ("global", lambda x, t: ssd.cross_entropy(x, t, ignore_index=IGNORE)),
            ("per_rank", lambda x, t: sst.cross_entropy(x, t, ignore_index=IGNORE)),
        ]:
            model = torch.nn.parallel.DistributedDataParallel(make_model())
            grads, weights = train(model, image[shard], target[shard], loss_fn)
            # The forward value of the global mean is the same on every rank.
            value = ssd.cross_entropy(model(image[shard]), target[shard], ignore_index=IGNORE)
            out[name] = (grads, weights, value.detach())
        results[rank] = out
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_global_mean_across_two_gloo_ranks_equals_one_process_on_the_whole_batch():
    image, target = make_batch()
    single_grads, single_weights = train(
        make_model(), image, target, lambda x, t: F.cross_entropy(x, t, ignore_index=IGNORE)
    )
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, args=(2, f"tcp://127.0.0.1:{free_port()}", results), nprocs=2)
        results = dict(results)

    for rank in (0, 1):
        grads, weights, _ = results[rank]["global"]
        for a, b in zip(grads, single_grads):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        for a, b in zip(weights, single_weights):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(results[0]["global"][2], results[1]["global"][2], rtol=0, atol=0)
    model = make_model()
    for p, w in zip(model.parameters(), single_weights):
        p.data.copy_(w)
    whole = F.cross_entropy(model(image), target, ignore_index=IGNORE).detach()
    torch.testing.assert_close(results[0]["global"][2], whole, rtol=1e-12, atol=1e-14)

    # The per-rank mean weighs rank 0's few valid pixels as much as rank 1's many.
    per_rank_grads = results[0]["per_rank"][0]
    difference = max((a - b).abs().max().item() for a, b in zip(per_rank_grads, single_grads))
    assert difference > 1e-3


def test_weight_total_is_pytorchs_mean_denominator():
    _, target = make_batch()
    x = torch.randn(4, CLASSES, 6, 8, dtype=torch.float64)
    w = torch.rand(CLASSES, dtype=torch.float64)
    total = ssd.weight_total(x, target, w, IGNORE)
    summed = F.cross_entropy(x, target, w, ignore_index=IGNORE, reduction="sum")
    mean = F.cross_entropy(x, target, w, ignore_index=IGNORE)
    torch.testing.assert_close(summed / total, mean)
    p = torch.softmax(x, 1)
    assert ssd.weight_total(x, p).item() == 4 * 6 * 8
