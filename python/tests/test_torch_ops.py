"""spatialsoftmax.torch against torch.nn.functional: forward and gradients on randomized inputs
for every option, both memory formats and ranks 2 to 5; gradcheck in float64; opcheck on every
operator; torch.compile(fullgraph=True); zero-copy channels-last; half types; errors."""

import itertools

import pytest
import torch
import torch.nn.functional as F

import spatialsoftmax as ss
import spatialsoftmax.torch as sst
from spatialsoftmax.torch._common import class_view, layout_of

SHAPES = [(6, 5), (2, 4, 7), (2, 3, 5, 4), (1, 4, 3, 2, 3)]


def make_logits(shape, dtype=torch.float64, channels_last=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64).mul(3).to(dtype)
    if channels_last:
        x = x.movedim(1, -1).contiguous().movedim(-1, 1)  # class-last storage, any rank
    return x


def make_labels(shape, ignore_index=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    if ignore_index is not None:
        t[torch.rand(t.shape, generator=g) < 0.25] = ignore_index
    return t


def both_grads(ours, theirs, x, upstream_seed=2):
    """Forward values and input gradients of two loss functions for one random upstream."""
    xa = x.detach().clone().requires_grad_()
    xb = x.detach().clone().requires_grad_()
    a, b = ours(xa), theirs(xb)
    g = torch.randn(a.shape, generator=torch.Generator().manual_seed(upstream_seed), dtype=a.dtype)
    a.backward(g)
    b.backward(g)
    return a, b, xa.grad, xb.grad


CE_CASES = list(
    itertools.product(
        SHAPES, [False, True], ["none", "sum", "mean"], [0.0, 0.3], [False, True], [False, True]
    )
)


@pytest.mark.parametrize("shape,channels_last,reduction,smoothing,weighted,fused", CE_CASES)
def test_cross_entropy_index_targets(shape, channels_last, reduction, smoothing, weighted, fused):
    x = make_logits(shape, channels_last=channels_last)
    t = make_labels(shape, ignore_index=-100)
    w = torch.rand(shape[1], dtype=torch.float64) + 0.1 if weighted else None
    kwargs = dict(weight=w, reduction=reduction, label_smoothing=smoothing)
    a, b, ga, gb = both_grads(
        lambda z: sst.cross_entropy(z, t, fused=fused, **kwargs),
        lambda z: F.cross_entropy(z, t, **kwargs),
        x,
    )
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)
    if channels_last and len(shape) > 2:
        assert ga.movedim(1, -1).is_contiguous(), "the gradient keeps class-last storage"


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_gradient_survives_retain_graph_and_scaled_losses(channels_last):
    # The fused path keeps dX and returns it for an upstream gradient of 1: a second backward
    # through the same graph, or a scaled loss, must still see the unscaled dX.
    x = make_logits((2, 5, 4, 3), channels_last=channels_last).requires_grad_()
    t = make_labels((2, 5, 4, 3), -100)
    loss = sst.cross_entropy(x, t)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    (3.0 * loss).backward()
    want = torch.autograd.grad(F.cross_entropy(x, t), x)[0]
    torch.testing.assert_close(first, want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(x.grad, 4.0 * want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape,channels_last,smoothing", list(itertools.product(SHAPES, [False, True], [0.0, 0.1])))
def test_cross_entropy_probability_targets(shape, channels_last, smoothing):
    x = make_logits(shape, channels_last=channels_last)
    p = torch.softmax(make_logits(shape, seed=5), 1)
    w = torch.rand(shape[1], dtype=torch.float64)
    for weight in (None, w):
        a, b, ga, gb = both_grads(
            lambda z: sst.cross_entropy(z, p, weight, label_smoothing=smoothing),
            lambda z: F.cross_entropy(z, p, weight, label_smoothing=smoothing),
            x,
        )
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


def test_cross_entropy_ignore_index_inside_the_classes_and_all_ignored():
    x = make_logits((3, 4, 5))
    t = make_labels((3, 4, 5), ignore_index=2)
    torch.testing.assert_close(sst.cross_entropy(x, t, ignore_index=2), F.cross_entropy(x, t, ignore_index=2))
    none = torch.full((3, 5), -100)
    assert torch.isnan(sst.cross_entropy(x, none)) and torch.isnan(F.cross_entropy(x, none))


@pytest.mark.parametrize("shape,channels_last", list(itertools.product(SHAPES, [False, True])))
@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(shape, channels_last, reduction, log_target):
    x = make_logits(shape, channels_last=channels_last)
    target = torch.softmax(make_logits(shape, seed=7), 1)
    if log_target:
        target = target.log()
    with pytest.warns(UserWarning) if reduction == "mean" else _no_warning():
        a, b, ga, gb = both_grads(
            lambda z: sst.kl_div(z, target, reduction, log_target),
            lambda z: F.kl_div(F.log_softmax(z, 1), target, reduction=reduction, log_target=log_target),
            x,
        )
    torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("shape,channels_last", list(itertools.product(SHAPES, [False, True])))
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [1, -1])
def test_softmax_and_log_softmax(shape, channels_last, name, dim):
    x = make_logits(shape, channels_last=channels_last)
    ours, theirs = getattr(sst, name), getattr(torch, name)
    a, b, ga, gb = both_grads(lambda z: ours(z, dim), lambda z: theirs(z, dim), x)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True])
