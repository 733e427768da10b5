// The parts of the extension module, one per header of the C++ API.
#pragma once

#include <nanobind/nanobind.h>

namespace spatialsoftmax::python {

void bind_loss(nanobind::module_& m);     // spatialsoftmax/functions.h: the loss family
void bind_spatial(nanobind::module_& m);  // spatialsoftmax/functions.h: spatial soft-argmax
void bind_caffe2(nanobind::module_& m);   // spatialsoftmax/caffe2.h

}  // namespace spatialsoftmax::python
