#include "api/outputs.h"
#include "dispatch/backend.h"
#include "spatialsoftmax/device.h"
#include "spatialsoftmax/error.h"
#include "spatialsoftmax/functions.h"

namespace spatialsoftmax {

Tensor copy_to(const TensorView& view, Device device, const ExecutionContext& context) {
  constexpr const char* op = "copy_to";
  if (view.device() == Device::cpu() && device == Device::cpu()) return Tensor::copy_of(view);
  // Strided device views are refused here, as by every function.
  (void)api::common_device(op, {{"view", &view}});
  const Device source = view.device();
  // A strided host view is made dense first.
  Tensor dense_host;
  const void* from = view.data();
  if (source == Device::cpu() && !view.is_contiguous()) {
    dense_host = Tensor::copy_of(view);
    from = dense_host.data();
  }
  const dispatch::Backend& memory =
      dispatch::memory_backend(device == Device::cpu() ? source : device, op);
  Tensor out = device == Device::cpu()
                   ? Tensor::uninitialized(view.dtype(), view.shape())
                   : memory.allocate(view.dtype(), view.shape(), false, device, context);
  const std::size_t bytes =
      static_cast<std::size_t>(checked_numel(view.shape(), op)) * dtype_size(view.dtype());
  memory.copy(out.data(), from, bytes, context);
  return out;
}

std::vector<std::string> backend_names() {
  std::vector<std::string> names;
  for (const dispatch::Backend* b : dispatch::backends()) {
    names.push_back(dispatch::describe(*b));
  }
  return names;
}

}  // namespace spatialsoftmax
