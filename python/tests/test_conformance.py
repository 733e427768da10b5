"""The peers' conformance vectors (../shared/conformance, format and tolerances in its README)
through the Python package: every case through the NumPy API, and the PyTorch cases also
through spatialsoftmax.torch."""

import json

import numpy as np
import pytest
import torch

import spatialsoftmax as ss
import spatialsoftmax.torch as sst

from conftest import conformance_dir

LOSS_TOL = (1e-5, 1e-6)  # (rtol, atol) of losses and scalars
MAP_TOL = (1e-5, 1e-5)  # maps, probabilities, log-probabilities, ONNX cases


def cases():
    root = conformance_dir()
    return sorted(p.parent for p in root.glob("*/*/case.json"))


def load(case_dir):
    meta = json.loads((case_dir / "case.json").read_text())
    arrays = {name: np.load(case_dir / f"{name}.npy") for name in meta["arrays"]}
    return meta, arrays


def want(arrays, name):
    return arrays.get(f"{name}_f64", arrays[name])


def close(got, arrays, name, tol, gradient=False):
    expected = want(arrays, name)
    if isinstance(got, torch.Tensor):
        got = got.detach().cpu()
    got = np.asarray(got, dtype=np.float64)
    rtol, atol = tol
    if gradient:  # atol scales with the largest expected magnitude (README)
        atol *= float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True, err_msg=name)


def class_axis(layout, ndim):
    return -1 if layout == "NHWC" and ndim > 2 else 1


def run_numpy(meta, a):
    op, attr = meta["op"], meta["attributes"]
    if op == "SoftmaxCrossEntropyLoss":
        r = ss.cross_entropy(
            a["scores"], a["labels"], class_weight=a.get("weights"),
            ignore_index=attr.get("ignore_index"), reduction=attr["reduction"],
            want_log_prob="log_prob" in a,
        )
        close(r.loss, a, "loss", MAP_TOL)
        if "log_prob" in a:
            close(r.log_prob, a, "log_prob", MAP_TOL)
    elif op == "NegativeLogLikelihoodLoss":
        loss = ss.nll_loss(
            a["input"], a["target"], class_weight=a.get("weight"),
            ignore_index=attr.get("ignore_index"), reduction=attr["reduction"],
        )
        close(loss, a, "loss", MAP_TOL)
    elif op == "cross_entropy":
        layout = attr["layout"] if a["input"].ndim > 2 else "NCHW"
        kwargs = dict(
            layout=layout, class_weight=a.get("weight"), ignore_index=attr.get("ignore_index"),
            reduction=attr["reduction"], label_smoothing=attr["label_smoothing"],
        )
        r = ss.cross_entropy_forward_backward(
            a["input"], a["target"], grad_loss=a.get("grad_output"), **kwargs
        )
        close(r.loss, a, "output", MAP_TOL if attr["reduction"] == "none" else LOSS_TOL)
        close(r.grad_logits, a, "grad_input", LOSS_TOL, gradient=True)
    elif op == "kl_div":
        kwargs = dict(layout=attr["layout"], log_target=attr["log_target"], reduction=attr["reduction"])
        out = ss.kl_div(a["input"], a["target"], **kwargs)
        grad_out = a.get("grad_output", np.array(1.0, np.float32))
        grad = ss.kl_div_backward(a["input"], a["target"], grad_out, **kwargs)
        close(out, a, "output", MAP_TOL if attr["reduction"] == "none" else LOSS_TOL)
        close(grad, a, "grad_input", LOSS_TOL, gradient=True)
    elif op in ("softmax", "log_softmax"):
        forward = getattr(ss, op)
        backward = getattr(ss, f"{op}_backward")
        out = forward(a["input"], attr["layout"])
        close(out, a, "output", MAP_TOL)
        close(backward(out, a["grad_output"], attr["layout"]), a, "grad_input", LOSS_TOL, True)
    elif op == "SpatialSoftmaxWithLoss":
        weight = a.get("weight_tensor")
        r = ss.caffe2.spatial_softmax_with_loss(a["X"], a["T"], weight, scale=attr["scale"])
        close(r.prob, a, "P", MAP_TOL)
        close(r.loss, a, "avg_loss", LOSS_TOL)
        dx = ss.caffe2.spatial_softmax_with_loss_gradient(
            a["X"], a["T"], r.prob, a["d_avg_loss"], weight=weight, scale=attr["scale"]
        )
        close(dx, a, "dX", LOSS_TOL, gradient=True)
    elif op == "spatial_soft_argmax":
        kwargs = dict(
            layout=attr["layout"], temperature=attr["temperature"],
            temperature_mode=attr["temperature_mode"], coordinates=attr["coordinates"],
        )
        r = ss.spatial_soft_argmax(a["input"], **kwargs)
        np.testing.assert_allclose(r.keypoints, want(a, "output"), rtol=0, atol=1e-5)
        back = ss.spatial_soft_argmax_backward(a["input"], grad_keypoints=a["grad_output"], **kwargs)
        close(back.grad_input, a, "grad_input", LOSS_TOL, gradient=True)
    else:
        pytest.fail(f"unknown op {op!r} in {meta['name']}")


