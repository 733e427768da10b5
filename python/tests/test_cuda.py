"""spatialsoftmax.torch and the array API on CUDA tensors (pytest marker `cuda`; skipped, with
the reason, where there is no GPU): every operator against the same call on the CPU, both
layouts, a bad label raised by check_device_errors, torch's current stream, and a training
step under torch.compile and captured in a CUDA graph."""

import pytest
import torch
import torch.nn.functional as F

import spatialsoftmax as ss
import spatialsoftmax.torch as sst

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
]

CUDA = torch.device("cuda")


def close(got, want, dtype=torch.float32):
    tol = 2e-5 if dtype == torch.float32 else 1e-11
    torch.testing.assert_close(got.detach().cpu(), want.detach().cpu(), rtol=tol, atol=tol)


def both(make):
    """The same tensors on the CPU and on the GPU (leaves requiring grad where asked)."""
    cpu = make()
    gpu = [t.detach().to(CUDA).requires_grad_(t.requires_grad) if t is not None else None
           for t in cpu]
    return cpu, gpu


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("fused", [True, False])
def test_cross_entropy_matches_the_cpu(channels_last, dtype, reduction, fused):
    g = torch.Generator().manual_seed(1)

    def make():
        x = torch.randn(2, 19, 9, 13, generator=g, dtype=dtype)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        y = torch.randint(0, 19, (2, 9, 13), generator=g)
        y[0, 0, :4] = -100
        w = torch.rand(19, generator=g, dtype=dtype) + 0.5
        return x.requires_grad_(), y, w

    (x, y, w), (xd, yd, wd) = both(make)
    loss = sst.cross_entropy(x, y, w, reduction=reduction, label_smoothing=0.1, fused=fused)
    loss_d = sst.cross_entropy(xd, yd, wd, reduction=reduction, label_smoothing=0.1, fused=fused)
    upstream = torch.rand(loss.shape, generator=g, dtype=dtype) + 0.5
    loss.backward(upstream)
    loss_d.backward(upstream.to(CUDA))
    ss.check_device_errors()
    close(loss_d, loss, dtype)
    close(xd.grad, x.grad, dtype)


def test_probability_targets_kl_softmax_and_soft_argmax_match_the_cpu():
    g = torch.Generator().manual_seed(2)

    def make():
        x = torch.randn(3, 7, 11, 5, generator=g).requires_grad_()
        t = torch.softmax(torch.randn(3, 7, 11, 5, generator=g), 1)
        return x, t

    (x, t), (xd, td) = both(make)
    for f in (
        lambda a, b: sst.cross_entropy(a, b),
        lambda a, b: sst.kl_div(a, b, "batchmean"),
        lambda a, b: (sst.softmax(a, 1) * b).sum(),
        lambda a, b: (sst.log_softmax(a, -1) * b).sum(),
        lambda a, b: sst.spatial_soft_argmax(a).square().sum(),
    ):
        x.grad = xd.grad = None
        out, out_d = f(x, t), f(xd, td)
        out.backward()
        out_d.backward()
        close(out_d, out)
        close(xd.grad, x.grad)


def test_caffe2_operator_matches_the_cpu():
    g = torch.Generator().manual_seed(3)

    def make():
        X = torch.randn(2, 5, 7, 3, generator=g).requires_grad_()
        T = torch.randint(-1, 5, (2, 7, 3), generator=g, dtype=torch.int32)
        W = torch.rand(2, 7, 3, generator=g)
        return X, T, W

    (X, T, W), (Xd, Td, Wd) = both(make)
    for variant in ("cpu", "cuda"):
        X.grad = Xd.grad = None
        P, loss = sst.spatial_softmax_with_loss(X, T, W, 0.5, variant)
        Pd, loss_d = sst.spatial_softmax_with_loss(Xd, Td, Wd, 0.5, variant)
        loss.backward()
        loss_d.backward()
        close(Pd, P)
        close(loss_d, loss)
        close(Xd.grad, X.grad)


def test_a_bad_label_is_raised_by_check_device_errors():
    x = torch.randn(2, 4, 3, 3, device=CUDA)
    y = torch.randint(0, 4, (2, 3, 3), device=CUDA)
    y[1, 2, 0] = 9
    sst.cross_entropy(x, y)  # returns: the device does not wait for the check
    with pytest.raises(ValueError, match=r"targets\[1, 2, 0\] \(flat index 15\) = 9"):
        ss.check_device_errors()
    ss.check_device_errors()  # taken
    loss = sst.cross_entropy(x, y.clamp(0, 3))
    close(loss, F.cross_entropy(x, y.clamp(0, 3)))  # the device still computes


def test_calls_run_on_torchs_current_stream():
    x = torch.randn(4, 19, 64, 64, device=CUDA)
    y = torch.randint(0, 19, (4, 64, 64), device=CUDA)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        loss = sst.cross_entropy(x, y)
    torch.cuda.current_stream().wait_stream(side)
    close(loss, F.cross_entropy(x, y))


def _train_step(model, x, y, optimizer):
    optimizer.zero_grad(set_to_none=False)
    loss = sst.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def test_a_training_step_under_torch_compile_matches_eager():
    torch.manual_seed(4)
    model = torch.nn.Conv2d(3, 19, 1).to(CUDA)
    twin = torch.nn.Conv2d(3, 19, 1).to(CUDA)
    twin.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 16, 16, device=CUDA)
    y = torch.randint(0, 19, (2, 16, 16), device=CUDA)
    opt, opt_twin = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, twin))
    compiled = torch.compile(_train_step, fullgraph=True)
    for _ in range(3):
        a = compiled(model, x, y, opt)
        b = _train_step(twin, x, y, opt_twin)
        close(a, b)
    close(model.weight, twin.weight)


def test_a_training_step_is_captured_in_a_cuda_graph():
    torch.manual_seed(5)
    model = torch.nn.Conv2d(3, 19, 1).to(CUDA)
    x = torch.randn(2, 3, 16, 16, device=CUDA)
    y = torch.randint(0, 19, (2, 16, 16), device=CUDA)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, capturable=False)
    warm = torch.cuda.Stream()
    warm.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(warm):  # warm-up outside the capture, as torch asks
        for _ in range(2):
            _train_step(model, x, y, opt)
    torch.cuda.current_stream().wait_stream(warm)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=False)
    with torch.cuda.graph(graph):
        loss = sst.cross_entropy(model(x), y)
        loss.backward()
    graph.replay()
    torch.cuda.synchronize()
    want = F.cross_entropy(model(x), y)
    close(loss, want)
    ss.check_device_errors()


def test_the_array_api_takes_cuda_tensors():
    x = torch.randn(3, 5, 7, device=CUDA, dtype=torch.float64)
    prob = torch.empty_like(x)
    ss.softmax_into(x, prob)
    close(prob, torch.softmax(x, 1), torch.float64)
    allocated = ss.softmax(x)  # device memory the library owns, handed to torch
    assert allocated.device == x.device
    close(allocated, torch.softmax(x, 1), torch.float64)
