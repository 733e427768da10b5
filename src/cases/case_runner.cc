#include "cases/case_runner.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <optional>
#include <utility>

#include "spatialsoftmax/caffe2.h"
#include "spatialsoftmax/error.h"
#include "spatialsoftmax/functions.h"
#include "spatialsoftmax/npy.h"
#include "spatialsoftmax/options.h"

namespace spatialsoftmax::cases {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Outputs = std::map<std::string, Tensor>;

// ---------------------------------------------------------------------------
// Errors: one line, starting with the case folder.

std::string one_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  std::replace(text.begin(), text.end(), '\r', ' ');
  return text;
}

[[noreturn]] void fail(const fs::path& dir, const std::string& what) {
  throw Error(one_line(dir.string() + ": " + what));
}

// ---------------------------------------------------------------------------
// The operator table. Each operator names its inputs and attributes (so that
// load_case can check a case before anything runs) and a small function that
// maps the case onto the public API. Issue 4's operator registry will take
// this table's place.

enum class AttrType { kString, kNumber, kInteger, kBool };

struct AttrSpec {
  std::string_view name;
  AttrType type;
};

struct InputSpec {
  std::string_view name;
  bool required;
};

using RunFn = Outputs (*)(const Case&);

struct OpSpec {
  std::string_view name;
  std::vector<InputSpec> inputs;
  std::vector<AttrSpec> attributes;
  RunFn run;
};

const OpSpec* find_op(std::string_view name);

std::string_view type_name(AttrType type) {
  switch (type) {
    case AttrType::kString: return "a string";
    case AttrType::kNumber: return "a number";
    case AttrType::kInteger: return "an integer";
    case AttrType::kBool: return "a boolean";
  }
  return "?";
}

// Integers are accepted where a number is expected (JSON writers drop ".0"),
// but not the other way round, and booleans are never numbers.
bool has_type(const json& value, AttrType type) {
  switch (type) {
    case AttrType::kString: return value.is_string();
    case AttrType::kNumber: return value.is_number();
    case AttrType::kInteger:
      return value.is_number_integer() &&
             !(value.is_number_unsigned() &&
               value.get<std::uint64_t>() >
                   static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()));
    case AttrType::kBool: return value.is_boolean();
  }
  return false;
}

std::string known_attribute_list(const OpSpec& spec) {
  std::string list;
  for (const AttrSpec& a : spec.attributes) {
    list += (list.empty() ? "" : ", ") + std::string(a.name);
  }
  return list.empty() ? "none" : list;
}

const OpSpec& op_spec(const Case& c) {
  const OpSpec* spec = find_op(c.op);
  if (spec == nullptr) {
    std::string list;
    for (const std::string& name : known_ops()) list += (list.empty() ? "" : ", ") + name;
    fail(c.dir, "case.json: unknown op '" + c.op + "' (known: " + list + ")");
  }
  return *spec;
}

void check_attributes(const Case& c, const OpSpec& spec) {
  if (!c.attributes.is_object()) fail(c.dir, "case.json: 'attributes' is not an object");
  for (const auto& [key, value] : c.attributes.items()) {
    const auto it = std::find_if(spec.attributes.begin(), spec.attributes.end(),
                                 [&](const AttrSpec& a) { return a.name == key; });
    if (it == spec.attributes.end()) {
      fail(c.dir, "case.json: attribute '" + key + "' is not known for op " + c.op +
                      " (known: " + known_attribute_list(spec) + ")");
    }
    if (!has_type(value, it->type)) {
      fail(c.dir, "case.json: attribute '" + key + "' must be " +
                      std::string(type_name(it->type)) + ", got " + value.dump());
    }
  }
}

void check_inputs_present(const Case& c, const OpSpec& spec) {
  for (const InputSpec& in : spec.inputs) {
    if (in.required && !c.arrays.contains(std::string(in.name))) {
      fail(c.dir, "op " + c.op + " needs input array '" + std::string(in.name) +
                      "', which the case does not have");
    }
  }
}

// ---------------------------------------------------------------------------
// Reading a case's attributes and inputs inside the per-op functions. The
// attribute types were checked against the op table already.

std::string string_attr(const Case& c, const std::string& name, const std::string& fallback) {
  const auto it = c.attributes.find(name);
  return it == c.attributes.end() ? fallback : it->get<std::string>();
}

double number_attr(const Case& c, const std::string& name, double fallback) {
  const auto it = c.attributes.find(name);
  return it == c.attributes.end() ? fallback : it->get<double>();
}

