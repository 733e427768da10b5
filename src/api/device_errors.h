// Errors that a device's checks find (core::DeviceError): the sites that
// let the host name them as a CPU call would, and the raising of a recorded
// one as the library's Error. No operation waits for the device, so a bad
// label in device memory is reported by check_device_errors, or by the
// first call on that device type that starts after the failing kernel has
// finished.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "reference/problems.h"
#include "spatialsoftmax/device.h"
#include "spatialsoftmax/tensor.h"

namespace spatialsoftmax::api {

// A check's site: the operation and argument as the caller named them,
// the argument's shape, and for labels the classes and ignore_index they
// are checked against.
core::ErrorSite error_site(std::string_view op, std::string_view arg, const Shape& shape,
                           std::int64_t classes = 0,
                           std::optional<std::int64_t> ignore_index = std::nullopt);

// Throws the first error a device recorded since the last call, after
// waiting for the context's stream if `wait`; returns if there is none.
void raise_device_error(const ExecutionContext& context, bool wait);

}  // namespace spatialsoftmax::api
