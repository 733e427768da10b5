"""Per-pixel softmax and cross-entropy: Caffe2's SpatialSoftmaxWithLoss and the loss family
around it (softmax, log_softmax, entropy, cross-entropy, NLL, KL, the spatial soft-argmax),
over NumPy arrays or any DLPack producer, without copies.

Every function of the C++ API is here with the same name and options as keywords; the
``*_into`` forms write into arrays the caller allocated; ``spatialsoftmax.caffe2`` holds
Caffe2's operators; ``spatialsoftmax.torch`` the PyTorch operators with autograd.
Errors are ValueError (TypeError for a wrong dtype) with the library's message, which names
the argument.

Device arrays (CUDA, through DLPack) go to the CUDA kernels where the build has them
(``backend_names()``), through the ``*_into`` forms, on the stream ``cuda_stream`` selects.
A bad label in device memory is raised by ``check_device_errors()`` (or by the next device
call once the failing kernel has finished): device calls never wait for the device.
"""

from contextlib import contextmanager
from typing import Iterator

from ._core import *  # noqa: F401,F403
from ._core import _set_cuda_stream, _view_of, caffe2  # noqa: F401

__version__ = "0.1.0"


@contextmanager
def cuda_stream(stream: int) -> Iterator[None]:
    """Calls on this thread inside the block run on `stream` (a cudaStream_t as an integer,
    e.g. ``torch.cuda.current_stream().cuda_stream``; 0 is the default stream)."""
    previous = _set_cuda_stream(int(stream))
    try:
        yield
    finally:
        _set_cuda_stream(previous)
