// Uses the installed library: softmax of two classes at one position.
#include <cmath>
#include <cstdio>

#include <spatialsoftmax/spatialsoftmax.h>

int main() {
  const float logits[] = {0.0f, 0.0f};
  const spatialsoftmax::Tensor p =
      spatialsoftmax::softmax(spatialsoftmax::TensorView::of(logits, {1, 2}));
  const bool ok = std::abs(p.at(0) - 0.5) < 1e-7 && std::abs(p.at(1) - 0.5) < 1e-7;
  std::printf("consumer: softmax = [%g, %g] %s\n", p.at(0), p.at(1), ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