def logical(array, layout, device="cpu"):
    """A torch view (N, C, d..) on `device` of an array stored class-last when layout is
    NHWC."""
    t = torch.from_numpy(array).to(device)
    return t.movedim(-1, 1) if layout == "NHWC" and t.dim() > 2 else t


def stored(tensor, layout):
    return tensor.movedim(1, -1) if layout == "NHWC" and tensor.dim() > 2 else tensor


def run_torch(meta, a, device="cpu"):
    op, attr = meta["op"], meta["attributes"]
    layout = attr.get("layout", "NCHW")

    def on(array):
        return torch.from_numpy(array).to(device)

    if op == "cross_entropy":
        x = logical(a["input"], layout, device).requires_grad_()
        target = a["target"]
        target = on(target) if target.dtype.kind == "i" else logical(target, layout, device)
        loss = sst.cross_entropy(
            x, target, None if "weight" not in a else on(a["weight"]),
            ignore_index=attr.get("ignore_index", -100), reduction=attr["reduction"],
            label_smoothing=attr["label_smoothing"],
        )
        upstream = on(a["grad_output"]) if "grad_output" in a else None
        loss.backward(upstream)
        close(loss.detach(), a, "output", MAP_TOL if attr["reduction"] == "none" else LOSS_TOL)
        close(stored(x.grad, layout), a, "grad_input", LOSS_TOL, gradient=True)
    elif op == "kl_div":
        x = logical(a["input"], layout, device).requires_grad_()
        out = sst.kl_div(x, logical(a["target"], layout, device), attr["reduction"], attr["log_target"])
        upstream = logical(a["grad_output"], layout, device) if "grad_output" in a else None
        out.backward(upstream)
        close(stored(out.detach(), layout) if out.dim() else out.detach(), a, "output",
              MAP_TOL if attr["reduction"] == "none" else LOSS_TOL)
        close(stored(x.grad, layout), a, "grad_input", LOSS_TOL, gradient=True)
    elif op in ("softmax", "log_softmax"):
        x = logical(a["input"], layout, device).requires_grad_()
        out = getattr(sst, op)(x, 1)
        out.backward(logical(a["grad_output"], layout, device))
        close(stored(out.detach(), layout), a, "output", MAP_TOL)
        close(stored(x.grad, layout), a, "grad_input", LOSS_TOL, gradient=True)
    elif op == "SpatialSoftmaxWithLoss":
        x = on(a["X"]).requires_grad_()
        weight = on(a["weight_tensor"]) if "weight_tensor" in a else None
        P, loss = sst.spatial_softmax_with_loss(x, on(a["T"]), weight, attr["scale"])
        loss.backward(on(a["d_avg_loss"]))
        close(P.detach(), a, "P", MAP_TOL)
        close(loss.detach(), a, "avg_loss", LOSS_TOL)
        close(x.grad, a, "dX", LOSS_TOL, gradient=True)
    elif op == "spatial_soft_argmax":
        x = logical(a["input"], layout, device).requires_grad_()
        keypoints = sst.spatial_soft_argmax(
            x, attr["temperature"], attr["temperature_mode"], attr["coordinates"]
        )
        keypoints.backward(on(a["grad_output"]))
        np.testing.assert_allclose(keypoints.detach().cpu(), want(a, "output"), rtol=0, atol=1e-5)
        close(stored(x.grad, layout), a, "grad_input", LOSS_TOL, gradient=True)


CASES = cases()


def test_the_conformance_folder_is_there():
    # The vectors are part of the test environment, as for the C++ tests: their absence fails.
    assert len(CASES) >= 160, f"expected the peers' cases under {conformance_dir()}, found {len(CASES)}"


@pytest.mark.parametrize("case_dir", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_case_through_numpy(case_dir):
    meta, arrays = load(case_dir)
    run_numpy(meta, arrays)


TORCH_OPS = {"cross_entropy", "kl_div", "softmax", "log_softmax", "SpatialSoftmaxWithLoss", "spatial_soft_argmax"}


GPU = pytest.param(
    "cuda",
    marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
    ],
)


@pytest.mark.parametrize("device", ["cpu", GPU])
@pytest.mark.parametrize(
    "case_dir",
    [c for c in CASES if json.loads((c / "case.json").read_text())["op"] in TORCH_OPS],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_case_through_torch(case_dir, device):
    meta, arrays = load(case_dir)
    run_torch(meta, arrays, device)
    if device == "cuda":
        ss.check_device_errors()
