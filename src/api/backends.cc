#include "dispatch/backend.h"
#include "spatialsoftmax/device.h"

namespace spatialsoftmax {

std::vector<std::string> backend_names() {
  std::vector<std::string> names;
  for (const dispatch::Backend* b : dispatch::backends()) {
    names.push_back(dispatch::describe(*b));
  }
  return names;
}

}  // namespace spatialsoftmax
