"""Per-pixel softmax and cross-entropy: Caffe2's SpatialSoftmaxWithLoss and the loss family
around it (softmax, log_softmax, entropy, cross-entropy, NLL, KL, the spatial soft-argmax),
over NumPy arrays or any DLPack producer, without copies.

Every function of the C++ API is here with the same name and options as keywords; the
``*_into`` forms write into arrays the caller allocated; ``spatialsoftmax.caffe2`` holds
Caffe2's operators; ``spatialsoftmax.torch`` the PyTorch operators with autograd.
Errors are ValueError (TypeError for a wrong dtype) with the library's message, which names
the argument.
"""

from ._core import *  # noqa: F401,F403
from ._core import _view_of, caffe2  # noqa: F401

__version__ = "0.1.0"
