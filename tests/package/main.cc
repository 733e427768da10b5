// Uses the installed libraries: softmax of two classes at one position, then
// the same through a net parsed from JSON and run by the operator registry.
#include <spatialsoftmax/op/net_io.h>
#include <spatialsoftmax/op/workspace.h>
#include <spatialsoftmax/spatialsoftmax.h>

#include <cmath>
#include <cstdio>

namespace ss = spatialsoftmax;

int main() {
  const float logits[] = {0.0f, 0.0f};
  const ss::Tensor p = ss::softmax(ss::TensorView::of(logits, {1, 2}));
  bool ok = std::abs(p.at(0) - 0.5) < 1e-7 && std::abs(p.at(1) - 0.5) < 1e-7;
  std::printf("consumer: softmax = [%g, %g] %s\n", p.at(0), p.at(1), ok ? "ok" : "WRONG");

  const ss::op::NetDef net = ss::op::parse_net(
      R"({"name": "n", "op": [{"type": "Softmax", "input": ["x"], "output": ["y"]}]})",
      ss::op::NetFormat::kJson);
  ss::op::Workspace ws;
  ws.set("x", ss::Tensor::copy_of(ss::TensorView::of(logits, {1, 2})));
  ss::op::run_net(net, ws);
  const bool net_ok = ws.get("y").at(0) == p.at(0) && ws.get("y").at(1) == p.at(1);
  std::printf("consumer: Softmax op through a net %s\n", net_ok ? "ok" : "WRONG");
  return ok && net_ok ? 0 : 1;
}