bool bool_attr(const Case& c, const std::string& name, bool fallback) {
  const auto it = c.attributes.find(name);
  return it == c.attributes.end() ? fallback : it->get<bool>();
}

std::optional<std::int64_t> optional_int_attr(const Case& c, const std::string& name) {
  const auto it = c.attributes.find(name);
  if (it == c.attributes.end()) return std::nullopt;
  return it->get<std::int64_t>();
}

Reduction reduction_attr(const Case& c) {
  return parse_reduction(string_attr(c, "reduction", "mean"), "case.json: attribute reduction");
}

ClassAxis layout_attr(const Case& c) {
  return parse_layout(string_attr(c, "layout", "NCHW"), "case.json: attribute layout");
}

// A string attribute with a fixed set of spellings, mapped to an enum.
template <class E>
E enum_attr(const Case& c, const std::string& name, E fallback,
            std::initializer_list<std::pair<std::string_view, E>> values) {
  const auto it = c.attributes.find(name);
  if (it == c.attributes.end()) return fallback;
  const std::string text = it->get<std::string>();
  std::string list;
  for (const auto& [spelling, value] : values) {
    if (spelling == text) return value;
    list += (list.empty() ? "" : ", ") + std::string(spelling);
  }
  fail(c.dir, "case.json: attribute '" + name + "' = '" + text + "', expected one of " + list);
}

const Tensor& input(const Case& c, const std::string& name) {
  const auto it = c.arrays.find(name);
  if (it == c.arrays.end()) {
    fail(c.dir, "op " + c.op + " needs input array '" + name + "', which the case does not have");
  }
  return it->second;
}

std::optional<TensorView> optional_input(const Case& c, const std::string& name) {
  const auto it = c.arrays.find(name);
  if (it == c.arrays.end()) return std::nullopt;
  return it->second.view();
}

// The upstream gradient: `grad_output` when the case has it; required for
// reduction none, otherwise 1 of the logits' dtype (README: "an upstream
// gradient of 1 for sum/mean").
std::optional<TensorView> upstream_grad(const Case& c, Reduction reduction) {
  std::optional<TensorView> grad = optional_input(c, "grad_output");
  if (!grad && reduction == Reduction::kNone) {
    fail(c.dir, "op " + c.op + " with reduction none needs input array 'grad_output'");
  }
  return grad;
}

// ---------------------------------------------------------------------------
// One function per operator.

Outputs run_onnx_softmax_cross_entropy(const Case& c) {
  CrossEntropyOptions options = CrossEntropyOptions::onnx();
  options.reduction = reduction_attr(c);
  options.ignore_index = optional_int_attr(c, "ignore_index");
  options.class_weight = optional_input(c, "weights");
  // log_prob is the node's optional second output; a case declares it when
  // its node has it.
  options.want_log_prob = c.declared.contains("log_prob");
  CrossEntropyResult result = cross_entropy(input(c, "scores"), input(c, "labels"), options);
  Outputs out;
  out.emplace("loss", std::move(result.loss));
  if (options.want_log_prob) out.emplace("log_prob", std::move(result.log_prob));
  return out;
}

Outputs run_onnx_nll(const Case& c) {
  CrossEntropyOptions options = CrossEntropyOptions::onnx();
  options.reduction = reduction_attr(c);
  options.ignore_index = optional_int_attr(c, "ignore_index");
  options.class_weight = optional_input(c, "weight");
  Outputs out;
  out.emplace("loss", nll_loss(input(c, "input"), input(c, "target"), options));
  return out;
}

// The `targets` attribute must agree with the target's dtype, because the
// library decides by dtype alone.
void check_targets_attr(const Case& c, const Tensor& target) {
  const std::string kind = string_attr(c, "targets", is_floating(target.dtype()) ? "probabilities"
                                                                                : "indices");
  if (kind != "indices" && kind != "probabilities") {
    fail(c.dir, "case.json: attribute 'targets' = '" + kind +
                    "', expected one of indices, probabilities");
  }
  if ((kind == "probabilities") != is_floating(target.dtype())) {
    fail(c.dir, "target.npy: dtype " + std::string(dtype_name(target.dtype())) +
                    " does not fit attribute targets = '" + kind + "'");
  }
}