def test_spatial_soft_argmax(channels_last):
    x = make_logits((2, 3, 4, 5), channels_last=channels_last)

    def reference(z, temperature=0.7):
        p = torch.softmax((z / temperature).flatten(2), -1).reshape(z.shape)
        xs = torch.linspace(-1, 1, z.shape[3], dtype=z.dtype)
        ys = torch.linspace(-1, 1, z.shape[2], dtype=z.dtype)
        return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], -1)

    a, b, ga, gb = both_grads(lambda z: sst.spatial_soft_argmax(z, 0.7), reference, x)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


def test_spatial_softmax_with_loss_is_caffe2s_operator():
    x = make_logits((2, 4, 3, 5), dtype=torch.float32)
    t = make_labels((2, 4, 3, 5), ignore_index=-1).int()
    w = torch.rand(2, 3, 5)
    P, loss = sst.spatial_softmax_with_loss(x, t, w, scale=1.5)
    want = ss.caffe2.spatial_softmax_with_loss(x.numpy(), t.numpy(), w.numpy(), scale=1.5)
    torch.testing.assert_close(P, torch.from_numpy(want.prob), rtol=0, atol=0)
    torch.testing.assert_close(loss, torch.from_numpy(want.loss), rtol=0, atol=0)
    xg = x.clone().requires_grad_()
    sst.spatial_softmax_with_loss(xg, t, w, scale=1.5)[1].backward(torch.tensor(2.0))
    dx = ss.caffe2.spatial_softmax_with_loss_gradient(
        x.numpy(), t.numpy(), want.prob, torch.tensor(2.0).numpy(), weight=w.numpy(), scale=1.5
    )
    torch.testing.assert_close(xg.grad, torch.from_numpy(dx), rtol=0, atol=0)
    # Its semantics against the formula: the weighted mean of -log p_y over pixels not ignored.
    valid = t != -1
    logp = torch.log_softmax(x.double(), 1).gather(1, t.long().clamp(min=0).unsqueeze(1))[:, 0]
    formula = -(logp * w * valid).sum() / (w * valid).sum()
    torch.testing.assert_close(loss.double(), formula, rtol=1e-6, atol=1e-7)


def test_spatial_softmax_with_loss_reads_channels_last_as_nhwc():
    # Caffe2's order NHWC (our extension): channels_last X is read in place and gives the
    # NCHW call's bits, with P and dX channels_last too.
    x = make_logits((2, 19, 6, 7), dtype=torch.float32)
    t = make_labels((2, 19, 6, 7), ignore_index=-1).int()
    w = torch.rand(2, 6, 7)
    xc = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    xf = x.clone().requires_grad_()
    (P_c, loss_c), (P_f, loss_f) = (sst.spatial_softmax_with_loss(z, t, w, 0.5) for z in (xc, xf))
    assert P_c.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(P_c, P_f, rtol=0, atol=0)
    torch.testing.assert_close(loss_c, loss_f, rtol=0, atol=0)
    loss_c.backward()
    loss_f.backward()
    assert xc.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(xc.grad, xf.grad, rtol=0, atol=0)
    nhwc = ss.caffe2.spatial_softmax_with_loss(
        x.permute(0, 2, 3, 1).contiguous().numpy(), t.numpy(), w.numpy(), scale=0.5, order="NHWC"
    )
    torch.testing.assert_close(torch.from_numpy(nhwc.prob).permute(0, 3, 1, 2), P_f.detach(),
                               rtol=0, atol=0)


