// What every built-in operator shares: reading inputs from the workspace,
// buffering outputs until the run succeeds, shape-inference checks, and
// gradient-def construction.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "op/tables.h"
#include "spatialsoftmax/error.h"
#include "spatialsoftmax/op/gradient.h"
#include "spatialsoftmax/op/registry.h"
#include "spatialsoftmax/op/schema.h"
#include "spatialsoftmax/options.h"
#include "spatialsoftmax/shapes.h"

namespace spatialsoftmax::op::detail {

// One run of an operator: its inputs, its arguments, and its outputs, which
// reach the workspace only if the whole run succeeds.
class OpRun {
 public:
  OpRun(const OpSchema& schema, const OperatorDef& def, const Workspace& ws)
      : schema_(schema), def_(def), ws_(ws), args_(schema, def), outputs_(def.outputs.size()) {}

  const Args& args() const { return args_; }
  const OperatorDef& def() const { return def_; }
  bool has_input(std::size_t i) const { return schema_.has_input(def_, i); }
  bool wants_output(std::size_t i) const { return schema_.has_output(def_, i); }
  std::size_t input_count() const { return def_.inputs.size(); }
  const Tensor& input(std::size_t i) const;
  // "input 'labels' (blob 'T')": how errors name input i (as operator_error).
  std::string input_label(std::size_t i) const;
  std::optional<TensorView> optional_input(std::size_t i) const;
  void set_output(std::size_t i, Tensor value);
  void commit(Workspace& ws);

 private:
  const OpSchema& schema_;
  const OperatorDef& def_;
  const Workspace& ws_;
  Args args_;
  std::vector<std::optional<Tensor>> outputs_;
};

using RunFn = std::function<void(OpRun&)>;

// --- errors of the API in the operator's terms ------------------------------
// The API functions an operator calls name their arguments as the API does
// ("cross_entropy: targets[1, 2] ..."), but the operator's caller knows the
// operator's inputs and the net's blobs. Each operator lists, once, which of
// its inputs each API argument is; its run rethrows API errors through
// operator_error with that table.
struct ApiArg {
  std::string api;        // the API's argument name, e.g. "targets"
  std::size_t input = 0;  // the operator input it is
  std::string name = {};  // what to call that input; empty: the schema's name
};
using ApiArgs = std::vector<ApiArg>;
// For operators whose inputs shift with their count (Caffe2's gradients).
using ApiArgsFn = std::function<ApiArgs(const OperatorDef&)>;

// The message of an error raised while running `def`, prefixed with the
// operator once. "<function>: <arg><rest>" becomes
//   "<op>: input '<input name>' (blob '<blob>')<rest>"
// when `api_args` has <arg>, or "<op>: argument '<arg>'<rest>" when <arg>
// is one of the schema's arguments (the API's option names are the
// operators' argument names); any other message is only prefixed.
std::string operator_error(const OperatorDef& def, const OpSchema& schema, const ApiArgs& api_args,
                           const std::string& what);

// Registers the operator `type` (its schema must exist) running `fn` over
// the public API's functions: on the CPU, and on CUDA where the library has
// the CUDA backend (the same `fn`: the functions run where their inputs are,
// and their allocating forms return tensors on that device).
void add_kernel_operator(const std::string& type, RunFn fn, ApiArgs api_args = {});
void add_kernel_operator(const std::string& type, RunFn fn, ApiArgsFn api_args);
// An operator whose `fn` reads and writes elements on the host: on the CPU,
// and on CUDA through host copies of its inputs and outputs.
void add_host_operator(const std::string& type, RunFn fn);

// --- shape inference helpers (throw Error naming the operator) -------------
[[noreturn]] void infer_fail(const OperatorDef& def, const std::string& what);
const TensorSpec& spec(const OperatorDef& def, const TensorSpecs& inputs, std::size_t i);
void expect_float(const OperatorDef& def, const TensorSpec& s, const std::string& name);
void expect_index(const OperatorDef& def, const TensorSpec& s, const std::string& name);
void expect_dtype(const OperatorDef& def, const TensorSpec& s, DType dtype,
                  const std::string& name);
void expect_shape(const OperatorDef& def, const TensorSpec& s, const Shape& shape,
                  const std::string& name, const std::string& what);
// A class-axis input, checked by the API's own rule (class_shape: dtype,
// rank, sizes, C >= 1 unless allow_no_classes); its map_shape is
// (N, d1..dk).
ClassShape class_spec(const OperatorDef& def, const TensorSpec& x, ClassAxis axis,
                      const std::string& name, int min_spatial_rank = 0,
                      bool allow_no_classes = false);
TensorSpec scalar_spec(DType dtype);
// Upstream gradient input i of a gradient op, if given: `dtype`, and `map`'s
// shape when the loss is a map (reduction none), else one element.
void expect_upstream(const OperatorDef& def, const TensorSpecs& inputs, std::size_t i, DType dtype,
                     const std::string& name, const std::optional<Shape>& map);
// Caffe2's d_loss: a float tensor with at least one element (the first is used).
void expect_first_element(const OperatorDef& def, const TensorSpec& s, const std::string& name);

// --- argument helpers ------------------------------------------------------
ClassAxis order_arg(const Args& args);  // "order": NCHW or NHWC
Reduction reduction_arg(const Args& args, bool allow_batchmean);
void check_order(const OperatorDef& def, const Args& args);  // known value

// --- gradient helpers ------------------------------------------------------
// The gradient blob name of a forward blob (Caffe2's GI).
inline std::string grad_name(const std::string& blob) { return blob + "_grad"; }
// Caffe2's text when a needed output gradient is missing.
void require_output_grad(const OperatorDef& forward, const std::vector<std::string>& output_grads,
                         std::size_t i);

}  // namespace spatialsoftmax::op::detail