Outputs run_cross_entropy(const Case& c) {
  CrossEntropyOptions options;  // README: no ignore_index unless the case sets one
  options.class_axis = layout_attr(c);
  options.reduction = reduction_attr(c);
  options.label_smoothing = number_attr(c, "label_smoothing", 0.0);
  options.ignore_index = optional_int_attr(c, "ignore_index");
  options.class_weight = optional_input(c, "weight");
  const Tensor& target = input(c, "target");
  check_targets_attr(c, target);
  CrossEntropyGrads grads;
  grads.loss = upstream_grad(c, options.reduction);
  CrossEntropyResult result =
      cross_entropy_forward_backward(input(c, "input"), target, options, grads);
  Outputs out;
  out.emplace("output", std::move(result.loss));
  out.emplace("grad_input", std::move(result.grad_logits));
  return out;
}

Outputs run_kl_div(const Case& c) {
  KlDivOptions options;
  options.class_axis = layout_attr(c);
  options.log_target = bool_attr(c, "log_target", false);
  options.reduction = reduction_attr(c);
  const Tensor& logits = input(c, "input");
  const Tensor& target = input(c, "target");
  const std::optional<TensorView> given = upstream_grad(c, options.reduction);
  const Tensor one = Tensor::scalar(logits.dtype(), 1.0);
  Outputs out;
  out.emplace("output", kl_div(logits, target, options));
  out.emplace("grad_input", kl_div_backward(logits, target, given ? *given : one.view(), options));
  return out;
}

Outputs run_softmax(const Case& c) {
  const ClassAxis axis = layout_attr(c);
  Tensor prob = softmax(input(c, "input"), axis);
  Tensor grad = softmax_backward(prob, input(c, "grad_output"), axis);
  Outputs out;
  out.emplace("output", std::move(prob));
  out.emplace("grad_input", std::move(grad));
  return out;
}

Outputs run_log_softmax(const Case& c) {
  const ClassAxis axis = layout_attr(c);
  Tensor log_prob = log_softmax(input(c, "input"), axis);
  Tensor grad = log_softmax_backward(log_prob, input(c, "grad_output"), axis);
  Outputs out;
  out.emplace("output", std::move(log_prob));
  out.emplace("grad_input", std::move(grad));
  return out;
}

// Forward, then the gradient operator on (X, T, [weight_tensor], P, d_avg_loss)
// as Caffe2's gradient maker wires it.
Outputs run_spatial_softmax_with_loss(const Case& c) {
  caffe2::SpatialSoftmaxWithLossArgs args;
  args.scale = static_cast<float>(number_attr(c, "scale", 1.0));
  args.order = string_attr(c, "order", "NCHW");
  args.variant = enum_attr(c, "variant", caffe2::Variant::kCpu,
                           {{"cpu", caffe2::Variant::kCpu}, {"cuda", caffe2::Variant::kCuda}});
  const Tensor& X = input(c, "X");
  const Tensor& T = input(c, "T");
  const std::optional<TensorView> weight = optional_input(c, "weight_tensor");
  caffe2::LossOutputs forward = caffe2::spatial_softmax_with_loss(X, T, weight, args);
  Tensor dX = caffe2::spatial_softmax_with_loss_gradient(X, T, weight, forward.prob,
                                                         input(c, "d_avg_loss"), args);
  Outputs out;
  out.emplace("P", std::move(forward.prob));
  out.emplace("avg_loss", std::move(forward.loss));
  out.emplace("dX", std::move(dX));
  return out;
}

SpatialSoftArgmaxOptions soft_argmax_options(const Case& c) {
  SpatialSoftArgmaxOptions options;
  options.channel_axis = layout_attr(c);
  options.temperature = number_attr(c, "temperature", 1.0);
  options.temperature_mode =
      enum_attr(c, "temperature_mode", TemperatureMode::kDivide,
                {{"divide", TemperatureMode::kDivide}, {"multiply", TemperatureMode::kMultiply}});
  options.coordinates =
      enum_attr(c, "coordinates", Coordinates::kNormalized,
                {{"normalized", Coordinates::kNormalized}, {"pixel", Coordinates::kPixel}});
  options.singleton_coordinate = enum_attr(
      c, "singleton_coordinate", SingletonCoordinate::kCenter,
      {{"center", SingletonCoordinate::kCenter}, {"minus_one", SingletonCoordinate::kMinusOne}});
  return options;
}

Outputs run_spatial_soft_argmax(const Case& c) {
  const SpatialSoftArgmaxOptions options = soft_argmax_options(c);
  const Tensor& x = input(c, "input");
  SpatialSoftArgmaxGrads grads;
  grads.keypoints = input(c, "grad_output").view();
  SpatialSoftArgmaxResult forward = spatial_soft_argmax(x, options);
  SpatialSoftArgmaxBackward backward = spatial_soft_argmax_backward(x, grads, options);
  Outputs out;
  out.emplace("output", std::move(forward.keypoints));
  out.emplace("grad_input", std::move(backward.grad_input));
  return out;
}