# --- gradcheck in float64 ----------------------------------------------------------------------

GRADCHECK = {
    "cross_entropy": lambda z: sst.cross_entropy(z, make_labels(z.shape, -100), label_smoothing=0.1),
    "cross_entropy_unfused": lambda z: sst.cross_entropy(
        z, make_labels(z.shape, -100), reduction="none", fused=False
    ),
    "cross_entropy_none": lambda z: sst.cross_entropy(z, make_labels(z.shape, -100), reduction="none"),
    "kl_div": lambda z: sst.kl_div(z, torch.softmax(make_logits(z.shape, seed=3), 1), "batchmean"),
    "softmax": lambda z: sst.softmax(z),
    "log_softmax": lambda z: sst.log_softmax(z),
    "spatial_soft_argmax": lambda z: sst.spatial_soft_argmax(z, 2.0, "multiply"),
    # Caffe2's CPU forward does not apply `scale` while its gradient does (docs/semantics.md
    # 2.4), so only scale 1 is a consistent pair there; the CUDA variant applies it in both.
    "spatial_softmax_with_loss": lambda z: sst.spatial_softmax_with_loss(
        z,
        make_labels(z.shape, -1).int(),
        torch.rand(z.shape[0], *z.shape[2:], dtype=z.dtype, generator=torch.Generator().manual_seed(9)),
    )[1],
    "spatial_softmax_with_loss_cuda_variant": lambda z: sst.spatial_softmax_with_loss(
        z, make_labels(z.shape, -1).int(), scale=0.5, variant="cuda"
    )[1],
}


@pytest.mark.parametrize("name", sorted(GRADCHECK))
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck(name, channels_last):
    x = make_logits((2, 3, 4, 3), channels_last=channels_last).requires_grad_()
    assert torch.autograd.gradcheck(GRADCHECK[name], (x,), eps=1e-6, atol=1e-8)


# --- torch.library.opcheck on every operator ---------------------------------------------------


def opcheck_cases():
    x = make_logits((2, 3, 4, 5), dtype=torch.float32)
    xl = make_logits((2, 3, 4, 5), dtype=torch.float32, channels_last=True)
    t = make_labels((2, 3, 4, 5), -100)
    p = torch.softmax(make_logits((2, 3, 4, 5), dtype=torch.float32, seed=4), 1)
    w = torch.rand(3)
    grad_x = lambda z: z.detach().clone().requires_grad_()  # noqa: E731
    ops = torch.ops.spatialsoftmax
    return {
        "cross_entropy": (ops.cross_entropy, (grad_x(x), t, w, -100, "mean", 0.1, True)),
        "cross_entropy_none_cl": (ops.cross_entropy, (grad_x(xl), t, None, -100, "none", 0.0, True)),
        "cross_entropy_forward": (ops.cross_entropy, (grad_x(x), p, None, -100, "sum", 0.0, False)),
        "cross_entropy_backward": (
            ops.cross_entropy_backward,
            (x, t, w, torch.tensor(1.0), -100, "mean", 0.0),
        ),
        "kl_div": (ops.kl_div, (grad_x(xl), p, "none", False)),
        "kl_div_backward": (ops.kl_div_backward, (x, p, torch.tensor(1.0), "batchmean", False)),
        "softmax": (ops.softmax, (grad_x(xl),)),
        "softmax_backward": (ops.softmax_backward, (torch.softmax(x, 1), torch.randn_like(x))),
        "log_softmax": (ops.log_softmax, (grad_x(x),)),
        "log_softmax_backward": (ops.log_softmax_backward, (torch.log_softmax(x, 1), x)),
        "spatial_softmax_with_loss": (
            ops.spatial_softmax_with_loss,
            (grad_x(x), make_labels(x.shape, -1).int(), None, 1.0, "cpu"),
        ),
        "spatial_softmax_with_loss_gradient": (
            ops.spatial_softmax_with_loss_gradient,
            (x, t.clamp(min=-1).int(), None, torch.softmax(x, 1), torch.tensor(1.0), 1.0, "cpu"),
        ),
        "spatial_soft_argmax": (ops.spatial_soft_argmax, (grad_x(xl), 1.0, "divide", "normalized")),
        "spatial_soft_argmax_backward": (
            ops.spatial_soft_argmax_backward,
            (x, torch.randn(2, 3, 2), 1.0, "divide", "pixel"),
        ),
    }


