// The single exception type of the library.
#pragma once

#include <stdexcept>
#include <string>

namespace spatialsoftmax {

// Thrown for every invalid argument. The message names the operation, the
// argument, what was expected and what was given, e.g.
//   cross_entropy: labels[1, 7, 3] (flat index 8451) = 19, expected in [0, 19)
// Errors are raised before any output is written, so a throw never leaves a
// partial result behind.
class Error : public std::invalid_argument {
 public:
  explicit Error(const std::string& message) : std::invalid_argument(message) {}
};

// The Error of a tensor whose dtype is not one the argument takes; a front
// can tell it apart (the Python package raises TypeError for it, ValueError
// for every other Error).
class DTypeError : public Error {
 public:
  using Error::Error;
};

}  // namespace spatialsoftmax