const std::vector<OpSpec>& op_table() {
  using A = AttrType;
  static const std::vector<OpSpec> table = {
      {"SoftmaxCrossEntropyLoss",
       {{"scores", true}, {"labels", true}, {"weights", false}},
       {{"reduction", A::kString}, {"ignore_index", A::kInteger}},
       run_onnx_softmax_cross_entropy},
      {"NegativeLogLikelihoodLoss",
       {{"input", true}, {"target", true}, {"weight", false}},
       {{"reduction", A::kString}, {"ignore_index", A::kInteger}},
       run_onnx_nll},
      {"cross_entropy",
       {{"input", true}, {"target", true}, {"weight", false}, {"grad_output", false}},
       {{"reduction", A::kString},
        {"label_smoothing", A::kNumber},
        {"targets", A::kString},
        {"layout", A::kString},
        {"ignore_index", A::kInteger}},
       run_cross_entropy},
      {"kl_div",
       {{"input", true}, {"target", true}, {"grad_output", false}},
       {{"reduction", A::kString}, {"log_target", A::kBool}, {"layout", A::kString}},
       run_kl_div},
      {"softmax", {{"input", true}, {"grad_output", true}}, {{"layout", A::kString}},
       run_softmax},
      {"log_softmax", {{"input", true}, {"grad_output", true}}, {{"layout", A::kString}},
       run_log_softmax},
      {"SpatialSoftmaxWithLoss",
       {{"X", true}, {"T", true}, {"weight_tensor", false}, {"d_avg_loss", true}},
       {{"scale", A::kNumber}, {"order", A::kString}, {"variant", A::kString}},
       run_spatial_softmax_with_loss},
      {"spatial_soft_argmax",
       {{"input", true}, {"grad_output", true}},
       {{"temperature", A::kNumber},
        {"temperature_mode", A::kString},
        {"coordinates", A::kString},
        {"layout", A::kString},
        {"singleton_coordinate", A::kString}},
       run_spatial_soft_argmax},
  };
  return table;
}

const OpSpec* find_op(std::string_view name) {
  for (const OpSpec& spec : op_table()) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------
// case.json

json parse_case_json(const fs::path& dir) {
  const fs::path file = dir / "case.json";
  if (!fs::is_directory(dir)) fail(dir, "not a folder");
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(dir, "case.json: cannot be opened");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail(dir, std::string("case.json: not valid JSON: ") + e.what());
  }
}

std::string string_field(const fs::path& dir, const json& doc, const char* key) {
  const auto it = doc.find(key);
  if (it == doc.end()) fail(dir, std::string("case.json: missing '") + key + "'");
  if (!it->is_string()) fail(dir, std::string("case.json: '") + key + "' is not a string");
  return it->get<std::string>();
}

void check_top_level_keys(const fs::path& dir, const json& doc) {
  if (!doc.is_object()) fail(dir, "case.json: not a JSON object");
  static constexpr std::string_view kKnown[] = {"name", "op", "opset", "peer", "attributes",
                                                "arrays"};
  for (const auto& [key, value] : doc.items()) {
    if (std::find(std::begin(kKnown), std::end(kKnown), key) == std::end(kKnown)) {
      fail(dir, "case.json: unknown key '" + key +
                    "' (known: name, op, opset, peer, attributes, arrays)");
    }
  }
  if (doc.contains("opset") && !doc["opset"].is_number_integer()) {
    fail(dir, "case.json: 'opset' is not an integer");
  }
  if (doc.contains("peer") && !doc["peer"].is_string()) {
    fail(dir, "case.json: 'peer' is not a string");
  }
}

DType parse_dtype(const fs::path& dir, const std::string& array, const json& value) {
  for (DType d : {DType::kFloat32, DType::kFloat64, DType::kInt32, DType::kInt64}) {
    if (value.is_string() && value.get<std::string>() == dtype_name(d)) return d;
  }
  fail(dir, "case.json: array '" + array + "': dtype " + value.dump() +
                ", expected one of float32, float64, int32, int64");
}