@pytest.mark.parametrize("case", sorted(opcheck_cases()))
def test_opcheck(case):
    op, args = opcheck_cases()[case]
    torch.library.opcheck(op, args)


def test_every_operator_is_opchecked():
    registered = {
        name
        for name in dir(torch.ops.spatialsoftmax)
        if isinstance(getattr(torch.ops.spatialsoftmax, name), torch._ops.OpOverloadPacket)
    }
    checked = {op._qualified_op_name.split("::")[1] for op, _ in opcheck_cases().values()}
    assert registered == checked


# --- torch.compile -----------------------------------------------------------------------------


class TinySegmenter(torch.nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, classes, 3, padding=1)
        self.loss = sst.CrossEntropyLoss(ignore_index=255, label_smoothing=0.05)

    def forward(self, image, target):
        logits = self.conv(image)
        return self.loss(logits, target) + 0.1 * sst.kl_div(logits, torch.softmax(logits.detach(), 1))


def test_torch_compile_fullgraph_training_step_matches_eager():
    torch.manual_seed(0)
    model = TinySegmenter()
    image = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 5, (2, 8, 8))
    target[0, :2] = 255
    eager_loss = model(image, target)
    eager_grads = torch.autograd.grad(eager_loss, list(model.parameters()))
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    loss = compiled(image, target)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(loss, eager_loss)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b)
    explanation = torch._dynamo.explain(model)(image, target)
    assert explanation.graph_break_count == 0


# --- memory formats, dtypes, devices, errors ---------------------------------------------------


def test_channels_last_reaches_the_class_last_kernels_without_a_copy():
    x = torch.randn(2, 19, 16, 32).contiguous(memory_format=torch.channels_last)
    assert layout_of(x) == "NHWC"
    view = class_view(x, "NHWC")
    assert ss._view_of(view)["data"] == x.data_ptr() and view.is_contiguous()
    xg = x.requires_grad_()
    sst.cross_entropy(xg, torch.randint(0, 19, (2, 16, 32))).backward()
    assert xg.grad.is_contiguous(memory_format=torch.channels_last)
    assert layout_of(torch.randn(2, 19, 16, 32)) == "NCHW"


