// Umbrella header of the spatialsoftmax C++ API.
#pragma once

#include "spatialsoftmax/caffe2.h"
#include "spatialsoftmax/error.h"
#include "spatialsoftmax/functions.h"
#include "spatialsoftmax/npy.h"
#include "spatialsoftmax/options.h"
#include "spatialsoftmax/shapes.h"
#include "spatialsoftmax/tensor.h"
#include "spatialsoftmax/threads.h"