Shape parse_shape(const fs::path& dir, const std::string& array, const json& value) {
  const auto bad = [&] {
    fail(dir, "case.json: array '" + array + "': shape " + value.dump() +
                  ", expected a list of non-negative integers");
  };
  if (!value.is_array()) bad();
  Shape shape;
  for (const json& d : value) {
    if (!d.is_number_integer() || d.get<std::int64_t>() < 0) bad();
    shape.push_back(d.get<std::int64_t>());
  }
  return shape;
}

std::map<std::string, ArrayDecl> parse_declarations(const fs::path& dir, const json& doc) {
  const auto it = doc.find("arrays");
  if (it == doc.end()) fail(dir, "case.json: missing 'arrays'");
  if (!it->is_object()) fail(dir, "case.json: 'arrays' is not an object");
  std::map<std::string, ArrayDecl> declared;
  for (const auto& [name, decl] : it->items()) {
    if (!decl.is_object() || !decl.contains("shape") || !decl.contains("dtype")) {
      fail(dir, "case.json: array '" + name + "' needs 'shape' and 'dtype'");
    }
    declared[name] = {parse_shape(dir, name, decl["shape"]), parse_dtype(dir, name, decl["dtype"])};
  }
  return declared;
}

Tensor read_declared(const fs::path& dir, const std::string& name, const ArrayDecl& decl) {
  const fs::path file = dir / (name + ".npy");
  if (!fs::exists(file)) fail(dir, name + ".npy: missing (declared in case.json)");
  Tensor t = read_npy(file);  // its errors name the file
  if (t.dtype() != decl.dtype) {
    fail(dir, name + ".npy: dtype " + std::string(dtype_name(t.dtype())) + ", case.json says " +
                  std::string(dtype_name(decl.dtype)));
  }
  if (t.shape() != decl.shape) {
    fail(dir, name + ".npy: shape " + shape_string(t.shape()) + ", case.json says " +
                  shape_string(decl.shape));
  }
  return t;
}

}  // namespace

Case load_case(const fs::path& dir) {
  const json doc = parse_case_json(dir);
  check_top_level_keys(dir, doc);
  Case c;
  c.dir = dir;
  c.name = string_field(dir, doc, "name");
  c.op = string_field(dir, doc, "op");
  if (doc.contains("attributes")) c.attributes = doc["attributes"];
  c.declared = parse_declarations(dir, doc);
  const OpSpec& spec = op_spec(c);
  check_attributes(c, spec);
  for (const InputSpec& in : spec.inputs) {
    const auto decl = c.declared.find(std::string(in.name));
    if (decl != c.declared.end()) {
      c.arrays.emplace(decl->first, read_declared(dir, decl->first, decl->second));
    }
  }
  check_inputs_present(c, spec);
  return c;
}

std::map<std::string, Tensor> run_case(const Case& c) {
  // A Case may be built by hand, so check it as load_case does.
  const OpSpec& spec = op_spec(c);
  check_attributes(c, spec);
  check_inputs_present(c, spec);
  try {
    return spec.run(c);
  } catch (const Error& e) {
    const std::string what = e.what();
    // Our own failures already start with the folder; the library's do not.
    if (what.rfind(c.dir.string() + ": ", 0) == 0) throw;
    fail(c.dir, what);
  }
}

std::vector<std::string> known_ops() {
  std::vector<std::string> names;
  for (const OpSpec& spec : op_table()) names.emplace_back(spec.name);
  std::sort(names.begin(), names.end());
  return names;
}

bool is_input(std::string_view op, std::string_view array) {
  const OpSpec* spec = find_op(op);
  if (spec == nullptr) return false;
  return std::any_of(spec->inputs.begin(), spec->inputs.end(),
                     [&](const InputSpec& in) { return in.name == array; });
}

std::vector<std::string> expected_outputs(const Case& c) {
  static constexpr std::string_view kTwin = "_f64";
  std::vector<std::string> names;
  for (const auto& [name, decl] : c.declared) {
    std::string base = name;
    if (base.size() > kTwin.size() && base.ends_with(kTwin)) {
      base.resize(base.size() - kTwin.size());
    }
    if (is_input(c.op, base)) continue;
    if (std::find(names.begin(), names.end(), base) == names.end()) names.push_back(base);
  }
  return names;
}

std::string reference_name(const Case& c, const std::string& name) {
  const std::string twin = name + "_f64";
  return c.declared.contains(twin) ? twin : name;
}

Tensor read_array(const Case& c, const std::string& name) {
  const auto it = c.declared.find(name);
  if (it == c.declared.end()) fail(c.dir, "case.json: no array '" + name + "' declared");
  return read_declared(c.dir, name, it->second);
}

}  // namespace spatialsoftmax::cases