# A 16-bit result against PyTorch in float64 on the same 16-bit values: one rounding to the
# type (2^-8 relative for bfloat16, 2^-11 for float16, given twice over), relative to each
# value and to the largest one.
HALF_UNIT = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def assert_close_16(got, want64, dtype):
    assert got.dtype == dtype
    unit = HALF_UNIT[dtype]
    scale = want64.abs().max().item() if want64.numel() else 0.0
    torch.testing.assert_close(got.double(), want64, rtol=2 * unit, atol=2 * unit * scale + 1e-30)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "options",
    [{}, {"label_smoothing": 0.1}, {"reduction": "sum", "weight": True}, {"reduction": "none"}],
    ids=["plain", "smoothing", "sum-weighted", "none"],
)
def test_half_types_read_natively_match_float64(dtype, channels_last, options):
    x = make_logits((2, 5, 6, 7), dtype=dtype, channels_last=channels_last)
    t = make_labels((2, 5, 6, 7), -100)
    kwargs = dict(options)
    weight = torch.rand(5, dtype=torch.float64).add(0.5).to(dtype) if kwargs.pop("weight", False) else None
    xg = x.detach().clone().requires_grad_()
    loss = sst.cross_entropy(xg, t, weight=weight, **kwargs)
    upstream = torch.rand(loss.shape, dtype=torch.float64).to(dtype)
    loss.backward(upstream)
    x64 = x.double().requires_grad_()
    w64 = None if weight is None else weight.double()
    want = F.cross_entropy(x64, t, weight=w64, **kwargs)
    want.backward(upstream.double())
    assert_close_16(loss.detach(), want.detach(), dtype)
    assert_close_16(xg.grad, x64.grad, dtype)
    if channels_last:
        assert xg.grad.movedim(1, -1).is_contiguous()  # written class-last, no copy
    assert_close_16(sst.softmax(x), torch.softmax(x.double(), 1), dtype)
    assert_close_16(sst.log_softmax(x), torch.log_softmax(x.double(), 1), dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_types_kl_div_and_caffe2_match_float64(dtype):
    x = make_logits((2, 4, 3, 5), dtype=dtype)
    target = torch.softmax(make_logits((2, 4, 3, 5), seed=3), 1).to(dtype)
    got = sst.kl_div(x, target, reduction="batchmean")
    want = F.kl_div(torch.log_softmax(x.double(), 1), target.double(), reduction="batchmean")
    assert_close_16(got, want, dtype)
    # The spatial soft-argmax has no 16-bit kernels: a float32 copy, the result in the type.
    keypoints = sst.spatial_soft_argmax(x)
    assert keypoints.dtype == dtype
    assert_close_16(keypoints, sst.spatial_soft_argmax(x.double()), dtype)


def test_non_cpu_tensors_are_refused_not_copied():
    x = torch.empty(2, 3, device="meta")
    with pytest.raises(ValueError, match="cross_entropy: input device: expected cpu.*got meta"):
        sst.cross_entropy(x, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="softmax: input device: expected cpu"):
        sst.softmax(x)


def test_bad_inputs_raise_naming_the_argument_and_change_nothing():
    x = make_logits((2, 3, 4), dtype=torch.float32)
    t = make_labels((2, 3, 4))
    t[1, 3] = 3
    x_before, t_before = x.clone(), t.clone()
    with pytest.raises(ValueError, match=r"targets\[1, 3\].*= 3, expected in \[0, 3\)"):
        sst.cross_entropy(x.requires_grad_(), t)
    with pytest.raises(TypeError, match="class_weight dtype"):
        sst.cross_entropy(x, t.clamp(max=2), torch.ones(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="reduction"):
        sst.cross_entropy(x, t.clamp(max=2), reduction="avg")
    with pytest.raises(ValueError, match="target requires grad"):
        sst.cross_entropy(x, torch.rand(2, 3, 4, requires_grad=True))
    with pytest.raises(TypeError, match="SpatialSoftmaxWithLoss: T dtype: expected int32, got int64"):
        sst.spatial_softmax_with_loss(x[..., None], t[..., None])  # int64 labels: Caffe2 takes int32
    torch.testing.assert_close(x.detach(), x_before, rtol=0, atol=0)
    torch.testing.assert_close(t, t_before, rtol=0, atol=0)


def test_modules():
    x = make_logits((2, 4, 3, 3), dtype=torch.float32)
    t = make_labels((2, 4, 3, 3), -100)
    w = torch.rand(4)
    module = sst.CrossEntropyLoss(w, label_smoothing=0.2)
    torch.testing.assert_close(module(x, t), torch.nn.CrossEntropyLoss(w, label_smoothing=0.2)(x, t))
    assert "weight" in dict(module.named_buffers())
    P, loss = sst.SpatialSoftmaxWithLoss(scale=2.0)(x, t.clamp(min=-1).int())
    torch.testing.assert_close(P, torch.softmax(x, 1))
    keypoints = sst.SpatialSoftArgmax(temperature=0.5)(x)
    torch.testing.assert_close(keypoints, sst.spatial_soft_argmax(x, 0.5))
