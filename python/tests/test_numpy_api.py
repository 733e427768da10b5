"""The NumPy API (spatialsoftmax._core) against torch.nn.functional in float64, its errors, and
its zero-copy conversions."""

import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import spatialsoftmax as ss


def logits(rng, shape, dtype=np.float64):
    return (rng.standard_normal(shape) * 3).astype(dtype)


def class_last(x):
    """The same logical (N, C, d..) numbers stored class-last: (N, d.., C)."""
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def labels(rng, shape, classes, ignore=None):
    t = rng.integers(0, classes, (shape[0], *shape[2:]))
    if ignore is not None:
        t[rng.random(t.shape) < 0.2] = ignore
    return t


SHAPES = [(3, 4), (2, 5, 7), (2, 3, 4, 5), (1, 4, 2, 3, 3)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_matches_torch(rng, shape, reduction, smoothing, weighted):
    x = logits(rng, shape)
    t = labels(rng, shape, shape[1], ignore=-100)
    w = rng.random(shape[1]) + 0.1 if weighted else None
    kwargs = dict(reduction=reduction, label_smoothing=smoothing)
    x_t = torch.from_numpy(x).requires_grad_()
    w_t = None if w is None else torch.from_numpy(w)
    want = F.cross_entropy(x_t, torch.from_numpy(t), w_t, ignore_index=-100, **kwargs)
    got = ss.cross_entropy(x, t, class_weight=w, ignore_index=-100, **kwargs)
    np.testing.assert_allclose(got.loss, want.detach().numpy(), rtol=1e-12, atol=1e-12)

    g = rng.standard_normal(want.shape)
    want.backward(torch.from_numpy(g))
    fb = ss.cross_entropy_forward_backward(
        x, t, grad_loss=g, class_weight=w, ignore_index=-100, **kwargs
    )
    np.testing.assert_allclose(fb.grad_logits, x_t.grad.numpy(), rtol=1e-10, atol=1e-12)
    back = ss.cross_entropy_backward(x, t, grad_loss=g, class_weight=w, ignore_index=-100, **kwargs)
    np.testing.assert_allclose(back, x_t.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES[1:])
def test_class_last_layout_gives_the_same_numbers(rng, shape):
    x = logits(rng, shape, np.float32)
    t = labels(rng, shape, shape[1], ignore=1)
    first = ss.cross_entropy_forward_backward(x, t, ignore_index=1, want_prob=True)
    last = ss.cross_entropy_forward_backward(
        class_last(x), t, ignore_index=1, want_prob=True, layout="NHWC"
    )
    # Bitwise: the kernels guarantee layout-independent results for C < 256.
    np.testing.assert_array_equal(first.loss, last.loss)
    np.testing.assert_array_equal(class_last(first.prob), last.prob)
    np.testing.assert_array_equal(class_last(first.grad_logits), last.grad_logits)


def test_probability_targets_and_maps(rng):
    x = logits(rng, (2, 6, 3, 4))
    p = torch.softmax(torch.from_numpy(logits(rng, x.shape)), 1).numpy()
    r = ss.cross_entropy(x, p, want_prob=True, want_log_prob=True, want_entropy=True)
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(r.loss, F.cross_entropy(xt, torch.from_numpy(p)).numpy(), 1e-12)
    np.testing.assert_allclose(r.prob, torch.softmax(xt, 1).numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(r.log_prob, torch.log_softmax(xt, 1).numpy(), rtol=1e-12)
    entropy = -(torch.softmax(xt, 1) * torch.log_softmax(xt, 1)).sum(1).numpy()
    np.testing.assert_allclose(r.entropy, entropy, rtol=1e-12)
    np.testing.assert_allclose(ss.entropy(x), entropy, rtol=1e-12)


def test_softmax_family(rng):
    x = logits(rng, (2, 5, 3, 2))
    g = rng.standard_normal(x.shape)
    xt = torch.from_numpy(x).requires_grad_()
    for ours, theirs, back in [
        (ss.softmax, torch.softmax, ss.softmax_backward),
        (ss.log_softmax, torch.log_softmax, ss.log_softmax_backward),
    ]:
        y = theirs(xt, 1)
        (grad,) = torch.autograd.grad(y, xt, torch.from_numpy(g))
        out = ours(x)
        np.testing.assert_allclose(out, y.detach().numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(back(out, g), grad.numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(
            ours(class_last(x), "NHWC"), class_last(y.detach().numpy()), rtol=1e-12, atol=1e-15
        )


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_matches_torch(rng, reduction, log_target):
    x = logits(rng, (3, 4, 5))
    target = torch.softmax(torch.from_numpy(logits(rng, x.shape)), 1)
    if log_target:
        target = target.log()
    xt = torch.from_numpy(x).requires_grad_()
    want = F.kl_div(F.log_softmax(xt, 1), target, reduction=reduction, log_target=log_target)
    g = rng.standard_normal(want.shape)
    want.backward(torch.from_numpy(g))
    kwargs = dict(reduction=reduction, log_target=log_target)
    np.testing.assert_allclose(ss.kl_div(x, target.numpy(), **kwargs), want.detach(), 1e-11)
    np.testing.assert_allclose(
        ss.kl_div_backward(x, target.numpy(), g, **kwargs), xt.grad, rtol=1e-10, atol=1e-13
    )


def test_nll_loss_matches_torch(rng):
    lp = torch.log_softmax(torch.from_numpy(logits(rng, (4, 6, 3))), 1)
    t = labels(rng, (4, 6, 3), 6, ignore=2)
    w = rng.random(6)
    want = F.nll_loss(lp, torch.from_numpy(t), torch.from_numpy(w), ignore_index=2)
    got = ss.nll_loss(lp.numpy(), t, class_weight=w, ignore_index=2)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12)
    lpg = lp.clone().requires_grad_()
    F.nll_loss(lpg, torch.from_numpy(t), torch.from_numpy(w), ignore_index=2).backward()
    grad = ss.nll_loss_backward(lp.numpy(), t, np.array(1.0), class_weight=w, ignore_index=2)
    np.testing.assert_allclose(grad, lpg.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_spatial_soft_argmax_against_its_definition(rng):
    x = logits(rng, (2, 3, 4, 5))
    r = ss.spatial_soft_argmax(x, temperature=0.5, want_softmax=True)
    p = torch.softmax(torch.from_numpy(x / 0.5).reshape(2, 3, -1), -1).reshape(x.shape)
    np.testing.assert_allclose(r.softmax, p.numpy(), rtol=1e-12, atol=1e-15)
    xs = torch.linspace(-1, 1, 5, dtype=torch.float64)
    ys = torch.linspace(-1, 1, 4, dtype=torch.float64)
    kx = (p.sum(2) * xs).sum(-1)
    ky = (p.sum(3) * ys).sum(-1)
    np.testing.assert_allclose(r.keypoints, torch.stack([kx, ky], -1).numpy(), atol=1e-12)
    np.testing.assert_allclose(ss.spatial_softmax(x, temperature=0.5), r.softmax, rtol=1e-15)
    g = rng.standard_normal(r.keypoints.shape)
    back = ss.spatial_soft_argmax_backward(x, grad_keypoints=g, temperature=0.5)
    assert back.grad_input.shape == x.shape and np.isfinite(back.grad_temperature)


def test_caffe2_functions(rng):
    x = logits(rng, (2, 4, 3, 3), np.float32)
    t = labels(rng, x.shape, 4, ignore=-1).astype(np.int32)
    w = rng.random((2, 3, 3)).astype(np.float32)
    out = ss.caffe2.spatial_softmax_with_loss(x, t, w)
    p = torch.softmax(torch.from_numpy(x).double(), 1)
    valid = t != -1
    picked = torch.gather(p, 1, torch.from_numpy(np.where(valid, t, 0)).long().unsqueeze(1))[:, 0]
    want = -(torch.log(picked) * torch.from_numpy(w * valid)).sum() / (w * valid).sum()
    np.testing.assert_allclose(out.loss, want.numpy(), rtol=1e-5)
    np.testing.assert_allclose(out.prob, p.numpy(), rtol=1e-5, atol=1e-7)
    dx = ss.caffe2.spatial_softmax_with_loss_gradient(
        x, t, out.prob, np.float32(1.0), weight=w, scale=2.0
    )
    assert dx.shape == x.shape and dx.dtype == np.float32
    two_d = ss.caffe2.softmax_with_loss(x.reshape(2, -1), t[:, 0, 0].clip(0))
    assert two_d.prob.shape == (2, 36)


def test_into_forms_write_the_callers_arrays(rng):
    x = logits(rng, (2, 3, 4))
    t = labels(rng, x.shape, 3)
    loss = np.empty((), np.float64)
    grad = np.empty_like(x)
    ss.cross_entropy_forward_backward_into(x, t, loss=loss, grad_logits=grad)
    fb = ss.cross_entropy_forward_backward(x, t)
    np.testing.assert_array_equal(loss, fb.loss)
    np.testing.assert_array_equal(grad, fb.grad_logits)
    # In place over the logits' own storage.
    inplace = x.copy()
    ss.cross_entropy_forward_backward_into(inplace, t, loss=loss, grad_logits=inplace)
    np.testing.assert_array_equal(inplace, fb.grad_logits)


def test_strided_inputs_are_read_in_place(rng):
    base = logits(rng, (2, 6, 8, 4))
    x = base[:, ::2, 1:7:2]
    view = ss._view_of(x)
    assert view["data"] == x.__array_interface__["data"][0]
    assert view["strides"] == [s // 8 for s in x.strides]
    t = labels(rng, x.shape, 3)
    np.testing.assert_array_equal(
        ss.cross_entropy(x, t).loss, ss.cross_entropy(np.ascontiguousarray(x), t).loss
    )


def test_torch_inputs_are_zero_copy_and_give_torch_results():
    x = torch.randn(2, 5, 3, 4).contiguous(memory_format=torch.channels_last)
    stored = x.movedim(1, -1)
    assert ss._view_of(stored)["data"] == x.data_ptr()
    assert ss._view_of(stored)["strides"] == list(stored.stride())
    out = ss.softmax(stored, "NHWC")
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out.movedim(-1, 1), torch.softmax(x, 1))


def test_results_are_not_copies(rng):
    r = ss.softmax(logits(rng, (2, 3)))
    # The array does not own its memory: it views the library's tensor (a copy would own it).
    assert not r.flags.owndata and r.flags.writeable


def test_errors_name_the_argument_and_leave_inputs_unchanged(rng):
    x = logits(rng, (2, 3, 4), np.float32)
    t = labels(rng, x.shape, 3)
    before = (x.copy(), t.copy())
    bad = t.copy()
    bad[1, 2] = 7
    with pytest.raises(ValueError, match=r"cross_entropy: targets\[1, 2\].*= 7, expected in \[0, 3\)"):
        ss.cross_entropy(x, bad)
    with pytest.raises(TypeError, match="softmax: logits dtype: expected .* got int8"):
        ss.softmax(x.astype(np.int8))
    with pytest.raises(TypeError, match="cross_entropy: targets: expected an array"):
        ss.cross_entropy(x, "labels")
    with pytest.raises(TypeError, match="class_weight dtype"):
        ss.cross_entropy(x, t, class_weight=np.ones(3, np.float64))
    with pytest.raises(ValueError, match="cross_entropy: reduction: 'avg'"):
        ss.cross_entropy(x, t, reduction="avg")
    with pytest.raises(ValueError, match="cross_entropy: layout"):
        ss.cross_entropy(x, t, layout="CHW")
    with pytest.raises(ValueError, match="softmax_into: prob strides"):
        ss.softmax_into(x, np.empty((2, 3, 8), np.float32)[:, :, ::2])
    with pytest.raises(ValueError, match="softmax_into: prob: expected a writable array"):
        readonly = np.empty_like(x)
        readonly.flags.writeable = False
        ss.softmax_into(x, readonly)
    with pytest.raises(ValueError, match="variant"):
        ss.caffe2.spatial_softmax_with_loss(x[..., None], t[..., None].astype(np.int32), variant="gpu")
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(t, before[1])


def test_the_gil_is_released_while_kernels_run(rng):
    # While one thread runs a long call, the main thread keeps running Python: the longest
    # pause between its loop iterations stays far below one call's duration (it would be at
    # least that long if the call held the GIL).
    # A call of tens of ms, far above the interpreter's 5 ms switch interval.
    x = logits(rng, (4, 19, 256, 512), np.float32)
    t = labels(rng, x.shape, 19)
    start = time.perf_counter()
    ss.cross_entropy_forward_backward(x, t, num_threads=1)
    call = time.perf_counter() - start
    worker = threading.Thread(
        target=lambda: [ss.cross_entropy_forward_backward(x, t, num_threads=1) for _ in range(3)]
    )
    ticks = []
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
    worker.join()
    longest_pause = max(np.diff(ticks)) if len(ticks) > 1 else float("inf")
    assert longest_pause < call / 2, (longest_pause, call)


def test_results_do_not_depend_on_the_thread_count(rng):
    x = logits(rng, (2, 7, 33, 17), np.float32)
    t = labels(rng, x.shape, 7)
    one = ss.cross_entropy_forward_backward(x, t, num_threads=1)
    two = ss.cross_entropy_forward_backward(x, t, num_threads=2)
    np.testing.assert_array_equal(one.loss, two.loss)
    np.testing.assert_array_equal(one.grad_logits, two.grad_logits)
    with pytest.raises(ValueError, match="num_threads"):
        ss.softmax(x, num_threads=-1)


def test_float16_arrays_are_read_natively(rng):
    x = logits(rng, (2, 7, 5, 3), np.float16)
    t = labels(rng, x.shape, 7)
    out = ss.cross_entropy_forward_backward(x, t)
    want = ss.cross_entropy_forward_backward(x.astype(np.float64), t)
    assert out.loss.dtype == np.float16 and out.grad_logits.dtype == np.float16
    np.testing.assert_allclose(out.loss, want.loss, rtol=2**-10)
    scale = np.abs(want.grad_logits).max()
    np.testing.assert_allclose(out.grad_logits, want.grad_logits, rtol=2**-10, atol=2**-10 * scale)
