"""The installed package: type stubs from nanobind's stubgen beside the extension, docstrings on
every public function, and the modules' public names."""

import importlib.resources
import inspect

import spatialsoftmax as ss
import spatialsoftmax.distributed
import spatialsoftmax.torch as sst


def test_stubs_and_py_typed_are_installed():
    root = importlib.resources.files("spatialsoftmax")
    assert (root / "py.typed").is_file()
    stub = (root / "_core" / "__init__.pyi").read_text()
    assert "def cross_entropy(logits: numpy.typing.ArrayLike, targets: numpy.typing.ArrayLike" in stub
    assert "from . import caffe2 as caffe2" in stub
    assert "def spatial_softmax_with_loss(" in (root / "_core" / "caffe2.pyi").read_text()


def test_every_public_function_has_a_docstring():
    modules = [ss, ss.caffe2, sst, spatialsoftmax.distributed]
    missing = []
    for module in modules:
        for name in dir(module):
            obj = getattr(module, name)
            if name.startswith("_") or not callable(obj) or inspect.ismodule(obj):
                continue
            if not getattr(obj, "__module__", "").startswith("spatialsoftmax"):
                continue  # imported from elsewhere (torch.Tensor)
            if not (getattr(obj, "__doc__", None) or "").strip():
                missing.append(f"{module.__name__}.{name}")
    assert not missing, missing


def test_the_numpy_api_mirrors_the_cpp_functions():
    functions = """softmax log_softmax entropy softmax_backward log_softmax_backward softmax_into
    log_softmax_into entropy_into softmax_backward_into log_softmax_backward_into cross_entropy
    cross_entropy_backward cross_entropy_forward_backward cross_entropy_into
    cross_entropy_backward_into cross_entropy_forward_backward_into nll_loss nll_loss_backward
    nll_loss_into nll_loss_backward_into kl_div kl_div_backward kl_div_into kl_div_backward_into
    spatial_softmax spatial_soft_argmax spatial_soft_argmax_backward spatial_softmax_into
    spatial_soft_argmax_into spatial_soft_argmax_backward_into num_threads set_num_threads
    backend_names""".split()
    assert [f for f in functions if not hasattr(ss, f)] == []
    caffe2 = """spatial_softmax_with_loss spatial_softmax_with_loss_gradient softmax_with_loss
    softmax_with_loss_gradient spatial_softmax_with_loss_into
    spatial_softmax_with_loss_gradient_into softmax_with_loss_into
    softmax_with_loss_gradient_into""".split()
    assert [f for f in caffe2 if not hasattr(ss.caffe2, f)] == []
    assert set(sst.__all__) == {
        "cross_entropy", "kl_div", "softmax", "log_softmax", "spatial_softmax_with_loss",
        "spatial_soft_argmax", "CrossEntropyLoss", "SpatialSoftmaxWithLoss", "SpatialSoftArgmax",
    }
